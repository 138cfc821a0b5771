//! Memory hog: allocates and touches MiB after MiB (first argument: how many, default 1024),
//! printing each one, to show `--mem` being enforced (the task fails with MEMORY_LIMIT).
use skiff_guest as task;

fn main() {
    let mib: usize = task::args().first().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    for i in 1..=mib {
        hoard.push(vec![0x5a; 1 << 20]);
        task::output_line(&format!("holding {i} MiB"));
    }
    task::output_line(&format!("done: {} MiB", hoard.len()));
}
