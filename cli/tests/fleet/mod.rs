//! A fleet of real Skiff processes for end-to-end tests: the `skiff-coordinator` and `skiff-agent`
//! binaries on free loopback ports, and the `skiff` CLI, with the example guests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Directory of the binaries cargo built for this test run.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_skiff")).parent().expect("binary has a directory").to_path_buf()
}

/// Path of a workspace binary; they are all built by `cargo build --workspace` (scripts/test does it).
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace)",
        path.display()
    );
    path
}

/// Path of an example guest built by scripts/build-guests.
pub fn guest(name: &str) -> PathBuf {
    let dir = std::env::var_os("SKIFF_GUESTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/guests/target/wasm32-wasi/release"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "guest {} is missing: run scripts/build-guests first", path.display());
    path
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Sends SIGTERM and waits up to `within` for the process to exit; returns its exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} did not exit within {within:?} of SIGTERM", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `cmd` and waits until its stdout prints a line containing `marker`; returns the process
/// and that line.
pub fn spawn_until(mut cmd: Command, name: &str, marker: &str, within: Duration) -> (Proc, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
    // Daemon logs go to the test's stderr; keep them to what matters unless asked for more.
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let marker = marker.to_owned();
    // The reader thread ends when the child's stdout closes.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&marker) {
                let _ = tx.send(line);
            }
        }
    });
    let proc = Proc { child, name: name.to_owned() };
    let line =
        rx.recv_timeout(within).unwrap_or_else(|_| panic!("{name} did not print its ready line within {within:?}"));
    (proc, line)
}

/// One coordinator and one agent, as separate processes.
pub struct Fleet {
    pub coordinator: Proc,
    pub agent: Proc,
    pub addr: String,
    pub work_dir: tempfile::TempDir,
}

impl Fleet {
    pub fn start() -> Fleet {
        let mut cmd = Command::new(bin("skiff-coordinator"));
        cmd.args(["--listen", "127.0.0.1:0"]);
        let (coordinator, line) = spawn_until(cmd, "skiff-coordinator", "listening on", Duration::from_secs(10));
        let addr = line.rsplit(' ').next().expect("address at the end of the line").to_owned();

        let work_dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(bin("skiff-agent"));
        cmd.args(["--coordinators", &addr, "--work-dir"]).arg(work_dir.path());
        let (agent, _) = spawn_until(cmd, "skiff-agent", "started", Duration::from_secs(10));
        Fleet { coordinator, agent, addr, work_dir }
    }

    /// `skiff run --coordinators ADDR <args>` with empty stdin.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        skiff_run(&self.addr, args, stdin)
    }
}

/// `skiff run --coordinators ADDR <args>`, bounded in time.
pub fn skiff_run(addr: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(bin("skiff"));
    cmd.arg("run").args(["--coordinators", addr]).args(args);
    run_bounded(cmd, stdin, Duration::from_secs(60))
}

/// Runs a command to completion with a deadline, collecting its output.
pub fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>, within: Duration) -> Output {
    use std::io::Write;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("spawn");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input).expect("write stdin");
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            panic!("{cmd:?} did not finish within {within:?}");
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
