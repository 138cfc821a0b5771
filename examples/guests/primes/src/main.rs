//! CPU-bound: counts the primes below N (first argument, default 2,000,000) by trial division,
//! reporting progress as it goes, and prints the count.
use skiff_guest as task;

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

fn main() {
    let limit: u64 = task::args().first().and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let step = (limit / 10).max(1);
    let mut count = 0;
    for n in 0..limit {
        if is_prime(n) {
            count += 1;
        }
        if n % step == step - 1 {
            task::progress(n + 1, limit);
        }
    }
    task::output_line(&format!("{count} primes below {limit}"));
}
