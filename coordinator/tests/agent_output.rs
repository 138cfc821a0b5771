//! Task output sent again by an agent (its executor process replays what a restarted agent had not
//! acknowledged) reaches watchers once, and a chunk past the limit on one chunk is not kept; what
//! a hostile agent sends that breaks the rules is refused where it arrives: a whole coordinator, a
//! scripted agent session over gRPC.

use std::time::{Duration, Instant};

use skiff_coordinator::{Config, Coordinator};
use skiff_proto as pb;
use skiff_proto::agent_message::Msg as AgentMsg;
use skiff_proto::coordinator_message::Msg as CoordMsg;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

fn status(task_id: &str, state: pb::TaskState, update: &str) -> AgentMsg {
    AgentMsg::Status(pb::TaskStatus {
        task_id: task_id.into(),
        state: state as i32,
        agent_id: "scripted".into(),
        update_id: update.into(),
        exit_code: (state == pb::TaskState::Finished).then_some(0),
        ..Default::default()
    })
}

fn output(task_id: &str, stream: pb::OutputStream, offset: u64, data: &str) -> AgentMsg {
    AgentMsg::Output(pb::TaskOutput {
        task_id: task_id.into(),
        stream: stream as i32,
        data: data.as_bytes().to_vec(),
        truncated: false,
        offset: Some(offset),
    })
}

type Operator = pb::operator_service_client::OperatorServiceClient<tonic::transport::Channel>;

/// A coordinator on the embedded registry, its operator client once it leads, and its URL.
async fn coordinator() -> (Operator, String, CancellationToken, tokio::task::JoinHandle<()>, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let config = Config { listen: "127.0.0.1:0".parse().unwrap(), data_dir: data.path().into(), ..Config::default() };
    let coordinator = Coordinator::bind(config).await.expect("bind");
    let url = format!("http://{}", coordinator.local_addr());
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = coordinator.run(stop).await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let operator = loop {
        if let Ok(c) = pb::operator_service_client::OperatorServiceClient::connect(url.clone()).await
            && c.clone().get_leader(pb::GetLeaderRequest {}).await.is_ok_and(|r| r.into_inner().is_leader)
        {
            break c;
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    (operator, url, stop, server, data)
}

fn register(agent_id: &str) -> pb::Register {
    pb::Register {
        agent_id: agent_id.into(),
        hostname: agent_id.into(),
        resources: Some(pb::Resources { cpus: 1.0, mem_bytes: 1 << 30, disk_bytes: 0, wasm_slots: 1 }),
        // It runs native tasks (the scheduler places them nowhere else).
        attributes: [(pb::NATIVE_ATTRIBUTE.to_owned(), "true".to_owned())].into(),
        ..Default::default()
    }
}

/// Opens a session with `register` as its first message.
async fn session(
    url: &str,
    register: pb::Register,
) -> Result<(mpsc::Sender<pb::AgentMessage>, tonic::Streaming<pb::CoordinatorMessage>), tonic::Status> {
    let (tx, rx) = mpsc::channel(64);
    tx.send(pb::AgentMessage { msg: Some(AgentMsg::Register(register)) }).await.unwrap();
    let mut agent = pb::agent_service_client::AgentServiceClient::connect(url.to_owned()).await.unwrap();
    let inbound = agent.session(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, inbound))
}

/// Submits a one-task native job and answers the task id the agent is given.
async fn launched(operator: &mut Operator, inbound: &mut tonic::Streaming<pb::CoordinatorMessage>) -> String {
    let task = pb::TaskSpec {
        name: "echo".into(),
        resources: Some(pb::Resources { cpus: 0.1, mem_bytes: 16 << 20, ..Default::default() }),
        kind: Some(pb::task_spec::Kind::Native(pb::NativeTask { command: "/bin/true".into(), ..Default::default() })),
        ..Default::default()
    };
    let job = pb::JobSpec { name: "echo".into(), instances: 1, task: Some(task), ..Default::default() };
    operator.submit_job(pb::SubmitJobRequest { spec: Some(job) }).await.expect("submit");
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(CoordMsg::Launch(launch)) = inbound.message().await.expect("session").expect("open").msg {
                break launch.spec.unwrap().task_id;
            }
        }
    })
    .await
    .expect("a launch")
}

/// Every event of a finished task: its statuses and its output.
async fn history(operator: &mut Operator, task_id: &str) -> (Vec<pb::TaskStatus>, Vec<pb::TaskOutput>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = operator.get_task(pb::GetTaskRequest { task_id: task_id.into() }).await.unwrap().into_inner();
        if got.status.is_some_and(|s| s.state() == pb::TaskState::Finished) {
            break;
        }
        assert!(Instant::now() < deadline, "the task never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let request = pb::WatchTaskRequest { task_id: task_id.into(), history_only: true, ..Default::default() };
    let mut events = operator.watch_task(request).await.unwrap().into_inner();
    let (mut statuses, mut outputs) = (Vec::new(), Vec::new());
    while let Some(event) = events.message().await.unwrap() {
        match event.event {
            Some(pb::task_event::Event::Status(s)) => statuses.push(s),
            Some(pb::task_event::Event::Output(o)) => outputs.push(o),
            None => {}
        }
    }
    (statuses, outputs)
}

#[tokio::test]
async fn hostile_agent_messages_are_refused_where_they_arrive() {
    let (mut operator, url, stop, server, _data) = coordinator().await;

    // A registration that breaks the rules is refused, naming what is wrong.
    let bad = [
        (pb::Register { agent_id: "-x".into(), ..register("x") }, "agent id"),
        (pb::Register { cached_modules: vec!["nope".into()], ..register("a-1") }, "cached module"),
        (
            pb::Register {
                tasks: vec![pb::TaskStatus {
                    task_id: "t-1".into(),
                    state: 42,
                    update_id: "u".into(),
                    ..Default::default()
                }],
                ..register("a-1")
            },
            "state 42 is not a task state",
        ),
    ];
    for (r, why) in bad {
        let err = session(&url, r).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(why), "{err:?} does not say {why:?}");
    }

    // A session that registered: messages that break the rules are dropped, the session goes on.
    let (tx, mut inbound) = session(&url, register("scripted")).await.expect("a good registration");
    let t = launched(&mut operator, &mut inbound).await;
    let t = t.as_str();
    let long = pb::TaskStatus {
        task_id: t.into(),
        state: pb::TaskState::Running as i32,
        update_id: "u1".into(),
        message: "x".repeat(100_000),
        ..Default::default()
    };
    let script = [
        status(t, pb::TaskState::Pending, "u0"),
        AgentMsg::Status(long),
        AgentMsg::Output(pb::TaskOutput {
            task_id: t.into(),
            stream: 0,
            data: b"nowhere\n".to_vec(),
            ..Default::default()
        }),
        AgentMsg::Output(pb::TaskOutput {
            task_id: "../x".into(),
            stream: 1,
            data: b"bad id\n".to_vec(),
            ..Default::default()
        }),
        output(t, pb::OutputStream::Stdout, 0, "kept\n"),
        status(t, pb::TaskState::Finished, &"u".repeat(65)),
        status(t, pb::TaskState::Finished, "u2"),
    ];
    for msg in script {
        tx.send(pb::AgentMessage { msg: Some(msg) }).await.unwrap();
    }
    let (statuses, outputs) = history(&mut operator, t).await;
    let states: Vec<_> = statuses.iter().map(|s| s.state()).collect();
    use pb::TaskState::{Finished, Pending, Running, Staging};
    assert_eq!(states, [Pending, Staging, Running, Finished], "{statuses:?}");
    let running = &statuses[2];
    assert!(running.message.len() <= skiff_core::report::MAX_STATUS_MESSAGE_BYTES, "{}", running.message.len());
    assert!(running.message.ends_with(skiff_core::report::CUT));
    assert_eq!(statuses[3].update_id, "u2");
    let text: Vec<_> = outputs.iter().map(|o| String::from_utf8_lossy(&o.data).into_owned()).collect();
    assert_eq!(text, ["kept\n"]);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

#[tokio::test]
async fn output_sent_again_reaches_watchers_once() {
    let (mut operator, url, stop, server, _data) = coordinator().await;
    let (tx, mut inbound) = session(&url, register("scripted")).await.expect("registered");
    let task_id = launched(&mut operator, &mut inbound).await;

    // What an executor replaying unacknowledged events after an agent restart sends: chunks
    // again, whole and overlapping, beside a stream of its own.
    use pb::OutputStream::{Stderr, Stdout};
    let t = task_id.as_str();
    let script = [
        status(t, pb::TaskState::Running, "u1"),
        output(t, Stdout, 0, "one\n"),
        output(t, Stdout, 4, "two\n"),
        output(t, Stderr, 0, "warn\n"),
        output(t, Stdout, 0, "one\n"),
        output(t, Stdout, 4, "two\n"),
        output(t, Stderr, 0, "warn\n"),
        // One byte past the limit on a chunk (agents send 64 KiB at most): dropped whole.
        output(t, Stdout, 8, &"x".repeat(skiff_core::limits::MAX_OUTPUT_CHUNK_BYTES + 1)),
        output(t, Stdout, 6, "o\nthree\n"),
        status(t, pb::TaskState::Finished, "u2"),
    ];
    for msg in script {
        tx.send(pb::AgentMessage { msg: Some(msg) }).await.unwrap();
    }
    let (_, outputs) = history(&mut operator, &task_id).await;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    for o in outputs {
        let text = String::from_utf8(o.data.clone()).unwrap();
        match o.stream() {
            Stderr => stderr.push_str(&text),
            _ => stdout.push_str(&text),
        }
    }
    assert_eq!(stdout, "one\ntwo\nthree\n");
    assert_eq!(stderr, "warn\n");
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
