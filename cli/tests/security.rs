//! Attacks on the control plane: each test is someone who reaches a coordinator's port and tries
//! to walk in: without a certificate, with one from another CA, an expired one, one of the wrong
//! role; as an impostor agent; without, with an unknown, revoked or expired token, or with one
//! that lacks the capability. Every one is refused with a status naming what is missing, and the
//! fleet goes on serving its real users.

mod fleet;

use std::time::Duration;

use fleet::{Fleet, HaFleet, guest, run_bounded, text};
use skiff_proto as pb;
use skiff_tls::{Identity, Role, Validity};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn hello() -> String {
    guest("hello").display().to_string()
}

/// A channel to `addr` presenting `creds` (none: TLS without a client certificate).
async fn dial(addr: &str, creds: Option<&skiff_tls::Credentials>) -> Result<tonic::transport::Channel, String> {
    let endpoint = match creds {
        Some(creds) => skiff_tls::coordinator_endpoint(addr, Some(creds))?,
        None => {
            let ca = std::fs::read(fleet::pki::pki().ca_path()).unwrap();
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(skiff_tls::COORDINATOR_NAME);
            Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap()
        }
    };
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// Credentials of `identity` from the test CA.
fn creds(identity: &Identity, role: Role) -> skiff_tls::Credentials {
    fleet::pki::pki().files(identity).load(role).unwrap()
}

/// Certificate files for a client certificate the test CA did not issue, or one that expired.
fn foreign_client() -> skiff_tls::TlsFiles {
    let (other, _) = skiff_tls::Ca::create("another CA", Validity::days(1)).unwrap();
    let cert = other.issue(&Identity::client("mallory").unwrap(), &[], Validity::days(1)).unwrap();
    fleet::pki::pki().write("foreign-client", &cert)
}

fn expired_client() -> skiff_tls::TlsFiles {
    let now = time::OffsetDateTime::now_utc();
    let validity = Validity { not_before: now - Duration::from_secs(7200), not_after: now - Duration::from_secs(3600) };
    let cert = fleet::pki::pki().ca().issue(&Identity::client("old").unwrap(), &[], validity).unwrap();
    fleet::pki::pki().write("expired-client", &cert)
}

/// `skiff run hello` against `fleet` with these TLS files and token (instead of the harness's).
fn run_as(fleet: &Fleet, files: &skiff_tls::TlsFiles, token: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(fleet::bin("skiff"));
    cmd.env("SKIFF_CA_CERT", &files.ca).env("SKIFF_CLIENT_CERT", &files.cert).env("SKIFF_CLIENT_KEY", &files.key);
    if let Some(token) = token {
        cmd.env("SKIFF_TOKEN", token);
    }
    cmd.args(["run", "-q", "--coordinators", &fleet.addr, &hello()]);
    run_bounded(cmd, None, Duration::from_secs(60))
}

/// The fleet still runs a task for its real user.
fn serves(fleet: &Fleet) {
    let out = fleet.run(&["-q", &hello(), "--", "after"]);
    assert!(out.status.success(), "the fleet no longer serves: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello, after!\n");
}

#[test]
fn every_hop_refuses_a_missing_foreign_expired_or_wrong_role_certificate() {
    let fleet = Fleet::start();
    let rt = rt();

    // No client certificate: the service says so.
    let status = rt.block_on(async {
        let channel = dial(&fleet.addr, None).await.unwrap();
        pb::operator_service_client::OperatorServiceClient::new(channel).get_leader(pb::GetLeaderRequest {}).await
    });
    let status = status.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().starts_with("no client certificate"), "{status:?}");

    // A certificate from another CA, and an expired one: the handshake is refused.
    // Under TLS 1.3 the client may learn why (the server's alert) or only that the connection
    // closed: either way the CLI names the client certificate.
    for (files, why) in [(foreign_client(), "refused the client certificate"), (expired_client(), "expired")] {
        let out = run_as(&fleet, &files, fleet.token.as_deref());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{stderr}");
        assert!(stderr.contains(why), "{why}: {stderr}");
        assert!(!text(&out.stdout).contains("hello"), "{stderr}");
    }

    // An agent's certificate cannot submit (the CLI refuses to use it, and so does the server).
    let agent = creds(&Identity::agent("a-submitter").unwrap(), Role::Agent);
    let spec = pb::TaskSpec {
        kind: Some(pb::task_spec::Kind::Wasm(pb::WasmTask {
            module: std::fs::read(guest("hello")).unwrap(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let status = rt.block_on(async {
        let channel = dial(&fleet.addr, Some(&agent)).await.unwrap();
        let mut op = pb::operator_service_client::OperatorServiceClient::new(channel);
        op.submit_task(pb::SubmitTaskRequest { spec: Some(spec) }).await
    });
    let status = status.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().starts_with("certificate is for an agent (agent a-submitter), not a client"),
        "{status:?}"
    );
    let out = run_as(&fleet, &fleet::pki::pki().agent("a-submitter"), fleet.token.as_deref());
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the certificate is for an agent (agent a-submitter), not a client"));

    // A client's certificate cannot open an agent session.
    let client = fleet::pki::pki().client_credentials();
    let status = rt.block_on(async {
        let channel = dial(&fleet.addr, Some(&client)).await.unwrap();
        let register = pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Register(pb::Register { agent_id: "test".into(), ..Default::default() })),
        };
        let mut agents = pb::agent_service_client::AgentServiceClient::new(channel);
        agents.session(futures::stream::iter([register]).chain(futures::stream::pending())).await.map(drop)
    });
    let status = status.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().starts_with("certificate is for a client (client test), not an agent"), "{status:?}");

    // A client cannot push an artifact as if it were a replica.
    let status = rt.block_on(async {
        let channel = dial(&fleet.addr, Some(&client)).await.unwrap();
        let header = pb::UploadChunk {
            part: Some(pb::upload_chunk::Part::Header(pb::UploadHeader { sha256: "0".repeat(64), size: 1 })),
        };
        let mut artifacts = pb::artifact_service_client::ArtifactServiceClient::new(channel);
        artifacts.replicate(futures::stream::iter([header])).await
    });
    let status = status.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("not a coordinator: only coordinators replicate"), "{status:?}");

    serves(&fleet);
}

use futures::StreamExt as _;

/// Opens an agent session as `cert_name`'s certificate registering as `agent_id`; returns the
/// coordinator's messages, or its refusal.
async fn session(
    addr: &str,
    cert_name: &str,
    agent_id: &str,
    then: Vec<pb::agent_message::Msg>,
) -> Result<tonic::Streaming<pb::CoordinatorMessage>, tonic::Status> {
    let creds = creds(&Identity::agent(cert_name).unwrap(), Role::Agent);
    let channel = dial(addr, Some(&creds)).await.unwrap();
    let register = pb::Register { agent_id: agent_id.into(), hostname: "rogue".into(), ..Default::default() };
    let messages = std::iter::once(pb::agent_message::Msg::Register(register))
        .chain(then)
        .map(|msg| pb::AgentMessage { msg: Some(msg) });
    let mut agents = pb::agent_service_client::AgentServiceClient::new(channel);
    Ok(agents.session(futures::stream::iter(messages).chain(futures::stream::pending())).await?.into_inner())
}

/// The peak memory a rogue agent reports for a task not placed on it.
const FORGED_PEAK: u64 = 123_456_789;

#[test]
fn an_agent_cannot_pose_as_another_nor_report_on_tasks_placed_elsewhere() {
    let fleet = Fleet::start();
    let rt = rt();
    let spin = guest("spin").display().to_string();
    let (mut victim, _) = fleet::running(&fleet.addr, &["--cpus", "0.5", &spin, "--", "3000"]);
    let agents = fleet::connected_agents(&fleet.addr);
    let [real] = &agents[..] else { panic!("one agent: {agents:?}") };
    let task_id = rt.block_on(async {
        let mut op =
            pb::operator_service_client::OperatorServiceClient::new(fleet::pki::channel(&fleet.addr).await.unwrap());
        let jobs = op.list_jobs(pb::ListJobsRequest {}).await.unwrap().into_inner().jobs;
        jobs[0].instances[0].task_id.clone()
    });

    // Registering under the real agent's name with another agent's certificate is refused.
    let status = rt.block_on(session(&fleet.addr, "rogue", &real.agent_id, vec![])).unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        format!("certificate is for agent rogue, which cannot register as agent {}", real.agent_id)
    );

    // As itself, the rogue agent reports the victim's task finished and sends it output: the
    // leader acknowledges (so it stops) and tells it to kill that task, and believes none of it.
    let forged = vec![
        pb::agent_message::Msg::Output(pb::TaskOutput {
            task_id: task_id.clone(),
            stream: pb::OutputStream::Stdout as i32,
            data: b"forged output\n".to_vec(),
            ..Default::default()
        }),
        pb::agent_message::Msg::Usage(pb::TaskUsage {
            task_id: task_id.clone(),
            usage: Some(pb::Usage { peak_memory_bytes: FORGED_PEAK, ..Default::default() }),
        }),
        pb::agent_message::Msg::Status(pb::TaskStatus {
            task_id: task_id.clone(),
            state: pb::TaskState::Running as i32,
            update_id: "forged-1".into(),
            ..Default::default()
        }),
        pb::agent_message::Msg::Status(pb::TaskStatus {
            task_id: task_id.clone(),
            state: pb::TaskState::Finished as i32,
            exit_code: Some(0),
            update_id: "forged-2".into(),
            ..Default::default()
        }),
    ];
    let told = rt.block_on(async {
        let mut stream = session(&fleet.addr, "rogue", "rogue", forged).await.unwrap();
        let mut told = Vec::new();
        while told.len() < 4 {
            let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
            let msg = next.unwrap_or_else(|_| panic!("told only {told:?}")).unwrap().unwrap();
            told.push(msg.msg.unwrap());
        }
        told
    });
    assert!(matches!(&told[0], pb::coordinator_message::Msg::Registered(_)), "{told:?}");
    assert!(
        told.iter().any(|m| matches!(m, pb::coordinator_message::Msg::Kill(k) if k.task_id == task_id)),
        "{told:?}"
    );
    for forged in ["forged-1", "forged-2"] {
        let acked = told.iter().any(|m| matches!(m, pb::coordinator_message::Msg::Ack(a) if a.update_id == forged));
        assert!(acked, "{told:?}");
    }
    let state = rt.block_on(async {
        let mut op =
            pb::operator_service_client::OperatorServiceClient::new(fleet::pki::channel(&fleet.addr).await.unwrap());
        op.get_task(pb::GetTaskRequest { task_id: task_id.clone() }).await.unwrap().into_inner().status.unwrap()
    });
    assert_eq!(state.state(), pb::TaskState::Running, "{state:?}");
    assert_eq!(state.agent_id, real.agent_id);
    assert_ne!(state.usage.map(|u| u.peak_memory_bytes), Some(FORGED_PEAK), "forged usage applied");

    // The victim's `skiff run` prints what its task printed, and nothing forged.
    let (code, stdout) = fleet::wait_exit(&mut victim, Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(stdout.contains("spun to") && !stdout.contains("forged"), "{stdout}");
}

/// `skiff acl ...` against `fleet` with `token`.
fn acl(fleet: &Fleet, token: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = fleet::skiff_cmd(&fleet.addr);
    cmd.env("SKIFF_TOKEN", token).arg("acl").args(args).args(["--coordinators", &fleet.addr]);
    run_bounded(cmd, None, Duration::from_secs(30))
}

/// The secret (and accessor) `skiff acl token create` printed.
fn created(out: &std::process::Output) -> (String, String) {
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("{stdout}"))
    };
    (field("secret:"), field("accessor_id:"))
}

/// `skiff run ARGS` with the harness's client certificate and `token` (`None`: no token at all).
fn run_with(fleet: &Fleet, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(fleet::bin("skiff"));
    fleet::pki::client_tls_env(&mut cmd);
    if let Some(token) = token {
        cmd.env("SKIFF_TOKEN", token);
    }
    cmd.args(["run", "-q", "--coordinators", &fleet.addr]).args(args);
    run_bounded(cmd, None, Duration::from_secs(60))
}

fn refused(out: &std::process::Output, code: i32, why: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(why), "expected {why:?} in: {stderr}");
    assert!(out.stdout.is_empty(), "nothing ran: {}", text(&out.stdout));
}

#[test]
fn tokens_missing_unknown_revoked_expired_or_short_of_a_capability_are_refused() {
    let fleet = Fleet::start();
    let admin = fleet.token.clone().unwrap();

    // A second bootstrap is refused: the first management token was made.
    let mut again = fleet::skiff_cmd(&fleet.addr);
    again.args(["acl", "bootstrap", "--coordinators", &fleet.addr]);
    let out = run_bounded(again, None, Duration::from_secs(30));
    assert!(!out.status.success() && text(&out.stderr).contains("already bootstrapped"), "{}", text(&out.stderr));

    refused(&run_with(&fleet, None, &[&hello()]), 77, "no ACL token");
    refused(&run_with(&fleet, Some("skiff_not-a-token"), &[&hello()]), 77, "unknown ACL token");

    // A policy for Wasm tasks of the jobs' role only; a token that carries it.
    let out =
        acl(&fleet, &admin, &["policy", "apply", "wasm-dev", "--rule", "default=submit,read", "--rule", "batch=kill"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (dev, dev_accessor) =
        created(&acl(&fleet, &admin, &["token", "create", "--name", "dev", "--policy", "wasm-dev"]));
    let out = run_with(&fleet, Some(&dev), &[&hello(), "--", "dev"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello, dev!\n");
    refused(
        &run_with(&fleet, Some(&dev), &["--native", "--", "/bin/true"]),
        77,
        "lacks submit-native for role default",
    );
    // Nor may it administer ACLs, or see the agents.
    let out = acl(&fleet, &dev, &["token", "list"]);
    refused(&out, 77, "lacks operator");

    // What it submitted records its accessor.
    let rt = rt();
    let submitted_by: Vec<String> = rt.block_on(async {
        let mut op =
            pb::operator_service_client::OperatorServiceClient::new(fleet::pki::channel(&fleet.addr).await.unwrap());
        let jobs = op.list_jobs(pb::ListJobsRequest {}).await.unwrap().into_inner().jobs;
        jobs.into_iter().map(|j| j.spec.unwrap().submitted_by).collect()
    });
    assert!(submitted_by.contains(&dev_accessor), "{submitted_by:?}");

    // A policy that grants another role only.
    acl(&fleet, &admin, &["policy", "apply", "batch-only", "--rule", "batch=submit"]);
    let (batch, _) = created(&acl(&fleet, &admin, &["token", "create", "--name", "batch", "--policy", "batch-only"]));
    refused(&run_with(&fleet, Some(&batch), &[&hello()]), 77, "lacks submit for role default");

    // Revoked: refused from then on.
    let out = acl(&fleet, &admin, &["token", "revoke", &dev_accessor]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    refused(&run_with(&fleet, Some(&dev), &[&hello()]), 77, "was revoked");

    // Expired.
    let (short, _) =
        created(&acl(&fleet, &admin, &["token", "create", "--name", "short", "--policy", "wasm-dev", "--ttl", "1s"]));
    std::thread::sleep(Duration::from_millis(1100));
    refused(&run_with(&fleet, Some(&short), &[&hello()]), 77, "expired");

    // Bad input to the ACL commands is named.
    let out = acl(&fleet, &admin, &["policy", "apply", "p", "--rule", "default=launch"]);
    refused(&out, 64, "unknown capability \"launch\"");
    let out = acl(&fleet, &admin, &["token", "create", "--name", "x", "--policy", "nope"]);
    refused(&out, 64, "no such ACL policy: nope");

    serves(&fleet);
}

#[test]
fn a_framework_acts_only_with_the_token_that_subscribed_it() {
    let fleet = Fleet::start();
    let admin = fleet.token.clone().unwrap();
    acl(&fleet, &admin, &["policy", "apply", "fw", "--rule", "analytics=framework"]);
    let (alice, _) = created(&acl(&fleet, &admin, &["token", "create", "--name", "alice", "--policy", "fw"]));
    let (bob, _) = created(&acl(&fleet, &admin, &["token", "create", "--name", "bob", "--policy", "fw"]));
    let rt = rt();
    rt.block_on(async {
        let client = fleet::pki::pki().client_credentials();
        let scheduler = |token: &str| {
            let access = skiff_cli::access::Access::new(Some(client.clone()), Some(token.to_owned()));
            let addr = fleet.addr.clone();
            async move {
                let channel = skiff_cli::client::leader_channel_with(&access, &[addr]).await.unwrap();
                pb::scheduler_service_client::SchedulerServiceClient::new(channel)
            }
        };
        let info = |role: &str| pb::FrameworkInfo { name: "fw".into(), role: role.into(), ..Default::default() };
        // Not in a role its policy names.
        let status = scheduler(&alice).await.subscribe(pb::SubscribeRequest { framework: Some(info("web")) }).await;
        let status = status.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().ends_with("lacks framework for role web"), "{status:?}");

        let mut events = scheduler(&alice)
            .await
            .subscribe(pb::SubscribeRequest { framework: Some(info("analytics")) })
            .await
            .unwrap()
            .into_inner();
        let first = events.message().await.unwrap().unwrap();
        let Some(pb::scheduler_event::Event::Subscribed(sub)) = first.event else { panic!("{first:?}") };
        let framework_id = sub.framework.unwrap().framework_id;

        // Bob's token may subscribe frameworks of the role, but not call for Alice's, nor take it over.
        let call = pb::SchedulerCall {
            framework_id: framework_id.clone(),
            epoch: first.epoch,
            call: Some(pb::scheduler_call::Call::Reconcile(Default::default())),
        };
        let status = scheduler(&bob).await.call(call.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("was subscribed by another ACL token"), "{status:?}");
        let takeover = pb::FrameworkInfo { framework_id: framework_id.clone(), ..info("analytics") };
        let status = scheduler(&bob).await.subscribe(pb::SubscribeRequest { framework: Some(takeover) }).await;
        assert_eq!(status.unwrap_err().code(), tonic::Code::PermissionDenied);
        // Alice's own call goes through.
        scheduler(&alice).await.call(call).await.unwrap();
    });
}

#[test]
fn a_token_made_before_a_failover_works_after_it() {
    let mut fleet = HaFleet::start(1, 3, 1);
    let admin = fleet.token.clone().unwrap();
    let coordinators = fleet.coordinators_arg();
    let mut cmd = fleet::skiff_cmd(&coordinators);
    cmd.env("SKIFF_TOKEN", &admin).args(["acl", "policy", "apply", "runner", "--rule", "*=submit,read"]);
    cmd.args(["--coordinators", &coordinators]);
    assert!(run_bounded(cmd, None, Duration::from_secs(30)).status.success());
    let mut cmd = fleet::skiff_cmd(&coordinators);
    cmd.env("SKIFF_TOKEN", &admin).args(["acl", "token", "create", "--name", "runner", "--policy", "runner"]);
    cmd.args(["--coordinators", &coordinators]);
    let out = run_bounded(cmd, None, Duration::from_secs(30));
    let runner = text(&out.stdout).lines().find_map(|l| l.strip_prefix("secret:")).unwrap().trim().to_owned();

    let leader = fleet.leader(Duration::from_secs(15));
    fleet.kill_coordinator(leader);
    let new = fleet.leader(Duration::from_secs(20));
    assert_ne!(new, leader);
    let mut cmd = fleet::skiff_cmd(&coordinators);
    cmd.env("SKIFF_TOKEN", &runner).args(["run", "-q", "--coordinators", &coordinators, &hello(), "--", "again"]);
    let out = run_bounded(cmd, None, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello, again!\n");
}

#[test]
fn plaintext_is_refused_off_loopback_and_against_a_tls_coordinator() {
    // A routable address without TLS: refused before anything is bound.
    let out = run_bounded(
        {
            let mut cmd = std::process::Command::new(fleet::bin("skiff-coordinator"));
            cmd.args(["--listen", "192.0.2.1:7070", "--data-dir", "/nonexistent"]);
            cmd
        },
        None,
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("refusing to serve plaintext without authentication on 192.0.2.1:7070"));

    // A plaintext CLI against a TLS coordinator is told what it lacks.
    let fleet = Fleet::start();
    let mut cmd = std::process::Command::new(fleet::bin("skiff"));
    cmd.args(["run", "--coordinators", &fleet.addr, &hello()]);
    let out = run_bounded(cmd, None, Duration::from_secs(30));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("does this coordinator require TLS?"), "{stderr}");

    // TLS credentials must come as a set.
    let mut cmd = std::process::Command::new(fleet::bin("skiff-agent"));
    cmd.args(["--ca-cert", "/x", "--key", "/y", "--work-dir", "/nonexistent"]);
    let out = run_bounded(cmd, None, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("--cert missing"), "{}", text(&out.stderr));
}

/// `skiff tls ...` in `dir`.
fn skiff_tls(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(fleet::bin("skiff"));
    cmd.current_dir(dir).arg("tls").args(args);
    run_bounded(cmd, None, Duration::from_secs(30))
}

#[test]
fn a_fleet_runs_on_certificates_made_by_skiff_tls_and_refuses_another_cas_on_every_hop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [
        &["ca", "create"][..],
        &["cert", "create", "--coordinator", "--host", "127.0.0.1"],
        &["cert", "create", "--agent", "a1"],
        &["cert", "create", "--client", "ops"],
        &["cert", "create", "--etcd", "--host", "127.0.0.1"],
    ] {
        let out = skiff_tls(d, args);
        assert!(out.status.success(), "skiff tls {args:?}: {}", text(&out.stderr));
    }
    let mode = |name: &str| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(d.join(name)).unwrap().permissions()) & 0o777
    };
    assert_eq!((mode("skiff-ca-key.pem"), mode("agent-a1-key.pem"), mode("skiff-ca.pem")), (0o600, 0o600, 0o644));
    // Nothing is overwritten, and an agent's certificate names no hosts.
    let out = skiff_tls(d, &["ca", "create"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("skiff-ca.pem exists already"), "{}", text(&out.stderr));
    let out = skiff_tls(d, &["cert", "create", "--agent", "a2", "--host", "10.0.0.1"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("not in an agent certificate"), "{}", text(&out.stderr));
    let out = skiff_tls(d, &["cert", "create", "--agent", "../etc"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));

    // etcd with client-cert auth, a coordinator and an agent, all on these files.
    let p = |name: &str| d.join(name);
    let tls = fleet::etcd::EtcdTls { ca: p("skiff-ca.pem"), cert: p("etcd.pem"), key: p("etcd-key.pem") };
    let etcd = fleet::etcd::Etcd::start_with(1, Some(tls));
    let data = tempfile::tempdir().unwrap();
    let coordinator = |cert: &str, key: &str| {
        let mut cmd = std::process::Command::new(fleet::bin("skiff-coordinator"));
        cmd.args(["--listen", "127.0.0.1:0", "--etcd", &etcd.urls(), "--data-dir"]).arg(data.path());
        cmd.arg("--ca-cert").arg(p("skiff-ca.pem")).arg("--cert").arg(p("coordinator.pem"));
        cmd.arg("--key").arg(p("coordinator-key.pem")).arg("--etcd-cert").arg(p(cert)).arg("--etcd-key").arg(p(key));
        fleet::spawn_until(cmd, "skiff-coordinator", "listening on", Duration::from_secs(10))
    };
    let (_coordinator, line) = coordinator("coordinator.pem", "coordinator-key.pem");
    let addr = line.rsplit(' ').next().unwrap().to_owned();
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = |cert: &str, key: &str, work: &std::path::Path| {
        let mut cmd = std::process::Command::new(fleet::bin("skiff-agent"));
        cmd.args(["--coordinators", &addr, "--work-dir"]).arg(work);
        cmd.arg("--ca-cert").arg(p("skiff-ca.pem")).arg("--cert").arg(p(cert)).arg("--key").arg(p(key));
        fleet::spawn_until(cmd, "skiff-agent", "started", Duration::from_secs(10)).0
    };
    let _agent = agent("agent-a1.pem", "agent-a1-key.pem", agent_dir.path());
    let client = |cmd: &mut std::process::Command| {
        cmd.env("SKIFF_CA_CERT", p("skiff-ca.pem")).env("SKIFF_CLIENT_CERT", p("client-ops.pem"));
        cmd.env("SKIFF_CLIENT_KEY", p("client-ops-key.pem")).env("SKIFF_COORDINATORS", &addr);
    };
    let mut cmd = std::process::Command::new(fleet::bin("skiff"));
    client(&mut cmd);
    cmd.args(["acl", "bootstrap", "--token-file"]).arg(p("token"));
    let out = run_bounded(cmd, None, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut cmd = std::process::Command::new(fleet::bin("skiff"));
    client(&mut cmd);
    cmd.env("SKIFF_TOKEN_FILE", p("token")).args(["run", "-q", &hello(), "--", "tls"]);
    let out = run_bounded(cmd, None, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello, tls!\n");

    // Certificates of another CA, on each hop: the agent never registers, the coordinator
    // never reaches etcd (so never leads), the client is refused (tested above).
    let other = tempfile::tempdir().unwrap();
    for args in [&["ca", "create"][..], &["cert", "create", "--agent", "a9"], &["cert", "create", "--coordinator"]] {
        assert!(skiff_tls(other.path(), args).status.success());
    }
    for name in ["agent-a9.pem", "agent-a9-key.pem", "coordinator.pem", "coordinator-key.pem"] {
        std::fs::copy(other.path().join(name), p(&format!("other-{name}"))).unwrap();
    }
    let impostor_dir = tempfile::tempdir().unwrap();
    let _impostor = agent("other-agent-a9.pem", "other-agent-a9-key.pem", impostor_dir.path());
    let (_second, line) = coordinator("other-coordinator.pem", "other-coordinator-key.pem");
    let second = line.rsplit(' ').next().unwrap().to_owned();
    std::thread::sleep(Duration::from_secs(3));
    let rt = rt();
    let creds = skiff_tls::TlsFiles { ca: p("skiff-ca.pem"), cert: p("client-ops.pem"), key: p("client-ops-key.pem") }
        .load(Role::Client)
        .unwrap();
    let (leads, agents) = rt.block_on(async {
        let channel = dial(&second, Some(&creds)).await.unwrap();
        let mut op = pb::operator_service_client::OperatorServiceClient::new(channel);
        let leader = op.get_leader(pb::GetLeaderRequest {}).await.unwrap().into_inner();
        let secret = std::fs::read_to_string(p("token")).unwrap();
        let access = skiff_cli::access::Access::new(Some(creds.clone()), Some(secret.trim().to_owned()));
        let mut op = skiff_cli::client::connect_leader_with(&access, std::slice::from_ref(&addr)).await.unwrap();
        let agents = op.list_agents(pb::ListAgentsRequest {}).await.unwrap().into_inner().agents;
        let connected = agents.into_iter().filter(|a| a.connected).map(|a| a.agent_id).collect::<Vec<_>>();
        ((leader.is_leader, leader.leader_address), connected)
    });
    // A follower that reached etcd would know the leader: this one cannot even observe it.
    assert_eq!(leads, (false, String::new()), "a coordinator with another CA's etcd certificate reaches no etcd");
    assert_eq!(agents, ["a1"], "only the real agent a1 is connected, not a9 of another CA");
}
