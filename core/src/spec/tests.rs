//! The one model, as a table: good and bad ids, sizes and specs, each bad one with the words its
//! error must hold.

use super::*;
use pb::constraint::Operator;

fn wasm() -> pb::TaskSpec {
    pb::TaskSpec {
        resources: Some(pb::Resources { cpus: 0.5, mem_bytes: 1 << 20, ..Default::default() }),
        kind: Some(pb::task_spec::Kind::Wasm(pb::WasmTask { module_sha256: "a".repeat(64), ..Default::default() })),
        ..Default::default()
    }
}

fn with(f: impl FnOnce(&mut pb::TaskSpec)) -> pb::TaskSpec {
    let mut spec = wasm();
    f(&mut spec);
    spec
}

fn module(f: impl FnOnce(&mut pb::WasmTask)) -> pb::TaskSpec {
    with(|s| {
        if let Some(pb::task_spec::Kind::Wasm(w)) = s.kind.as_mut() {
            f(w);
        }
    })
}

fn file(path: &str, sha256: &str) -> pb::TaskFile {
    pb::TaskFile { path: path.into(), sha256: sha256.into(), ..Default::default() }
}

fn expect<T: std::fmt::Debug>(got: Result<T, SpecError>, want: Option<&str>, what: &str) {
    match (got, want) {
        (Ok(_), None) => {}
        (Err(err), Some(text)) => assert!(err.to_string().contains(text), "{what}: {err} should mention {text:?}"),
        (got, want) => panic!("{what}: got {got:?}, want an error with {want:?}"),
    }
}

#[test]
fn task_specs() {
    let sha = "a".repeat(64);
    let cases: Vec<(&str, pb::TaskSpec, Option<&str>)> = vec![
        ("a wasm task", wasm(), None),
        ("a framework's task id", with(|s| s.task_id = "web_1-a".into()), None),
        ("a task id with a dot", with(|s| s.task_id = "web.1".into()), Some("task id \"web.1\" is invalid")),
        ("a task id with a slash", with(|s| s.task_id = "../etc".into()), Some("letters, digits")),
        ("a 65-byte task id", with(|s| s.task_id = "t".repeat(65)), Some("1-64")),
        ("no kind", with(|s| s.kind = None), Some("neither a wasm module nor a native command")),
        (
            "inline module",
            module(|w| {
                w.module = b"\0asm".to_vec();
                w.module_sha256.clear();
            }),
            None,
        ),
        (
            "inline module, bad digest",
            module(|w| {
                w.module = b"\0asm".to_vec();
                w.module_sha256 = "x".into();
            }),
            Some("64 lower-case hex"),
        ),
        ("short digest", module(|w| w.module_sha256 = "abc".into()), Some("64 lower-case hex")),
        ("upper-case digest", module(|w| w.module_sha256 = sha.to_uppercase()), Some("64 lower-case hex")),
        (
            "empty native command",
            with(|s| s.kind = Some(pb::task_spec::Kind::Native(pb::NativeTask::default()))),
            Some("empty command"),
        ),
        ("no cpus", with(|s| s.resources = None), Some("cpus")),
        ("NaN cpus", with(|s| s.resources.as_mut().unwrap().cpus = f64::NAN), Some("cpus")),
        ("infinite cpus", with(|s| s.resources.as_mut().unwrap().cpus = f64::INFINITY), Some("cpus")),
        ("half a milli-CPU", with(|s| s.resources.as_mut().unwrap().cpus = 0.0005), Some("milli-CPU")),
        ("no memory", with(|s| s.resources.as_mut().unwrap().mem_bytes = 0), Some("mem must be positive")),
        ("a file", with(|s| s.files.push(file("data/in.txt", &sha))), None),
        ("a file without a path", with(|s| s.files.push(file("", &sha))), Some("no path")),
        ("a file with a bad digest", with(|s| s.files.push(file("in", "zz"))), Some("task file in: sha256")),
        (
            "a dir file with a bad digest",
            with(|s| s.dirs.push(pb::TaskDir { files: vec![file("d/x", "")], ..Default::default() })),
            Some("task file d/x"),
        ),
        (
            "1 MiB of args",
            with(|s| s.args = vec!["x".repeat(limits::MAX_SPEC_BYTES)]),
            Some("the task spec (args 1.0 MiB"),
        ),
        (
            "1 MiB of env",
            with(|s| {
                s.env.insert("BIG".into(), "y".repeat(limits::MAX_SPEC_BYTES));
            }),
            Some("more than the limit of 1048576 bytes"),
        ),
        ("1 MiB of stdin", with(|s| s.stdin = vec![0; limits::MAX_SPEC_BYTES]), Some("stdin 1.0 MiB")),
    ];
    for (what, spec, want) in cases {
        expect(TaskSpec::try_from(spec), want, what);
    }
}

fn job(f: impl FnOnce(&mut pb::JobSpec)) -> pb::JobSpec {
    let mut job = pb::JobSpec { instances: 3, task: Some(wasm()), ..Default::default() };
    f(&mut job);
    job
}

fn constraint(attribute: &str, op: Operator, values: &[&str]) -> pb::Constraint {
    pb::Constraint {
        attribute: attribute.into(),
        operator: op as i32,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

#[test]
fn job_specs() {
    let retry = |attempts, backoff_ms| Some(pb::RetryPolicy { attempts, backoff_ms, max_backoff_ms: 0 });
    let cases: Vec<(&str, pb::JobSpec, Option<&str>)> = vec![
        ("a job", job(|_| {}), None),
        ("no instances", job(|j| j.instances = 0), Some("between 1 and 100000, got 0")),
        ("too many instances", job(|j| j.instances = limits::MAX_INSTANCES + 1), Some("got 100001")),
        ("no task", job(|j| j.task = None), Some("no task")),
        ("a bad task", job(|j| j.task.as_mut().unwrap().kind = None), Some("neither")),
        ("a bad job id", job(|j| j.job_id = "j/1".into()), Some("job id \"j/1\" is invalid")),
        ("100 retries", job(|j| j.retry = retry(100, 1000)), None),
        ("101 retries", job(|j| j.retry = retry(101, 0)), Some("at most 100, got 101")),
        ("a backoff of years", job(|j| j.retry = retry(1, u64::MAX)), Some("24h")),
        ("a constraint", job(|j| j.constraints.push(constraint("zone", Operator::Eq, &["a"]))), None),
        ("no attribute", job(|j| j.constraints.push(constraint("", Operator::Eq, &["a"]))), Some("attribute is empty")),
        (
            "no operator",
            job(|j| j.constraints.push(constraint("zone", Operator::Unspecified, &["a"]))),
            Some("operator missing"),
        ),
        (
            "== with two values",
            job(|j| j.constraints.push(constraint("zone", Operator::Eq, &["a", "b"]))),
            Some("exactly one value"),
        ),
        ("in with none", job(|j| j.constraints.push(constraint("zone", Operator::In, &[]))), Some("one or more")),
        (
            "exists with a value",
            job(|j| j.constraints.push(constraint("zone", Operator::Exists, &["a"]))),
            Some("no values"),
        ),
    ];
    for (what, spec, want) in cases {
        expect(JobSpec::try_from(spec), want, what);
    }
}

#[test]
fn a_client_checks_the_policy_before_uploading() {
    let unuploaded = job(|j| j.task.as_mut().unwrap().kind = Some(pb::task_spec::Kind::Wasm(pb::WasmTask::default())));
    assert!(JobSpec::check_policy(&unuploaded).is_ok());
    assert!(JobSpec::check(&unuploaded).is_err(), "the full check wants the module's digest");
}

#[test]
fn the_leader_takes_modules_by_digest_only() {
    assert!(TaskSpec::try_from(wasm()).unwrap().module_by_digest().is_ok());
    let inline = TaskSpec::try_from(module(|w| w.module = b"\0asm".to_vec())).unwrap();
    assert!(inline.module_by_digest().unwrap_err().to_string().contains("by sha256"));
}

#[test]
fn set_task_id_keeps_the_rule() {
    let mut spec = TaskSpec::try_from(wasm()).unwrap();
    assert!(spec.set_task_id("t-1".into()).is_ok());
    assert_eq!(spec.task_id, "t-1");
    assert!(spec.set_task_id("t.1".into()).is_err());
    assert_eq!(spec.task_id, "t-1", "a refused id leaves the spec as it was");
}

#[test]
fn digests() {
    assert!(is_sha256(&"0123456789abcdef".repeat(4)));
    for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"a".repeat(65)] {
        assert!(!is_sha256(bad), "{bad:?}");
    }
}
