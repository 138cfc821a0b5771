//! Finding the agent's executor process: the one `executor.pid` names if that very process (boot
//! id, pid and start time, never a pid alone) is alive and answers with that pid; else (it is
//! gone, or alive and not answering: then it is killed) a new one, started in a process group of
//! its own. Blocking: the agent attaches before its session starts, and again (on the blocking
//! pool) when a connection is lost.

use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_proto as pb;
use skiff_proto::executor_event::Msg as Ev;
use skiff_proto::executor_request::Msg as Req;
use tracing::{info, warn};

use super::wire;
use crate::config::{Config, ExecutorMode};
use crate::error::{Error, Result};
use crate::sys::ProcessId;

/// Bound of starting an executor process and of its answer to an attach.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to an executor process, with what it said when the agent attached.
#[derive(Debug)]
pub struct Attached {
    pub(super) stream: StdUnixStream,
    /// The process, when this agent started it (to reap it).
    pub(super) child: Option<Child>,
    pub welcome: pb::ExecutorWelcome,
}

/// Attaches to the executor process of the agent whose work directory `config` names, starting one
/// when none is alive. Blocking (the agent does it once, before anything else).
pub fn attach(config: &Config, agent_id: &str) -> Result<Attached> {
    attach_or(config, agent_id, true)
}

/// [`attach`]; without `may_start`, only to a live executor.
pub(super) fn attach_or(config: &Config, agent_id: &str, may_start: bool) -> Result<Attached> {
    let work_dir = &config.work_dir;
    let socket = wire::socket_path(work_dir);
    let pid_path = wire::pid_path(work_dir);
    if let Some(id) = std::fs::read_to_string(&pid_path).ok().and_then(|l| ProcessId::parse(&l)) {
        if id.is_alive() {
            match handshake(&socket, agent_id, id.pid) {
                Ok((stream, welcome)) => {
                    info!(
                        pid = id.pid,
                        running = welcome.running.len(),
                        ended = welcome.ended.len(),
                        "re-attached to the executor process"
                    );
                    return Ok(Attached { stream, child: None, welcome });
                }
                Err(err) => {
                    // Alive and not answering: its tasks cannot be accounted for. Stop it (it is
                    // the very process that wrote the pid file) and start afresh.
                    warn!(pid = id.pid, %err, "the executor process does not answer; killing it");
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(id.pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    let deadline = Instant::now() + START_TIMEOUT;
                    while id.is_alive() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        } else {
            info!(pid = id.pid, "the executor process of the previous run is gone");
        }
    }
    if !may_start {
        return Err(Error::Executor("no executor process is alive".into()));
    }
    let mut child = spawn(config)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        // Until the new process listens, the socket may still be an older executor's.
        match handshake(&socket, agent_id, child.id()) {
            Ok((stream, welcome)) => {
                info!(pid = child.id(), "executor process started");
                return Ok(Attached { stream, child: Some(child), welcome });
            }
            Err(err) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::Executor(format!(
                        "the executor process exited at start ({status}); see {}",
                        work_dir.join("executor.log").display()
                    )));
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Executor(format!(
                        "the executor process did not answer within {START_TIMEOUT:?}: {err}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Starts the executor process: out of the agent's process group (a Ctrl-C or a signal to the
/// agent's group does not reach it), output appended to `executor.log` in the work directory.
fn spawn(config: &Config) -> Result<Child> {
    let ExecutorMode::Process { program, args } = &config.executor else {
        return Err(Error::Executor("this agent runs its tasks in-process".into()));
    };
    let log_path = config.work_dir.join("executor.log");
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(Error::io("open", &log_path))?;
    let err = log.try_clone().map_err(Error::io("open", &log_path))?;
    use std::os::unix::process::CommandExt;
    Command::new(program)
        .args(args)
        .arg("--executor")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(Error::io("start the executor process", program))
}

/// Attaches over `socket` to the executor process `pid` (another process answering is refused).
fn handshake(socket: &Path, agent_id: &str, pid: u32) -> std::io::Result<(StdUnixStream, pb::ExecutorWelcome)> {
    let mut stream = StdUnixStream::connect(socket)?;
    stream.set_read_timeout(Some(START_TIMEOUT))?;
    let attach = pb::ExecutorRequest { msg: Some(Req::Attach(pb::ExecutorAttach { agent_id: agent_id.to_owned() })) };
    wire::write_blocking(&mut stream, &attach)?;
    let hello: pb::ExecutorEvent = wire::read_blocking(&mut stream)?;
    let Some(Ev::Welcome(welcome)) = hello.msg else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the executor did not answer with a welcome"));
    };
    if welcome.pid != pid {
        return Err(std::io::Error::other(format!("process {} answers, not {pid}", welcome.pid)));
    }
    stream.set_read_timeout(None)?;
    Ok((stream, welcome))
}
