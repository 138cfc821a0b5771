//! What this host offers: CPUs, memory, disk, hostname.

use std::path::Path;

use skiff_proto as pb;

/// Resources detected on this host (CPUs available to this process, total memory, free disk of `work_dir`).
pub fn detect_resources(work_dir: &Path, wasm_slots: u32) -> pb::Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mem_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| parse_meminfo_total(&s)).unwrap_or(0);
    let disk_bytes =
        nix::sys::statvfs::statvfs(work_dir).map(|s| s.blocks_available() * s.fragment_size()).unwrap_or(0);
    pb::Resources { cpus, mem_bytes, disk_bytes, wasm_slots }
}

/// `MemTotal` of /proc/meminfo in bytes.
fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let cases = [
            ("MemTotal:       24565092 kB\nMemFree: 1 kB\n", Some(24_565_092 * 1024)),
            ("MemFree: 1 kB\n", None),
            ("MemTotal: lots kB\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_meminfo_total(text), want, "{text:?}");
        }
    }

    #[test]
    fn detects_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let r = detect_resources(dir.path(), 7);
        assert!(r.cpus >= 1.0);
        assert!(r.mem_bytes > 0);
        assert!(r.disk_bytes > 0);
        assert_eq!(r.wasm_slots, 7);
        assert!(!hostname().is_empty());
    }
}
