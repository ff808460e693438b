//! Paced load for the figure runners: single writes at a steady rate from
//! many clients, each write's start and latency recorded.

use crate::nodes::TOKEN;
use crate::value;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Single writes at a steady rate to one node, from many clients, each
/// write's start and latency recorded, until stopped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<(Instant, Duration)>>>,
}

impl Load {
    pub fn start(api: u16, per_s: u32) -> Load {
        let clients = 64u32;
        let every = Duration::from_secs_f64(f64::from(clients) / f64::from(per_s.max(1)));
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let threads = (0..clients)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let c = reqwest::blocking::Client::new();
                    let mut rng = SmallRng::seed_from_u64(u64::from(t) + 1000);
                    let mut next = t0 + every.mul_f64(f64::from(t) / f64::from(clients));
                    let mut done = Vec::new();
                    let mut k = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        let url = format!("http://127.0.0.1:{api}/v1/kv/load-{t}-{k}");
                        let start = Instant::now();
                        let ok = c
                            .put(&url)
                            .bearer_auth(TOKEN)
                            .body(value(&mut rng))
                            .send()
                            .is_ok_and(|r| r.status().is_success());
                        if ok {
                            done.push((start, start.elapsed()));
                        }
                        k += 1;
                        // Keep the pace; a late write does not make a burst.
                        next = (next + every).max(Instant::now());
                    }
                    done
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients; each write's start and latency.
    pub fn stop(self) -> Vec<(Instant, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect()
    }
}

/// The 99th percentile latency, in ms, of the writes started in
/// `[from, to)`, with how many there were.
pub fn p99_ms(writes: &[(Instant, Duration)], from: Instant, to: Instant) -> (f64, usize) {
    percentile_ms(writes, from, to, 0.99)
}

/// The `q` quantile of the latencies, in ms, of the writes started in
/// `[from, to)`, with how many there were (NaN and 0 for none).
pub fn percentile_ms(
    writes: &[(Instant, Duration)],
    from: Instant,
    to: Instant,
    q: f64,
) -> (f64, usize) {
    let mut l: Vec<Duration> = writes
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, d)| *d)
        .collect();
    if l.is_empty() {
        return (f64::NAN, 0);
    }
    l.sort_unstable();
    let i = ((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1;
    (l[i].as_secs_f64() * 1000.0, l.len())
}
