//! The executor process: the parent of an agent's tasks, which outlives the agent.
//!
//! The agent starts it (`skiff-agent --executor`, same flags) in a process group of its own and
//! talks to it over a Unix socket in its work directory. Wasm tasks run here in wasmtime, as in an
//! in-process executor (same instantiation path); native tasks are this process's children, so
//! their exit status is collected here whether or not an agent is attached. When the agent dies,
//! tasks keep running and events queue in the [`Journal`]; the next agent attaches, is told what
//! is alive and what ended, and gets every event its predecessor did not acknowledge.
//!
//! The process ends when the agent stops it (after its tasks ended), when no agent has attached for
//! `recovery_timeout` (its tasks are killed: nobody would report them), or when its socket is
//! removed (the work directory is gone) or replaced (an agent that could not reach it started
//! another executor). It writes `executor.pid` (boot id, pid, start time) so an
//! agent never attaches to a process that merely reuses the pid.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use prost::Message;
use skiff_proto as pb;
use skiff_proto::executor_request::Msg as Req;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::journal::Journal;
use super::wire::{self, Conn};
use super::{Executor, setup, staging};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::sys::ProcessId;
use crate::task::{TaskEvent, is_terminal};
use crate::work_dir::replace_file;

/// How often the process checks that its socket still exists and whether its agent is overdue.
const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct ExecutorProcess {
    config: Config,
    agent_id: String,
}

/// Why the process ends.
#[derive(Debug)]
enum End {
    Stopped,
    Shutdown,
    Abandoned(String),
}

impl ExecutorProcess {
    /// The executor of the agent whose work directory `config` names (the agent wrote its id there).
    pub fn new(config: Config) -> Result<Self> {
        let path = config.work_dir.join("agent-id");
        let agent_id = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?.trim().to_owned();
        Ok(Self { config, agent_id })
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let (tx, mut events) = mpsc::unbounded_channel();
        let executor = setup::build(&self.config, &self.agent_id, tx)?;
        let socket = wire::socket_path(&self.config.work_dir);
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(Error::io("listen on", &socket))?;
        restrict(&socket)?;
        // The socket file this process listens on: one replaced by another executor means this
        // one was given up on (its agent could not reach it) and must end.
        let socket_inode = inode(&socket).map_err(Error::io("inspect", &socket))?;
        let pid_path = wire::pid_path(&self.config.work_dir);
        let me = ProcessId::of(std::process::id())
            .ok_or(Error::Corrupt { path: "/proc/self".into(), what: "this process" })?;
        replace_file(&pid_path, me.to_line().as_bytes()).map_err(Error::io("write", &pid_path))?;
        info!(agent_id = %self.agent_id, socket = %socket.display(), pid = me.pid, "executor listening");

        let mut journal = Journal::default();
        let mut conn: Option<Conn> = None;
        let mut alone_since = Some(Instant::now());
        let mut modules = executor.wasm().cached_modules();
        let mut check = tokio::time::interval(CHECK_EVERY);
        let end = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break End::Shutdown,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if conn.is_some() {
                            info!("a new agent attached; the previous connection is dropped");
                        }
                        let mut new = wire::framed(stream);
                        let mut welcome = journal.welcome();
                        welcome.pid = me.pid;
                        welcome.boot_id = me.boot_id.clone();
                        welcome.start_time = me.start_time;
                        welcome.cached_modules = modules.clone();
                        info!(running = welcome.running.len(), ended = welcome.ended.len(), "agent attached");
                        let hello = pb::ExecutorEvent { seq: 0, msg: Some(pb::executor_event::Msg::Welcome(welcome)) };
                        let mut ok = new.feed(hello.encode_to_vec().into()).await.is_ok();
                        for event in journal.unacked() {
                            ok = ok && new.feed(event.encode_to_vec().into()).await.is_ok();
                        }
                        if ok && new.flush().await.is_ok() {
                            conn = Some(new);
                            alone_since = None;
                        }
                    }
                    Err(err) => warn!(%err, "accepting an agent connection failed"),
                },
                Some(first) = events.recv() => {
                    // This event and every one already waiting, numbered, then written at once.
                    let mut batch = Vec::new();
                    let mut ended = false;
                    for event in std::iter::once(first).chain(std::iter::from_fn(|| events.try_recv().ok()).take(255)) {
                        ended |= matches!(&event, TaskEvent::Status(s) if is_terminal(s.state));
                        batch.push(journal.record(event));
                    }
                    if ended {
                        let now = executor.wasm().cached_modules();
                        if now != modules {
                            modules = now;
                            batch.push(pb::ExecutorEvent {
                                seq: 0,
                                msg: Some(pb::executor_event::Msg::Modules(pb::ExecutorModules { sha256: modules.clone() })),
                            });
                        }
                    }
                    send(&mut conn, &mut alone_since, &batch).await;
                }
                request = next(&mut conn) => match request {
                    Some(Ok(bytes)) => match wire::decode::<pb::ExecutorRequest>(&bytes) {
                        Ok(request) => {
                            if let Some(end) = self.handle(request, &executor, &mut journal) {
                                break end;
                            }
                        }
                        Err(err) => warn!(%err, "ignoring a request"),
                    },
                    Some(Err(err)) => {
                        warn!(%err, "agent connection failed");
                        conn = None;
                        alone_since = Some(Instant::now());
                    }
                    None => {
                        info!(running = journal.alive(), "agent detached; tasks keep running");
                        conn = None;
                        alone_since = Some(Instant::now());
                    }
                },
                _ = check.tick() => {
                    match inode(&socket) {
                        Err(_) => break End::Abandoned(format!("{} was removed", socket.display())),
                        Ok(now) if now != socket_inode => {
                            break End::Abandoned(format!("another executor listens on {}", socket.display()));
                        }
                        Ok(_) => {}
                    }
                    if let Some(since) = alone_since && since.elapsed() >= self.config.recovery_timeout {
                        break End::Abandoned(format!("no agent attached for {:?}", self.config.recovery_timeout));
                    }
                }
            }
        };
        match &end {
            End::Stopped => info!("stopped by the agent"),
            End::Shutdown => info!(running = journal.alive(), "shutting down; killing tasks"),
            End::Abandoned(why) => warn!(%why, running = journal.alive(), "abandoned; killing tasks"),
        }
        executor.shutdown(Duration::from_secs(5)).await;
        // The ends of the tasks just killed, to an agent still attached (one stopping with us).
        let ends: Vec<pb::ExecutorEvent> =
            std::iter::from_fn(|| events.try_recv().ok()).map(|event| journal.record(event)).collect();
        send(&mut conn, &mut alone_since, &ends).await;
        // Another executor may own these by now (a new agent started one after we were abandoned).
        if std::fs::read_to_string(&pid_path).is_ok_and(|line| line.trim() == me.to_line()) {
            let _ = std::fs::remove_file(&pid_path);
            let _ = std::fs::remove_file(&socket);
        }
        Ok(())
    }

    /// Handles one request; returns `Some` when the process must end.
    fn handle(&self, request: pb::ExecutorRequest, executor: &Executor, journal: &mut Journal) -> Option<End> {
        match request.msg? {
            Req::Attach(attach) if attach.agent_id != self.agent_id => {
                warn!(agent_id = %attach.agent_id, mine = %self.agent_id, "an agent with another id attached");
            }
            Req::Attach(_) => {}
            Req::Launch(launch) => {
                let spec = launch.spec?;
                journal.launched(staging(&spec.task_id, &self.agent_id));
                executor.launch(spec);
            }
            Req::Kill(kill) => {
                if !executor.kill(&kill.task_id) {
                    debug!(task_id = %kill.task_id, "kill for a task not running here");
                }
            }
            Req::KillAll(_) => {
                executor.kill_all();
            }
            Req::Ack(seq) => journal.ack(seq),
            Req::Coordinator(address) => {
                if let Some(artifacts) = executor.artifacts() {
                    artifacts.set_current(&address);
                }
            }
            Req::Stop(_) => return Some(End::Stopped),
        }
        None
    }
}

/// Sends `batch` to the attached agent, if any, in one write (a failed send detaches it: the
/// events stay in the journal for the next one).
async fn send(conn: &mut Option<Conn>, alone_since: &mut Option<Instant>, batch: &[pb::ExecutorEvent]) {
    let Some(c) = conn else { return };
    let mut sent = Ok(());
    for event in batch {
        sent = c.feed(event.encode_to_vec().into()).await;
        if sent.is_err() {
            break;
        }
    }
    if sent.is_ok() {
        sent = c.flush().await;
    }
    if let Err(err) = sent {
        warn!(%err, "agent connection failed");
        *conn = None;
        *alone_since = Some(Instant::now());
    }
}

/// The next request of the attached agent (never, without one).
async fn next(conn: &mut Option<Conn>) -> Option<std::io::Result<bytes::BytesMut>> {
    match conn {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

fn inode(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).map(|m| m.ino())
}

/// Only the agent's user may connect.
fn restrict(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(Error::io("restrict", path))
}
