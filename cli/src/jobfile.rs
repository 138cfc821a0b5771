//! The job file of `skiff job run`: TOML, read into a [`JobFile`], then made a [`pb::JobSpec`]
//! once its module is in the artifact store.
//!
//! ```toml
//! name = "primes"
//! instances = 4                 # copies of the task (default 1)
//! priority = 10                 # higher first under --queue-order priority (default 0)
//! expected_duration = "30s"     # one task's expected run time, for --queue-order sjf / srtf
//!
//! [task]
//! wasm = "primes.wasm"          # a Wasm module, relative to the job file ...
//! # native = ["/bin/sh", "-c", "echo $SKIFF_INSTANCE"]   # ... or a native command and its arguments
//! args = ["{instance}0000"]     # `{instance}` becomes the instance index (0-based)
//! env = { MODE = "fast" }       # plus SKIFF_JOB_ID, SKIFF_INSTANCE, SKIFF_INSTANCES
//! cpus = 0.25                   # default 0.1
//! mem = "64M"                   # default 64M
//! disk = "256M"                 # default 256M: the sandbox's size
//! timeout = "30s"               # optional wall-clock limit
//! fuel = 1000000                # optional Wasm fuel budget
//!
//! [retry]                       # failed or lost instances run again
//! attempts = 2                  # at most this many more times (default 0)
//! backoff = "1s"                # first wait, doubling (default 1s)
//! max_backoff = "30s"           # cap (default 60s)
//!
//! [[constraint]]                # every constraint must hold on the agent (`--attribute zone=a`)
//! attribute = "zone"
//! operator = "=="               # ==, !=, in, not_in, exists
//! value = "a"                   # or values = ["a", "b"] for in / not_in
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use skiff_proto as pb;
use skiff_proto::constraint::Operator;

use crate::exit::CliError;
use crate::units;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub name: Option<String>,
    #[serde(default = "one")]
    pub instances: u32,
    #[serde(default)]
    pub priority: i32,
    pub expected_duration: Option<String>,
    pub task: TaskSection,
    pub retry: Option<RetrySection>,
    #[serde(default)]
    pub constraint: Vec<ConstraintSection>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    pub wasm: Option<PathBuf>,
    pub native: Option<Vec<String>>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cpus: Option<f64>,
    pub mem: Option<String>,
    pub disk: Option<String>,
    pub timeout: Option<String>,
    pub fuel: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    #[serde(default)]
    pub attempts: u32,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintSection {
    pub attribute: String,
    pub operator: String,
    pub value: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
}

/// What the job runs, before its module is stored.
#[derive(Debug)]
pub enum Program {
    /// Path of the module (resolved against the job file's directory).
    Wasm(PathBuf),
    Native {
        command: String,
        args: Vec<String>,
    },
}

/// A parsed job file: the job (its task without a module yet) and what it runs.
#[derive(Debug)]
pub struct Job {
    pub spec: pb::JobSpec,
    pub program: Program,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> CliError {
    CliError::BadInput(format!("{}: {msg}", path.display()))
}

/// Reads and checks a job file.
pub fn load(path: &Path) -> Result<Job, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir).map_err(|msg| bad(path, msg))
}

/// Parses job file text; relative module paths are resolved against `dir`.
pub fn parse(text: &str, dir: &Path) -> Result<Job, String> {
    let file: JobFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
    let task = file.task;
    let program = match (task.wasm, task.native) {
        (Some(wasm), None) => Program::Wasm(dir.join(wasm)),
        (None, Some(native)) => match native.split_first() {
            Some((command, rest)) if !command.is_empty() => {
                Program::Native { command: command.clone(), args: rest.iter().chain(&task.args).cloned().collect() }
            }
            _ => return Err("task.native must name a command: native = [\"/bin/echo\", \"hi\"]".into()),
        },
        (Some(_), Some(_)) => return Err("task has both wasm and native; give one".into()),
        (None, None) => return Err("task needs wasm = \"MODULE.wasm\" or native = [\"CMD\", ...]".into()),
    };
    let cpus = task.cpus.unwrap_or(0.1);
    if !(cpus.is_finite() && cpus > 0.0) {
        return Err(format!("task.cpus must be a positive number, got {cpus}"));
    }
    let mem_bytes = units::parse_size(task.mem.as_deref().unwrap_or("64M")).map_err(|e| format!("task.mem: {e}"))?;
    let disk_bytes =
        units::parse_size(task.disk.as_deref().unwrap_or("256M")).map_err(|e| format!("task.disk: {e}"))?;
    let timeout_ms = match &task.timeout {
        Some(t) => units::parse_duration(t).map_err(|e| format!("task.timeout: {e}"))?.as_millis() as u64,
        None => 0,
    };
    let name = file.name.unwrap_or_else(|| match &program {
        Program::Wasm(p) => p.file_stem().map_or_else(|| "job".into(), |s| s.to_string_lossy().into_owned()),
        Program::Native { command, .. } => command.rsplit('/').next().unwrap_or("job").to_owned(),
    });
    let (args, kind) = match &program {
        Program::Wasm(_) => (task.args, None),
        Program::Native { command, args } => (
            args.clone(),
            Some(pb::task_spec::Kind::Native(pb::NativeTask { command: command.clone(), ..Default::default() })),
        ),
    };
    let spec = pb::TaskSpec {
        name: name.clone(),
        resources: Some(pb::Resources {
            cpus,
            mem_bytes,
            disk_bytes,
            wasm_slots: u32::from(matches!(program, Program::Wasm(_))),
        }),
        limits: Some(pb::Limits { timeout_ms, fuel: task.fuel.unwrap_or(0), ..Default::default() }),
        args,
        env: task.env.into_iter().collect(),
        kind,
        ..Default::default()
    };
    let retry = match file.retry {
        Some(r) => {
            let ms = |field: &str, v: &Option<String>, default: u64| match v {
                Some(t) => {
                    units::parse_duration(t).map(|d| d.as_millis() as u64).map_err(|e| format!("retry.{field}: {e}"))
                }
                None => Ok(default),
            };
            Some(pb::RetryPolicy {
                attempts: r.attempts,
                backoff_ms: ms("backoff", &r.backoff, 1000)?,
                max_backoff_ms: ms("max_backoff", &r.max_backoff, 60_000)?,
            })
        }
        None => None,
    };
    let constraints = file.constraint.into_iter().map(constraint).collect::<Result<Vec<_>, _>>()?;
    let expected_duration_ms = match &file.expected_duration {
        Some(t) => units::parse_duration(t).map_err(|e| format!("expected_duration: {e}"))?.as_millis() as u64,
        None => 0,
    };
    let spec = pb::JobSpec {
        job_id: String::new(),
        name,
        instances: file.instances,
        task: Some(spec),
        retry,
        constraints,
        priority: file.priority,
        expected_duration_ms,
        submitted_by: String::new(),
    };
    skiff_core::JobSpec::check_policy(&spec).map_err(|e| e.to_string())?;
    Ok(Job { spec, program })
}

fn constraint(c: ConstraintSection) -> Result<pb::Constraint, String> {
    let operator = match c.operator.as_str() {
        "==" | "=" | "eq" => Operator::Eq,
        "!=" | "ne" => Operator::Ne,
        "in" => Operator::In,
        "not_in" => Operator::NotIn,
        "exists" => Operator::Exists,
        other => {
            return Err(format!(
                "constraint on {:?}: unknown operator {other:?} (use ==, !=, in, not_in, exists)",
                c.attribute
            ));
        }
    };
    let values: Vec<String> = c.value.into_iter().chain(c.values).collect();
    Ok(pb::Constraint { attribute: c.attribute, operator: operator as i32, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_job_file() {
        let text = r#"
name = "sweep"
instances = 3
priority = 5
expected_duration = "2s"
[task]
wasm = "primes.wasm"
args = ["{instance}000"]
env = { MODE = "fast" }
cpus = 0.25
mem = "32M"
timeout = "10s"
[retry]
attempts = 2
backoff = "500ms"
[[constraint]]
attribute = "zone"
operator = "in"
values = ["a", "b"]
"#;
        let job = parse(text, Path::new("/jobs")).unwrap();
        assert!(matches!(&job.program, Program::Wasm(p) if p == Path::new("/jobs/primes.wasm")));
        let spec = job.spec;
        assert_eq!(
            (spec.name.as_str(), spec.instances, spec.priority, spec.expected_duration_ms),
            ("sweep", 3, 5, 2000)
        );
        let task = spec.task.unwrap();
        assert_eq!(task.args, vec!["{instance}000".to_string()]);
        assert_eq!(task.resources.unwrap().mem_bytes, 32 << 20);
        assert_eq!(task.limits.unwrap().timeout_ms, 10_000);
        assert_eq!(spec.retry.unwrap(), pb::RetryPolicy { attempts: 2, backoff_ms: 500, max_backoff_ms: 60_000 });
        assert_eq!(spec.constraints[0].values, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn native_jobs_and_defaults() {
        let job = parse("[task]\nnative = [\"/bin/echo\", \"hi\"]\nargs = [\"{instance}\"]\n", Path::new(".")).unwrap();
        assert!(
            matches!(&job.program, Program::Native { command, args } if command == "/bin/echo" && args == &["hi", "{instance}"])
        );
        assert_eq!((job.spec.name.as_str(), job.spec.instances), ("echo", 1));
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("[task]\n", "needs wasm"),
            ("[task]\nwasm = \"a.wasm\"\nnative = [\"x\"]\n", "both"),
            ("[task]\nnative = []\n", "must name a command"),
            ("instances = 0\n[task]\nwasm = \"a.wasm\"\n", "instances"),
            ("[task]\nwasm = \"a.wasm\"\nmem = \"lots\"\n", "task.mem"),
            ("[task]\nwasm = \"a.wasm\"\ndisk = \"-1\"\n", "task.disk"),
            ("[task]\nwasm = \"a.wasm\"\ncpu = 1\n", "unknown field `cpu`"),
            ("[task]\nwasm = \"a.wasm\"\n[[constraint]]\nattribute = \"zone\"\noperator = \"~\"\n", "unknown operator"),
            (
                "[task]\nwasm = \"a.wasm\"\n[[constraint]]\nattribute = \"zone\"\noperator = \"==\"\n",
                "exactly one value",
            ),
            ("[task]\nwasm = \"a.wasm\"\n[retry]\nbackoff = \"soon\"\n", "retry.backoff"),
            ("instances = \"x\"", "invalid type"),
            ("expected_duration = \"long\"\n[task]\nwasm = \"a.wasm\"\n", "expected_duration"),
        ];
        for (text, want) in cases {
            let err = parse(text, Path::new(".")).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
