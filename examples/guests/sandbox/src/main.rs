//! Writes and reads a file in its sandbox, then tries to reach outside it: every escape must fail.
//! Prints one line per attempt, `ok` or `denied`.
use std::fs;

use skiff_guest as task;

fn attempt(what: &str, result: std::io::Result<String>) {
    match result {
        Ok(text) => task::output_line(&format!("{what}: ok ({} bytes)", text.len())),
        Err(err) => task::output_line(&format!("{what}: denied ({err})")),
    }
}

fn main() {
    let written = task::write_file("/result.txt", b"written by the sandbox guest\n")
        .and_then(|_| task::read_file("/result.txt"))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    attempt("write /result.txt", written);
    attempt("read /etc/passwd", fs::read_to_string("/etc/passwd"));
    attempt("read ../../etc/passwd", fs::read_to_string("../../etc/passwd"));
    attempt("read /../../../etc/hostname", fs::read_to_string("/../../../etc/hostname"));
    attempt("list /", fs::read_dir("/").map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>().join(",")));
    task::output_line(&format!("env: {}", std::env::vars().map(|(k, _)| k).collect::<Vec<_>>().join(",")));
}
