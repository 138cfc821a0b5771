//! Spins forever (or for the number of milliseconds given as its first argument): for timeouts,
//! kills and CPU shares.
use std::time::{Duration, Instant};

use skiff_guest as task;

fn main() {
    let until = task::args().first().and_then(|a| a.parse().ok()).map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut x: u64 = 1;
    loop {
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        }
        if let Some(until) = until {
            if Instant::now() >= until {
                break;
            }
        }
    }
    task::output_line(&format!("spun to {x}"));
}
