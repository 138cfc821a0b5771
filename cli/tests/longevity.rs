//! A fleet that lives for years: a registry larger than any one etcd answer still gets a leader;
//! garbage in etcd is set aside, not a reason to step down; finished work is collected after the
//! retention and says so; a watcher that stops reading is cut off; every limit on input is refused
//! with its name.

mod fleet;

use std::time::{Duration, Instant};

use fleet::{Fleet, HaFleet, eventually, guest, run_bounded, skiff_cmd, text};
use prost::Message;
use skiff_proto as pb;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn hello() -> String {
    guest("hello").display().to_string()
}

/// Keys and value bytes under `prefix`, read in pages (a single range would pass etcd-client's own
/// 4 MiB limit, which is the point).
async fn usage(client: &mut etcd_client::Client, prefix: &str) -> (usize, usize) {
    let end = {
        let mut e = prefix.as_bytes().to_vec();
        *e.last_mut().unwrap() += 1;
        e
    };
    let (mut keys, mut bytes) = (0, 0);
    let mut start = prefix.as_bytes().to_vec();
    loop {
        let options = etcd_client::GetOptions::new().with_range(end.clone()).with_limit(20);
        let resp = client.get(start.clone(), Some(options)).await.unwrap();
        for kv in resp.kvs() {
            keys += 1;
            bytes += kv.value().len();
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return (keys, bytes),
        }
    }
}

/// A job file of `instances` hello tasks, each with an env of `env_bytes`.
fn job_file(dir: &std::path::Path, instances: u32, env_bytes: usize) -> std::path::PathBuf {
    let path = dir.join("job.toml");
    let big = "x".repeat(env_bytes);
    let text = format!(
        "name = \"big\"\ninstances = {instances}\n[task]\nwasm = \"{}\"\ncpus = 0.05\nmem = \"16M\"\nenv = {{ BIG = \"{big}\" }}\n",
        hello()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `skiff job run FILE` to completion; answers the job id.
fn run_job(addrs: &str, file: &std::path::Path) -> String {
    let mut cmd = skiff_cmd(addrs);
    cmd.args(["job", "run", "--coordinators", addrs]).arg(file);
    let out = run_bounded(cmd, None, Duration::from_secs(240));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "the job failed: {stderr}");
    let line = stderr.lines().find(|l| l.contains(" submitted (")).expect("a submitted line");
    line.split_whitespace().nth(2).expect("job id").to_owned()
}

fn skiff(addrs: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = skiff_cmd(addrs);
    cmd.args(args).args(["--coordinators", addrs]);
    run_bounded(cmd, None, Duration::from_secs(30))
}

/// The scenario of the report: more finished task records than one etcd answer can carry (and a job
/// whose spec is large: 180 instances of 30 KB, 5 MiB of records, past a transaction's bound as
/// one batch), garbage records beside them, then SIGKILL of the leader. A new leader takes over
/// and runs a task within seconds; the garbage is quarantined, not fatal.
#[test]
fn a_new_leader_takes_over_a_registry_larger_than_one_etcd_answer_and_sets_garbage_aside() {
    let mut fleet = HaFleet::start(1, 3, 1);
    let old = fleet.leader(Duration::from_secs(15));
    let addrs = fleet.coordinators_arg();
    let dir = tempfile::tempdir().unwrap();
    let job_id = run_job(&addrs, &job_file(dir.path(), 180, 30 << 10));

    let url = fleet.etcd.urls();
    let rt = rt();
    rt.block_on(async {
        let mut etcd = fleet::etcd_client(&url).await;
        let (keys, bytes) = usage(&mut etcd, "/skiff/tasks/").await;
        assert!(keys >= 180 && bytes > 5 << 20, "{keys} task records of {bytes} bytes: want more than 5 MiB");
        // Garbage: bytes that are not a record, a record that decodes but names nothing, and one
        // whose id breaks the rules.
        etcd.put("/skiff/tasks/t-garbage", vec![0x0a, 0xff, 0xff, 0xff, 0xff], None).await.unwrap();
        etcd.put("/skiff/jobs/j-empty", pb::JobRecord::default().encode_to_vec(), None).await.unwrap();
        let status = pb::TaskStatus { task_id: "t.dotted".into(), ..Default::default() };
        let dotted = pb::TaskRecord { status: Some(status), spec: Some(Default::default()), ..Default::default() };
        etcd.put("/skiff/tasks/t.dotted", dotted.encode_to_vec(), None).await.unwrap();
    });

    let killed = Instant::now();
    fleet.kill_coordinator(old);
    let out = fleet.run(&[&hello()]);
    let elapsed = killed.elapsed();
    assert!(out.status.success(), "no task ran after the failover: {}", text(&out.stderr));
    assert!(elapsed <= Duration::from_secs(10), "a new leader ran a task only {elapsed:?} after the kill");
    assert_ne!(fleet.leader(Duration::from_secs(5)), old);

    rt.block_on(async {
        let mut etcd = fleet::etcd_client(&url).await;
        for key in ["tasks/t-garbage", "jobs/j-empty", "tasks/t.dotted"] {
            let original = etcd.get(format!("/skiff/{key}"), None).await.unwrap();
            assert!(original.kvs().is_empty(), "{key} is still in place");
            let aside = etcd.get(format!("/skiff/quarantine/{key}"), None).await.unwrap();
            assert_eq!(aside.kvs().len(), 1, "{key} was not quarantined");
        }
        let kept = etcd.get("/skiff/quarantine/tasks/t-garbage", None).await.unwrap();
        assert_eq!(kept.kvs()[0].value(), [0x0a, 0xff, 0xff, 0xff, 0xff], "the bytes are kept as they were");
    });
    // The big job is known to the new leader as it was.
    let out = skiff(&addrs, &["job", "status", &job_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("FINISHED"), "{}", text(&out.stdout));
}

/// Finished work is collected after the retention: its records leave etcd, and what is asked of
/// it afterwards says it was collected, and when.
#[test]
fn finished_jobs_and_tasks_are_collected_after_the_retention_and_say_so() {
    let fleet = HaFleet::start_with(1, 1, 1, &["--gc-after", "2s", "--gc-interval", "200ms"]);
    fleet.leader(Duration::from_secs(15));
    let addrs = fleet.coordinators_arg();
    let dir = tempfile::tempdir().unwrap();
    let job_id = run_job(&addrs, &job_file(dir.path(), 3, 16));
    let out = skiff(&addrs, &["job", "status", &job_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let task_id = stdout.split_whitespace().find(|w| w.starts_with("t-")).expect("a task id").to_owned();

    let url = fleet.etcd.urls();
    let rt = rt();
    let count = |prefix: &'static str| {
        rt.block_on(async {
            let mut etcd = fleet::etcd_client(&url).await;
            let options = etcd_client::GetOptions::new().with_prefix().with_count_only();
            etcd.get(prefix, Some(options)).await.unwrap().count()
        })
    };
    assert_eq!(count("/skiff/tasks/"), 3, "the finished tasks are kept for the retention");
    eventually(Duration::from_secs(15), "the job's records collected", || {
        (count("/skiff/tasks/") == 0 && count("/skiff/jobs/") == 0).then_some(())
    });
    assert_eq!(count("/skiff/collected/"), 4, "a tombstone for the job and for each of its tasks");

    let out = skiff(&addrs, &["job", "status", &job_id]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("job {job_id} was collected at 20")), "{stderr}");
    assert!(stderr.contains("it ended FINISHED at"), "{stderr}");
    let out = skiff(&addrs, &["logs", &task_id]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&format!("task {task_id} was collected at")), "{}", text(&out.stderr));

    // Tombstones go too after a retention of their own: nothing grows with history.
    eventually(Duration::from_secs(15), "tombstones forgotten", || (count("/skiff/collected/") == 0).then_some(()));
}

fn native(script: &str) -> pb::TaskSpec {
    pb::TaskSpec {
        name: "chatty".into(),
        resources: Some(pb::Resources { cpus: 0.2, mem_bytes: 64 << 20, disk_bytes: 64 << 20, wasm_slots: 0 }),
        args: vec!["-c".into(), script.into()],
        kind: Some(pb::task_spec::Kind::Native(pb::NativeTask { command: "sh".into(), host_network: false })),
        ..Default::default()
    }
}

async fn operator(addr: &str) -> pb::operator_service_client::OperatorServiceClient<skiff_cli::client::Channel> {
    let channel = fleet::pki::channel(addr).await.unwrap();
    pb::operator_service_client::OperatorServiceClient::new(channel)
}

/// A client that opens a watch and never reads: the leader does not buffer for it without bound;
/// it is cut off with the reason and can resume where it stopped.
#[test]
fn a_watcher_that_never_reads_is_cut_off_with_a_reason_and_resumes() {
    let fleet = Fleet::start_with(&["--watch-buffer", "16"]);
    rt().block_on(async {
        let mut client = operator(&fleet.addr).await;
        // 900 lines of 1 KB (what an agent keeps of a task's output by default is 1 MiB), one write
        // each with a pause between: many more events than the watcher may lag, and more bytes
        // than the connection's windows and buffers hold.
        let script = "line=$(head -c 1000 /dev/zero | tr '\\0' x); i=0; \
                      while [ $i -lt 900 ]; do echo $line; i=$((i+1)); sleep 0.001; done";
        let task_id = client
            .submit_task(pb::SubmitTaskRequest { spec: Some(native(script)) })
            .await
            .unwrap()
            .into_inner()
            .task_id;
        // The watcher: a connection with small flow-control windows, so that what it does not read
        // stays on the leader's side.
        let access = fleet::pki::access(&fleet.addr);
        let endpoint = skiff_tls::coordinator_endpoint(&fleet.addr, access.tls())
            .unwrap()
            .initial_stream_window_size(16 << 10)
            .initial_connection_window_size(16 << 10);
        let channel = endpoint.connect().await.unwrap();
        let mut watcher =
            pb::operator_service_client::OperatorServiceClient::with_interceptor(channel, access.bearer());
        let request = pb::WatchTaskRequest { task_id: task_id.clone(), ..Default::default() };
        let mut stream = watcher.watch_task(request).await.unwrap().into_inner();
        // Not reading while the task runs.
        let ended = Instant::now() + Duration::from_secs(60);
        loop {
            let get = client.get_task(pb::GetTaskRequest { task_id: task_id.clone() }).await.unwrap().into_inner();
            if get.status.is_some_and(|s| s.state == pb::TaskState::Finished as i32) || Instant::now() > ended {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut received = 0u64;
        let cut = loop {
            match stream.message().await {
                Ok(Some(_)) => received += 1,
                Ok(None) => panic!("the stream ended without saying why after {received} events"),
                Err(status) => break status,
            }
        };
        assert_eq!(cut.code(), tonic::Code::ResourceExhausted, "{cut:?}");
        assert!(cut.message().contains("fell 16 events behind"), "{}", cut.message());
        assert!(received < 900, "all {received} events were buffered for a watcher that did not read");
        // It resumes where it stopped and gets the rest, ending with the task's end.
        let request = pb::WatchTaskRequest { task_id: task_id.clone(), from_event: received, ..Default::default() };
        let mut rest = client.watch_task(request).await.unwrap().into_inner();
        let mut lines = 0;
        let mut last = None;
        while let Some(event) = rest.message().await.unwrap() {
            match event.event {
                Some(pb::task_event::Event::Output(out)) => lines += out.data.iter().filter(|b| **b == b'\n').count(),
                Some(pb::task_event::Event::Status(s)) => last = Some(s.state()),
                None => {}
            }
        }
        assert!(lines > 0, "no output after event {received}");
        assert_eq!(last, Some(pb::TaskState::Finished));
    });
}

/// Each limit on input, crossed: refused at the first edge, with the limit's name and figure.
#[test]
fn every_limit_on_input_is_refused_with_its_name() {
    let fleet = Fleet::start();
    let rt = rt();
    rt.block_on(async {
        let mut client = operator(&fleet.addr).await;
        // A spec past 1 MiB (env), but a message the operator service still decodes.
        let mut spec = native("true");
        spec.env.insert("BIG".into(), "x".repeat((1 << 20) + 1000));
        let err = client.submit_task(pb::SubmitTaskRequest { spec: Some(spec) }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("the task spec (args 6 B, env 1.0 MiB, stdin 0 B) is 1049"),
            "{}",
            err.message()
        );
        assert!(err.message().contains("more than the limit of 1048576 bytes (1.0 MiB)"), "{}", err.message());
        // A message past the operator service's bound is not even decoded.
        let mut spec = native("true");
        spec.stdin = vec![0; 8 << 20];
        let err = client.submit_task(pb::SubmitTaskRequest { spec: Some(spec) }).await.unwrap_err();
        assert!(err.message().contains("message length too large"), "{err:?}");
        // Instances.
        let job = pb::JobSpec { instances: 100_001, task: Some(native("true")), ..Default::default() };
        let err = client.submit_job(pb::SubmitJobRequest { spec: Some(job) }).await.unwrap_err();
        assert!(err.message().contains("between 1 and 100000, got 100001"), "{}", err.message());
        // Specs that break the domain model's rules, each refused at the edge with the rule.
        let inline = pb::TaskSpec {
            resources: native("true").resources,
            kind: Some(pb::task_spec::Kind::Wasm(pb::WasmTask { module: b"\0asm".to_vec(), ..Default::default() })),
            ..Default::default()
        };
        let mut nan = native("true");
        nan.resources.as_mut().unwrap().cpus = f64::NAN;
        let mut dotted = native("true");
        dotted.task_id = "a.b".into();
        for (spec, want) in [
            (inline, "inline module bytes are for agent-local use"),
            (nan, "cpus must be a number of at least 0.001"),
            (dotted, "task id \"a.b\" is invalid"),
            (pb::TaskSpec { resources: native("true").resources, ..Default::default() }, "neither a wasm module"),
        ] {
            let err = client.submit_task(pb::SubmitTaskRequest { spec: Some(spec) }).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains(want), "{want}: {err:?}");
        }
        // The fleet still serves.
        let ok = client.submit_task(pb::SubmitTaskRequest { spec: Some(native("true")) }).await;
        assert!(ok.is_ok(), "{ok:?}");

        // A framework's failover timeout past a week, and a task id the agent could not use.
        let channel = fleet::pki::channel(&fleet.addr).await.unwrap();
        let mut scheduler = pb::scheduler_service_client::SchedulerServiceClient::new(channel);
        let info = pb::FrameworkInfo {
            name: "greedy".into(),
            failover_timeout_ms: 8 * 24 * 3600 * 1000,
            ..Default::default()
        };
        let err = scheduler.subscribe(pb::SubscribeRequest { framework: Some(info) }).await.unwrap_err();
        assert!(
            err.message().contains("failover_timeout_ms is 691200000, more than the limit of 604800000"),
            "{err:?}"
        );
    });
    rt.block_on(async {
        let mut framework = fleet::framework::TestFramework::subscribe(&fleet.addr, "dots", "default").await;
        let offer = loop {
            match framework.next(Duration::from_secs(10)).await {
                Some(pb::scheduler_event::Event::Offers(o)) if !o.offers.is_empty() => break o.offers[0].clone(),
                Some(_) => continue,
                None => panic!("no offer"),
            }
        };
        let mut task = fleet::framework::sleep_task(1, 0.1);
        task.task_id = "a.b".into();
        let err = framework.accept(&offer.offer_id, vec![task]).await.unwrap_err();
        assert!(err.message().contains("task id \"a.b\" is invalid: use 1-64 letters, digits, '_' or '-'"), "{err:?}");
    });
}

/// An agent that opens a session and never registers is not held forever.
#[test]
fn a_session_that_never_registers_is_closed_after_the_handshake_deadline() {
    let fleet = Fleet::start();
    rt().block_on(async {
        // An agent's certificate: it passes the gate, then says nothing.
        let creds = fleet::pki::pki().agent("silent").load(skiff_tls::Role::Agent).unwrap();
        let endpoint = skiff_tls::coordinator_endpoint(&fleet.addr, Some(&creds)).unwrap();
        let mut agents = pb::agent_service_client::AgentServiceClient::new(endpoint.connect().await.unwrap());
        let (_tx, rx) = tokio::sync::mpsc::channel::<pb::AgentMessage>(1);
        let started = Instant::now();
        let answer = agents.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
        let Err(err) = answer else { panic!("a session without a register message was accepted") };
        let waited = started.elapsed();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
        assert!(err.message().contains("no register message within 10s"), "{err:?}");
        assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(30), "{waited:?}");
    });
}

/// A task's output across a SIGKILL of the leader and then of the agent: `skiff run` prints every
/// line once, and `skiff logs` on the newest leader has all of it.
#[test]
fn output_survives_a_leader_kill_and_an_agent_kill_every_byte_once() {
    let mut fleet = HaFleet::start(1, 3, 1);
    let old = fleet.leader(Duration::from_secs(15));
    let addrs = fleet.coordinators_arg();
    let script = "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); sleep 0.03; done";
    let (mut run, _, task_id) = fleet::running_task(&addrs, &["--native", "--", "sh", "-c", script]);
    assert!(task_id.starts_with("t-"), "{task_id:?}");
    std::thread::sleep(Duration::from_millis(1500));
    fleet.kill_coordinator(old);
    fleet.leader(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    fleet.kill_agent(0);
    std::thread::sleep(Duration::from_millis(500));
    fleet.restart_agent(0);
    let (code, stdout) = fleet::wait_exit(&mut run, Duration::from_secs(60));
    let want: String = (0..300).map(|i| format!("line {i}\n")).collect();
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout == want, "skiff run printed:\n{stdout}");
    let out = skiff(&addrs, &["logs", &task_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout) == want, "skiff logs printed:\n{}", text(&out.stdout));
}

/// A replica whose disk was wiped (or that was replaced) gets every recorded blob again from the
/// others (anti-entropy), checked by size and hash as any upload.
#[test]
fn a_wiped_replica_gets_its_blobs_again() {
    let mut fleet = HaFleet::start_with(1, 3, 1, &["--gc-interval", "200ms"]);
    let leader = fleet.leader(Duration::from_secs(15));
    let out = fleet.run(&[&hello()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sha = skiff_cli::artifact::sha256_hex(&std::fs::read(guest("hello")).unwrap());
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let store = fleet.data_dirs[follower].path().join("artifacts");
    eventually(Duration::from_secs(10), "the blob on the follower", || store.join(&sha).exists().then_some(()));
    fleet.kill_coordinator(follower);
    std::fs::remove_dir_all(&store).unwrap();
    fleet.start_coordinator(follower);
    eventually(Duration::from_secs(20), "the blob copied again", || store.join(&sha).exists().then_some(()));
    assert_eq!(std::fs::read(store.join(&sha)).unwrap(), std::fs::read(guest("hello")).unwrap());
}
