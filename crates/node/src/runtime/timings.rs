//! Latency histograms the node records as it runs (served at /metrics).

use nix::time::{clock_gettime, ClockId};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A histogram that also tells its running sum and count (the dashboard's
/// history takes a mean a second from them; `Histogram` keeps its own to
/// itself).
#[derive(Clone, Debug)]
pub struct Timed {
    pub histogram: Histogram,
    sum_ns: Arc<AtomicU64>,
    count: Arc<AtomicU64>,
}

impl Timed {
    pub fn new(buckets: impl Iterator<Item = f64>) -> Self {
        Timed {
            histogram: Histogram::new(buckets),
            sum_ns: Arc::default(),
            count: Arc::default(),
        }
    }

    pub fn observe(&self, seconds: f64) {
        self.histogram.observe(seconds);
        self.sum_ns
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Seconds observed in all, and how many observations.
    pub fn sum_count(&self) -> (f64, u64) {
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, self.count.load(Ordering::Relaxed))
    }
}

/// Handles to the node's histograms: clones share the same figures.
#[derive(Clone, Debug)]
pub struct Timings {
    /// Seconds the event loop took over one batch of inputs that applied
    /// committed events (decoding, applying, persisting, what followed).
    pub apply: Timed,
    /// Seconds the event loop took over each batch of inputs, whatever
    /// it held: how long anything that arrived meanwhile waited.
    pub turn: Timed,
    /// CPU seconds the loop's thread spent on each of those batches: the
    /// rest of `turn` it waited, for a core or in a system call.
    pub turn_cpu: Timed,
    /// Seconds from a snapshot transfer's first progress to its install,
    /// restarts included.
    pub snapshot_catch_up: Timed,
    /// Seconds each fsync of the Raft log took (off the event loop).
    pub log_sync: Timed,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            // 100 µs to about 3 s.
            apply: Timed::new(exponential_buckets(0.0001, 2.0, 16)),
            // 50 µs to about 3 s.
            turn: Timed::new(exponential_buckets(0.00005, 2.0, 17)),
            turn_cpu: Timed::new(exponential_buckets(0.00005, 2.0, 17)),
            // 100 ms to about 7 minutes.
            snapshot_catch_up: Timed::new(exponential_buckets(0.1, 2.0, 13)),
            // 50 µs to about 3 s.
            log_sync: Timed::new(exponential_buckets(0.00005, 2.0, 17)),
        }
    }
}

/// CPU time the calling thread has run so far (zero where the clock
/// cannot be read).
pub fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_histogram_keeps_its_sum_and_count() {
        let t = Timed::new(exponential_buckets(0.001, 2.0, 4));
        let copy = t.clone();
        t.observe(0.25);
        copy.observe(0.5);
        assert_eq!(t.sum_count(), (0.75, 2));
    }

    #[test]
    fn a_thread_counts_its_own_cpu_time_and_not_its_sleep() {
        let before = thread_cpu();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu().saturating_sub(before);
        assert!(slept < Duration::from_millis(10), "slept {slept:?}");
        // Spinning counts, however long the thread waits for a core.
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while thread_cpu().saturating_sub(before) < Duration::from_millis(20) {
            assert!(
                spin.elapsed() < Duration::from_secs(10),
                "no CPU time counted"
            );
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}
