//! Per-task limits and meters: linear memory (a [`ResourceLimiter`]), CPU share (a budget checked
//! on every epoch tick) and CPU time (measured across every poll of the task's future).
//!
//! CPU share: a task with `cpus = c` may use `c × wall + burst` seconds of CPU after `wall` seconds.
//! On each epoch tick (1 ms) the guest's store asks [`CpuBudget::throttle`]; when the task is over
//! budget it yields to the executor and sleeps the excess divided by `c`, so its long-run share
//! converges to `c` of one core while other tasks keep running on the same threads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;

use crate::sys::thread_cpu_time;

/// The guest tried to grow its memory past its limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit: the guest asked for {desired} bytes of linear memory, over its limit of {limit} bytes")]
pub struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

/// Live meters of one task, shared between its store, its future and its usage reports.
#[derive(Debug, Default)]
pub struct Meter {
    cpu_ns: AtomicU64,
    /// Thread CPU time at the start of the current poll (0: not being polled).
    poll_start_ns: AtomicU64,
    peak_memory: AtomicU64,
}

impl Meter {
    /// CPU time used so far, including the poll in progress when called from inside it.
    pub fn cpu_time(&self) -> Duration {
        let done = self.cpu_ns.load(Ordering::Relaxed);
        let start = self.poll_start_ns.load(Ordering::Relaxed);
        let running = if start == 0 { 0 } else { (thread_cpu_time().as_nanos() as u64).saturating_sub(start) };
        Duration::from_nanos(done + running)
    }

    pub fn peak_memory(&self) -> u64 {
        self.peak_memory.load(Ordering::Relaxed)
    }

    fn note_memory(&self, bytes: usize) {
        self.peak_memory.fetch_max(bytes as u64, Ordering::Relaxed);
    }
}

/// Wraps a task's future, adding the thread CPU time of each poll to its [`Meter`].
pub struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Arc<Meter>,
}

impl<F> std::fmt::Debug for Metered<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered").field("meter", &self.meter).finish_non_exhaustive()
    }
}

impl<F> Metered<F> {
    pub fn new(inner: F, meter: Arc<Meter>) -> Self {
        Self { inner: Box::pin(inner), meter }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = (thread_cpu_time().as_nanos() as u64).max(1);
        self.meter.poll_start_ns.store(start, Ordering::Relaxed);
        let out = self.inner.as_mut().poll(cx);
        let end = thread_cpu_time().as_nanos() as u64;
        self.meter.poll_start_ns.store(0, Ordering::Relaxed);
        self.meter.cpu_ns.fetch_add(end.saturating_sub(start), Ordering::Relaxed);
        out
    }
}

/// Caps a store's linear memories and tables, and records the peak.
#[derive(Debug)]
pub struct TaskLimiter {
    pub memory_limit: usize,
    pub table_elements_limit: usize,
    pub meter: Arc<Meter>,
}

impl ResourceLimiter for TaskLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            // Trap now, with a reason of its own, rather than hand the guest a failed grow that it
            // would turn into a generic abort.
            return Err(wasmtime::Error::new(MemoryLimitExceeded { desired, limit: self.memory_limit }));
        }
        self.meter.note_memory(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements_limit)
    }
}

/// The CPU-share rule, pure: how long a task must pause, given what it used.
#[derive(Debug, Clone, Copy)]
pub struct CpuBudget {
    /// Fraction of one core (values ≥ 1 mean unthrottled: one guest runs on one thread).
    pub cpus: f64,
    /// CPU time a task may run ahead of its share (absorbs start-up and scheduling jitter).
    pub burst: Duration,
    pub started: Instant,
}

impl CpuBudget {
    /// How long to pause now, or `None` if the task is within its share.
    pub fn throttle(&self, used: Duration, now: Instant) -> Option<Duration> {
        if self.cpus >= 1.0 || self.cpus <= 0.0 {
            return None;
        }
        let wall = now.saturating_duration_since(self.started);
        let allowed = wall.mul_f64(self.cpus) + self.burst;
        let excess = used.checked_sub(allowed)?;
        (!excess.is_zero()).then(|| excess.div_f64(self.cpus))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_budget() {
        let t0 = Instant::now();
        let budget = CpuBudget { cpus: 0.25, burst: Duration::from_millis(10), started: t0 };
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases = [
            // (wall, used, pause)
            (s(1), ms(200), None),          // under 250 + 10 ms
            (s(1), ms(260), None),          // exactly at the budget
            (s(1), ms(360), Some(ms(400))), // 100 ms over at a quarter core: 400 ms
            (s(4), ms(1010), None),
            (s(0), ms(5), None), // within the burst
        ];
        for (wall, used, want) in cases {
            assert_eq!(budget.throttle(used, t0 + wall), want, "wall {wall:?} used {used:?}");
        }
        let full = CpuBudget { cpus: 1.0, ..budget };
        assert_eq!(full.throttle(s(10), t0 + s(1)), None, "a whole core is never throttled");
    }

    #[test]
    fn memory_limiter_traps_with_its_own_error() {
        let meter = Arc::new(Meter::default());
        let mut limiter = TaskLimiter { memory_limit: 1 << 20, table_elements_limit: 10, meter: meter.clone() };
        assert!(limiter.memory_growing(0, 65536, None).unwrap());
        let err = limiter.memory_growing(65536, 2 << 20, None).unwrap_err();
        let exceeded = err.downcast_ref::<MemoryLimitExceeded>().expect("typed error");
        assert_eq!((exceeded.desired, exceeded.limit), (2 << 20, 1 << 20));
        assert_eq!(meter.peak_memory(), 65536);
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert!(!limiter.table_growing(0, 11, None).unwrap());
    }

    #[test]
    fn metered_future_counts_cpu() {
        let meter = Arc::new(Meter::default());
        // Spin until this thread has used 30 ms of CPU, however loaded the machine is.
        let spin = async {
            let start = thread_cpu_time();
            while thread_cpu_time() - start < Duration::from_millis(30) {
                std::hint::spin_loop();
            }
        };
        futures::executor::block_on(Metered::new(spin, meter.clone()));
        let used = meter.cpu_time();
        assert!(used >= Duration::from_millis(30) && used < Duration::from_millis(60), "{used:?}");
    }
}
