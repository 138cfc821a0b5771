//! `skiff run`: submit one task, stream its states and output, exit with its exit code.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use std::process::ExitCode;
use std::time::Duration;

use skiff_proto as pb;
use skiff_proto::{Reason, TaskState};

use crate::client;
use crate::exit::{self, CliError};
use crate::units;

/// Largest module `skiff run` sends (agents enforce their own limit too).
pub const MAX_MODULE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest stdin passed to a task.
pub const MAX_STDIN_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Coordinator addresses, comma-separated (any of them; followers point to the leader).
    #[arg(long, env = "SKIFF_COORDINATORS", value_delimiter = ',', default_value = "127.0.0.1:7070")]
    pub coordinators: Vec<String>,
    /// CPU cores reserved for the task (fractional: 0.25 is a quarter of a core).
    #[arg(long, default_value = "0.1", value_parser = units::parse_cpus)]
    pub cpus: f64,
    /// Memory for the task (caps a Wasm guest's linear memory): 64M, 1G, ...
    #[arg(long, default_value = "64M", value_parser = units::parse_size)]
    pub mem: u64,
    /// Disk for the task: its sandbox is a filesystem of this size (writes past it fail with
    /// ENOSPC; a task that then fails ends DISK_LIMIT).
    #[arg(long, default_value = "256M", value_parser = units::parse_size)]
    pub disk: u64,
    /// Wall-clock limit: 500ms, 30s, 5m, ...
    #[arg(long, value_parser = units::parse_duration)]
    pub timeout: Option<Duration>,
    /// Deterministic budget of Wasm fuel (about one unit per instruction); the task fails with
    /// OUT_OF_FUEL when it is used up.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Environment variable for the task, KEY=VALUE (repeatable). Tasks see no other variables.
    #[arg(long = "env", value_parser = units::parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Task name (argv[0]; default: the module's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Don't print state changes.
    #[arg(long, short)]
    pub quiet: bool,
    /// Put a local file into the task's sandbox, LOCAL[:SANDBOX_PATH[:rw]] (repeatable; default
    /// path /input/NAME; read-only unless :rw).
    #[arg(long = "file", value_name = "LOCAL[:PATH[:rw]]")]
    pub files: Vec<String>,
    /// Give the task a local directory tree, read-only, at GUEST_PATH (repeatable).
    #[arg(long = "dir", value_name = "LOCAL_DIR:GUEST_PATH")]
    pub dirs: Vec<String>,
    /// Collect a file the task writes at this sandbox path when it ends (repeatable); fetch it with
    /// `skiff cp TASK_ID:PATH LOCAL`.
    #[arg(long = "output", value_name = "SANDBOX_PATH")]
    pub outputs: Vec<String>,
    /// Run a native command (`-- CMD ARGS...`) in a cgroup instead of a Wasm module.
    #[arg(long)]
    pub native: bool,
    /// With --native: the host's network instead of loopback only (the agent must allow it).
    #[arg(long, requires = "native")]
    pub host_network: bool,
    /// The Wasm module to run (not with --native).
    pub file: Option<PathBuf>,
    /// Arguments for the task after `--` (with --native: the command and its arguments).
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub(crate) fn read_module(path: &Path) -> Result<Vec<u8>, CliError> {
    let bad = |msg: String| CliError::BadInput(msg);
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(bad(format!("{} is not a file", path.display())));
    }
    if meta.len() > MAX_MODULE_BYTES {
        return Err(bad(format!(
            "{} is {} bytes, over the {} byte limit for modules",
            path.display(),
            meta.len(),
            MAX_MODULE_BYTES
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(bad(format!("{} is not a Wasm module (it does not start with the \\0asm magic)", path.display())));
    }
    if bytes[4..8] != [1, 0, 0, 0] {
        return Err(bad(format!(
            "{} is a Wasm component or an unsupported Wasm version; Skiff runs core modules (WASI preview 1)",
            path.display()
        )));
    }
    Ok(bytes)
}

fn read_stdin() -> Result<Vec<u8>, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut buf = Vec::new();
    stdin
        .lock()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CliError::BadInput(format!("cannot read stdin: {e}")))?;
    if buf.len() as u64 > MAX_STDIN_BYTES {
        return Err(CliError::BadInput(format!(
            "stdin is larger than the {MAX_STDIN_BYTES} byte limit for task input"
        )));
    }
    Ok(buf)
}

/// `TASK_STATE_RUNNING` -> `RUNNING`.
pub fn state_name(state: TaskState) -> &'static str {
    state.as_str_name().trim_start_matches("TASK_STATE_")
}

pub fn reason_name(reason: Reason) -> &'static str {
    reason.as_str_name().trim_start_matches("REASON_")
}

/// What to run: a module, or a native command.
#[derive(Debug)]
enum Program {
    Wasm { name: String, module: Vec<u8> },
    Native { command: String, args: Vec<String> },
}

fn program(args: &RunArgs) -> Result<Program, CliError> {
    match (&args.file, args.native) {
        (Some(file), false) => Ok(Program::Wasm {
            name: file.file_name().map_or_else(|| "task".into(), |n| n.to_string_lossy().into_owned()),
            module: read_module(file)?,
        }),
        (None, true) => match args.args.split_first() {
            Some((command, rest)) => Ok(Program::Native { command: command.clone(), args: rest.to_vec() }),
            None => {
                Err(CliError::BadInput("--native needs a command after `--`: skiff run --native -- CMD ARGS...".into()))
            }
        },
        (Some(file), true) => Err(CliError::BadInput(format!(
            "--native runs a command given after `--`, not a file ({}); put the command after `--`",
            file.display()
        ))),
        (None, false) => Err(CliError::BadInput("nothing to run: give FILE.wasm, or --native -- CMD ARGS...".into())),
    }
}

fn spec(args: &RunArgs, program: Program, stdin: Vec<u8>, io: (Vec<pb::TaskFile>, Vec<pb::TaskDir>)) -> pb::TaskSpec {
    let (name, task_args, kind) = match program {
        Program::Wasm { name, module } => {
            let wasm = pb::WasmTask {
                module: Vec::new(),
                module_sha256: crate::artifact::sha256_hex(&module),
                module_size: module.len() as u64,
            };
            (name, args.args.clone(), pb::task_spec::Kind::Wasm(wasm))
        }
        Program::Native { command, args: native_args } => {
            let native = pb::NativeTask { command: command.clone(), host_network: args.host_network };
            (command, native_args, pb::task_spec::Kind::Native(native))
        }
    };
    pb::TaskSpec {
        task_id: String::new(),
        name: args.name.clone().unwrap_or(name),
        resources: Some(pb::Resources {
            cpus: args.cpus,
            mem_bytes: args.mem,
            disk_bytes: args.disk,
            wasm_slots: u32::from(matches!(kind, pb::task_spec::Kind::Wasm(_))),
        }),
        limits: Some(pb::Limits {
            timeout_ms: args.timeout.map_or(0, |t| t.as_millis().max(1) as u64),
            fuel: args.fuel.unwrap_or(0),
            max_output_bytes: 0,
        }),
        args: task_args,
        env: args.env.iter().cloned().collect(),
        stdin,
        kind: Some(kind),
        files: io.0,
        dirs: io.1,
        outputs: args.outputs.clone(),
    }
}

/// The next event of the stream; a missing stream has ended.
async fn next_event(
    events: &mut Option<tonic::Streaming<pb::TaskEvent>>,
) -> Result<Option<pb::TaskEvent>, tonic::Status> {
    match events {
        Some(stream) => stream.message().await,
        None => Ok(None),
    }
}

/// Follows a task from event `from_event` on (events already received from this leader).
async fn watch(
    client: &mut client::Operator,
    task_id: &str,
    from_event: u64,
) -> Result<tonic::Streaming<pb::TaskEvent>, CliError> {
    let request = pb::WatchTaskRequest { task_id: task_id.to_owned(), history_only: false, from_event };
    match client.watch_task(request).await {
        Ok(r) => Ok(r.into_inner()),
        Err(s) => Err(CliError::Unavailable(format!("cannot watch task {task_id}: {}", s.message()))),
    }
}

pub async fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    let program = program(&args)?;
    let stdin = read_stdin()?;
    let leader = client::leader_channel(&args.coordinators).await?;
    let mut client = client::operator(leader.clone());
    if let Program::Wasm { module, .. } = &program {
        let stored = crate::artifact::ensure_stored(leader.clone(), module).await?;
        if !args.quiet {
            let what = if stored.uploaded { "uploaded" } else { "already stored" };
            eprintln!("[skiff] module {} {what} ({} bytes)", &stored.sha256[..12], module.len());
        }
    }
    let files = crate::artifact::task_files(&leader, &args.files).await?;
    let dirs = crate::artifact::task_dirs(&leader, &args.dirs).await?;
    let spec = spec(&args, program, stdin, (files, dirs));
    let task_id = client
        .submit_task(pb::SubmitTaskRequest { spec: Some(spec) })
        .await
        .map_err(|s| match CliError::from_status(&s) {
            CliError::Unavailable(_) => CliError::Unavailable(format!("submit failed: {}", s.message())),
            other => other,
        })?
        .into_inner()
        .task_id;
    let say = |line: String| {
        if !args.quiet {
            eprintln!("[skiff] {line}");
        }
    };
    say(format!("task {task_id} submitted"));

    let mut events = match watch(&mut client, &task_id, 0).await {
        Ok(events) => Some(events),
        // The leader that took the task may have stepped down since: follow it on the new one.
        Err(_) => {
            client = client::connect_leader(&args.coordinators).await?;
            Some(watch(&mut client, &task_id, 0).await?)
        }
    };
    // Events received from the current leader (a watcher cut off for falling behind resumes there).
    let mut received = 0u64;
    // Output printed so far: what a new leader shows again is not printed twice.
    let mut printed = crate::printed::Printed::default();
    // One listener for the whole run: a Ctrl-C that lands while an event is being handled waits in
    // it (a `ctrl_c()` future made anew each turn would miss it, and the handler installed by the
    // first one keeps the default action from ending the process).
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::Other(format!("cannot listen for Ctrl-C: {e}")))?;
    let mut kill_sent = false;
    let mut last_state = TaskState::Unspecified;
    // Re-watches in a row without an event in between (a stream that keeps ending is an error).
    let mut rewatches = 0;
    loop {
        let event = tokio::select! {
            e = next_event(&mut events) => e,
            _ = interrupt.recv(), if !kill_sent => {
                kill_sent = true;
                say(format!("interrupted: killing task {task_id}"));
                if let Err(s) = client.kill_task(pb::KillTaskRequest { task_id: task_id.clone() }).await {
                    eprintln!("skiff: could not kill task {task_id}: {}", s.message());
                }
                continue;
            }
        };
        let event = match event {
            Ok(Some(e)) => {
                rewatches = 0;
                received += 1;
                e
            }
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                // Cut off for reading too slowly: resume on the same leader where the stream stopped.
                events = Some(watch(&mut client, &task_id, received).await?);
                continue;
            }
            Ok(None) | Err(_) if rewatches >= 5 => {
                return Err(CliError::Unavailable(format!(
                    "the coordinators keep ending the stream of task {task_id} (last state {})",
                    state_name(last_state)
                )));
            }
            Ok(None) | Err(_) => {
                rewatches += 1;
                // The stream ends early when the leader steps down or dies: follow the task on the new
                // leader (statuses already shown are skipped; output sent to the old leader is not kept).
                say(format!("lost the coordinator while watching task {task_id}; finding the leader again"));
                client = client::connect_leader(&args.coordinators).await?;
                received = 0;
                events = match watch(&mut client, &task_id, 0).await {
                    Ok(e) => Some(e),
                    Err(CliError::Unavailable(why)) => {
                        say(why);
                        None
                    }
                    Err(e) => return Err(e),
                };
                continue;
            }
        };
        match event.event {
            Some(pb::task_event::Event::Output(out)) => {
                let stream = pb::OutputStream::try_from(out.stream).unwrap_or(pb::OutputStream::Stdout);
                let data = printed.fresh(&out);
                if stream == pb::OutputStream::Stderr {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(data);
                    let _ = err.flush();
                } else {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(data);
                    let _ = o.flush();
                }
                if out.truncated {
                    say(format!(
                        "task {task_id}: further {} output was truncated",
                        if stream == pb::OutputStream::Stderr { "stderr" } else { "stdout" }
                    ));
                }
            }
            Some(pb::task_event::Event::Status(status)) => {
                let state = status.state();
                if state == last_state {
                    continue;
                }
                last_state = state;
                if !crate::is_terminal(state) {
                    let on = if status.agent_id.is_empty() {
                        String::new()
                    } else {
                        format!(" on agent {}", status.agent_id)
                    };
                    say(format!("task {task_id} {}{on}", state_name(state)));
                    continue;
                }
                for out in &status.outputs {
                    if out.sha256.is_empty() {
                        eprintln!("[skiff] output {} was not collected: {}", out.path, out.error);
                    } else {
                        say(format!(
                            "output {} collected ({} bytes): skiff cp {task_id}:{} LOCAL",
                            out.path, out.size, out.path
                        ));
                    }
                }
                return Ok(finish(&task_id, &status, &say));
            }
            None => {}
        }
    }
}

/// "cpu 0.004s, wall 0.080s, peak memory 1088 KiB, fuel 1200, module compiled"
pub fn usage_line(usage: &pb::Usage) -> String {
    let mut line = format!(
        "cpu {:.3}s, wall {:.3}s, peak memory {} KiB",
        usage.cpu_time_us as f64 / 1e6,
        usage.wall_time_us as f64 / 1e6,
        usage.peak_memory_bytes / 1024
    );
    if usage.cpu_user_us + usage.cpu_system_us > 0 || usage.throttled_periods > 0 {
        line.push_str(&format!(
            " (user {:.3}s, system {:.3}s), throttled {} times for {:.3}s",
            usage.cpu_user_us as f64 / 1e6,
            usage.cpu_system_us as f64 / 1e6,
            usage.throttled_periods,
            usage.throttled_us as f64 / 1e6
        ));
    }
    if usage.fuel_consumed > 0 {
        line.push_str(&format!(", fuel {}", usage.fuel_consumed));
    }
    if !usage.module_cache.is_empty() {
        line.push_str(&format!(", module {}", usage.module_cache));
    }
    line
}

/// Reports the terminal status and picks the exit code.
fn finish(task_id: &str, status: &pb::TaskStatus, say: &impl Fn(String)) -> ExitCode {
    let state = status.state();
    let reason = status.reason();
    let usage_line = usage_line(&status.usage.clone().unwrap_or_default());
    match (state, status.exit_code) {
        (TaskState::Finished | TaskState::Failed, Some(code)) if reason == Reason::Exited => {
            say(format!("task {task_id} {} with exit code {code} ({usage_line})", state_name(state)));
            exit::from_task_code(code)
        }
        _ => {
            // A failure not of the task's own choosing is always shown, even with --quiet.
            eprintln!(
                "[skiff] task {task_id} {} ({}): {} ({usage_line})",
                state_name(state),
                reason_name(reason),
                status.message
            );
            if state == TaskState::Killed {
                ExitCode::from(exit::TASK_KILLED)
            } else {
                ExitCode::from(exit::TASK_FAILED)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_checks() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let cases = [
            (write("ok.wasm", b"\0asm\x01\0\0\0"), None),
            (write("text.wasm", b"hello, I am text\n"), Some("is not a Wasm module")),
            (write("short.wasm", b"\0as"), Some("is not a Wasm module")),
            (write("component.wasm", b"\0asm\x0d\0\x01\0"), Some("component")),
            (dir.path().join("missing.wasm"), Some("cannot read")),
            (dir.path().to_path_buf(), Some("is not a file")),
        ];
        for (path, want) in cases {
            match (read_module(&path), want) {
                (Ok(_), None) => {}
                (Err(CliError::BadInput(msg)), Some(text)) => assert!(msg.contains(text), "{msg}"),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", path.display()),
            }
        }
    }

    #[test]
    fn names() {
        assert_eq!(state_name(TaskState::Running), "RUNNING");
        assert_eq!(reason_name(Reason::MemoryLimit), "MEMORY_LIMIT");
    }
}
