//! Latency histograms the node records as it runs (served at /metrics).

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Handles to the node's histograms: clones share the same figures.
#[derive(Clone, Debug)]
pub struct Timings {
    /// Seconds the event loop took over one batch of inputs that applied
    /// committed events (decoding, applying, persisting, what followed).
    pub apply: Histogram,
    /// Seconds from a snapshot transfer's first progress to its install,
    /// restarts included.
    pub snapshot_catch_up: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            // 100 µs to about 3 s.
            apply: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            // 100 ms to about 7 minutes.
            snapshot_catch_up: Histogram::new(exponential_buckets(0.1, 2.0, 13)),
        }
    }
}
