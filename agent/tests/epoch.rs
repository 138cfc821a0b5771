//! Leader epochs on a real agent: against a scripted coordinator (a real gRPC server whose every
//! message the test chooses), the agent refuses commands stamped with an epoch lower than one it has
//! accepted, persists the highest epoch, and after a restart refuses to register with an older leader.

use std::time::Duration;

use skiff_agent::{Agent, Config};
use skiff_proto as pb;
use skiff_proto::coordinator_message::Msg as Out;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

type ToAgent = mpsc::UnboundedSender<Result<pb::CoordinatorMessage, Status>>;

struct Session {
    register: pb::Register,
    to_agent: ToAgent,
    from_agent: Streaming<pb::AgentMessage>,
}

impl Session {
    fn send(&self, epoch: u64, msg: Out) {
        self.to_agent.send(Ok(pb::CoordinatorMessage { epoch, msg: Some(msg) })).expect("agent stream open");
    }

    /// The next message from the agent other than heartbeats and usage; `None` when the stream ended.
    async fn next(&mut self) -> Option<pb::agent_message::Msg> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.from_agent.message())
                .await
                .expect("agent said nothing for 10 s");
            match msg {
                Ok(Some(pb::AgentMessage {
                    msg: Some(pb::agent_message::Msg::Heartbeat(_) | pb::agent_message::Msg::Usage(_)),
                })) => {}
                Ok(Some(m)) => return m.msg,
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

#[derive(Clone)]
struct Scripted {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for Scripted {
    type SessionStream = UnboundedReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut from_agent = request.into_inner();
        let Some(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Register(register)) }) =
            from_agent.message().await?
        else {
            return Err(Status::invalid_argument("register first"));
        };
        let (to_agent, rx) = mpsc::unbounded_channel();
        let _ = self.sessions.send(Session { register, to_agent, from_agent });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

fn launch(task_id: &str) -> Out {
    let module = wat::parse_str(r#"(module (func (export "_start")) (memory (export "memory") 1))"#).unwrap();
    Out::Launch(pb::LaunchTask {
        spec: Some(pb::TaskSpec {
            task_id: task_id.into(),
            name: task_id.into(),
            resources: Some(pb::Resources { cpus: 0.5, mem_bytes: 16 << 20, ..Default::default() }),
            kind: Some(pb::task_spec::Kind::Wasm(pb::WasmTask {
                module,
                module_sha256: String::new(),
                module_size: 0,
            })),
            ..Default::default()
        }),
    })
}

fn registered(agent_id: &str) -> Out {
    Out::Registered(pb::Registered { agent_id: agent_id.into(), heartbeat_interval_ms: 1000, replay_output: false })
}

fn start_agent(addr: &str, work_dir: &std::path::Path) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let mut config = Config::new(vec![addr.to_owned()], work_dir.to_path_buf());
    config.wasm_slots = 8;
    config.run_tasks_as = None;
    let agent = Agent::new(config).expect("agent");
    let stop = CancellationToken::new();
    let token = stop.clone();
    (tokio::spawn(async move { agent.run(token).await.expect("agent run") }), stop)
}

async fn next_session(sessions: &mut mpsc::UnboundedReceiver<Session>) -> Session {
    tokio::time::timeout(Duration::from_secs(10), sessions.recv()).await.expect("agent connects").expect("server up")
}

type Server = (String, mpsc::UnboundedReceiver<Session>, CancellationToken, tokio::task::JoinHandle<()>);

/// A scripted coordinator on a free port: its address, the sessions agents open, and its stop.
async fn serve() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, sessions) = mpsc::unbounded_channel();
    let server_stop = CancellationToken::new();
    let serving = tonic::transport::Server::builder()
        .add_service(pb::agent_service_server::AgentServiceServer::new(Scripted { sessions: tx }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), server_stop.clone().cancelled_owned());
    let server = tokio::spawn(async move {
        let _ = serving.await;
    });
    (addr, sessions, server_stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_commands_from_an_older_epoch_and_remembers_across_restarts() {
    let (addr, mut sessions, server_stop, server) = serve().await;
    let work_dir = tempfile::tempdir().unwrap();

    let (agent, stop) = start_agent(&addr, work_dir.path());
    let mut s = next_session(&mut sessions).await;
    assert_eq!(s.register.highest_epoch, 0, "a new agent has seen no epoch");
    let agent_id = s.register.agent_id.clone();
    s.send(5, registered(&agent_id));
    s.send(3, launch("t-from-epoch-3"));
    s.send(5, launch("t-from-epoch-5"));
    // Commands are handled in order: by the time the epoch-5 task has finished, the epoch-3 launch
    // has been refused, so no message may name it.
    loop {
        match s.next().await.expect("agent stream open") {
            pb::agent_message::Msg::Status(status) => {
                assert_eq!(status.task_id, "t-from-epoch-5", "a task from an older epoch ran: {status:?}");
                s.send(
                    5,
                    Out::Ack(pb::AckStatus { task_id: status.task_id.clone(), update_id: status.update_id.clone() }),
                );
                if status.state() == pb::TaskState::Finished {
                    break;
                }
            }
            pb::agent_message::Msg::Output(out) => assert_eq!(out.task_id, "t-from-epoch-5"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let stored = std::fs::read_to_string(work_dir.path().join("highest-epoch")).unwrap();
    assert_eq!(stored.trim(), "5");
    stop.cancel();
    agent.await.unwrap();
    drop(s);

    // Restarted, the agent still knows epoch 5: it closes a session whose leader is at epoch 4...
    let (agent, stop) = start_agent(&addr, work_dir.path());
    let mut s = next_session(&mut sessions).await;
    assert_eq!(s.register.highest_epoch, 5, "the epoch survives a restart");
    s.send(4, registered(&agent_id));
    s.send(4, launch("t-from-epoch-4"));
    assert!(s.next().await.is_none(), "the agent should end a session with an older leader");
    // ...and registers with the next coordinator that leads under epoch 5 or later.
    let s = next_session(&mut sessions).await;
    assert_eq!(s.register.highest_epoch, 5);
    assert!(s.register.tasks.iter().all(|t| t.task_id != "t-from-epoch-4"), "{:?}", s.register.tasks);
    stop.cancel();
    agent.await.unwrap();
    server_stop.cancel();
    let _ = server.await;
}

/// A leader (or whoever holds its certificate) launches specs that break the domain model's
/// rules: the agent checks them as the leader does, answers a bad spec FAILED with the rule it
/// broke, says nothing of a task whose very id is unusable (it names sandboxes and cgroups), and
/// runs the next good launch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_launches_that_break_the_domain_rules() {
    let (addr, mut sessions, server_stop, server) = serve().await;
    let work_dir = tempfile::tempdir().unwrap();
    let (agent, stop) = start_agent(&addr, work_dir.path().join("agent").as_path());
    let mut s = next_session(&mut sessions).await;
    let agent_id = s.register.agent_id.clone();
    s.send(1, registered(&agent_id));
    let mut nan = launch("t-nan-cpus");
    if let Out::Launch(pb::LaunchTask { spec: Some(spec) }) = &mut nan {
        spec.resources.as_mut().unwrap().cpus = f64::NAN;
    }
    s.send(1, nan);
    s.send(1, launch("../escape"));
    s.send(1, launch("t.dotted"));
    s.send(1, launch("t-good"));
    let mut refused = None;
    loop {
        match s.next().await.expect("agent stream open") {
            pb::agent_message::Msg::Status(status) => {
                s.send(
                    1,
                    Out::Ack(pb::AckStatus { task_id: status.task_id.clone(), update_id: status.update_id.clone() }),
                );
                match status.task_id.as_str() {
                    "t-nan-cpus" => refused = Some(status),
                    "t-good" if status.state() == pb::TaskState::Finished => break,
                    "t-good" => {}
                    other => panic!("a launch with an unusable task id was answered or run: {other:?}"),
                }
            }
            pb::agent_message::Msg::Output(out) => assert_eq!(out.task_id, "t-good"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let refused = refused.expect("the launch with NaN cpus was answered before the next launch ran");
    assert_eq!(refused.state(), pb::TaskState::Failed, "{refused:?}");
    assert_eq!(refused.reason(), pb::Reason::LaunchFailed, "{refused:?}");
    assert!(refused.message.contains("the agent refused the spec: cpus must be a number"), "{refused:?}");
    assert!(!work_dir.path().join("escape").exists(), "a task id reached outside the work dir");
    stop.cancel();
    agent.await.unwrap();
    server_stop.cancel();
    let _ = server.await;
}
