//! Bulk bytes this node serves (snapshot chunks, range replies) handed to
//! the network at most `--bulk-rate` a second, after a burst of
//! `BURST`. A node that serves a join storm at full speed takes the core
//! its writes' commit path needs; paced, its joiners take longer and its
//! writes wait less (bench/README.md, 2026-12-06). Unpaced by default:
//! one joiner then loads as fast as its sources can send.
//!
//! What waits is bounded in bytes (`MAX_QUEUED`): past it a message is
//! dropped, counted, and its asker asks again when it is late.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Sent at once after a quiet spell: a snapshot chunk.
const BURST: u64 = 1 << 20;
/// Bytes waiting for their turn, at most.
const MAX_QUEUED: u64 = 64 << 20;

/// A token bucket kept as the time its bytes are paid up to (seconds,
/// minus infinity while full): pure, so that it is tested without
/// sleeping.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    rate: f64,
    /// How long a full burst takes to earn.
    burst: f64,
    paid_until: f64,
}

impl Bucket {
    fn new(rate: u64, burst: u64) -> Self {
        let rate = rate.max(1) as f64;
        Bucket {
            rate,
            burst: burst as f64 / rate,
            paid_until: f64::NEG_INFINITY,
        }
    }

    /// How long to wait, from `now`, before sending `bytes`: until they
    /// are paid for, with at most a burst saved up before.
    fn wait(&mut self, now: Duration, bytes: u64) -> Duration {
        let now = now.as_secs_f64();
        self.paid_until = self.paid_until.max(now - self.burst) + bytes as f64 / self.rate;
        Duration::from_secs_f64((self.paid_until - now).max(0.0))
    }
}

/// Where bulk bytes go, in order. Cheap to clone; with no rate, `send`
/// hands them on at once.
pub(super) struct Pacer<T> {
    queue: Option<mpsc::UnboundedSender<(T, u64)>>,
    forward: Arc<dyn Fn(T) -> bool + Send + Sync>,
    counts: Arc<Counts>,
}

impl<T> Clone for Pacer<T> {
    fn clone(&self) -> Self {
        Pacer {
            queue: self.queue.clone(),
            forward: self.forward.clone(),
            counts: self.counts.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    queued: AtomicU64,
    dropped: AtomicU64,
    held: AtomicU64,
}

impl<T: Send + 'static> Pacer<T> {
    /// Hands messages to `forward` (false: it could not take one) at most
    /// `rate` bytes a second, or at once without a rate. Must be called
    /// on the runtime.
    pub fn new<F>(rate: Option<u64>, forward: F) -> Self
    where
        F: Fn(T) -> bool + Send + Sync + 'static,
    {
        let forward: Arc<dyn Fn(T) -> bool + Send + Sync> = Arc::new(forward);
        let counts = Arc::new(Counts::default());
        let queue = rate.map(|rate| {
            let (tx, mut rx) = mpsc::unbounded_channel::<(T, u64)>();
            let (forward, counts) = (forward.clone(), counts.clone());
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                let mut bucket = Bucket::new(rate, BURST);
                while let Some((msg, bytes)) = rx.recv().await {
                    let wait = bucket.wait(start.elapsed(), bytes);
                    if !wait.is_zero() {
                        counts.held.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                    }
                    counts.queued.fetch_sub(bytes, Ordering::Relaxed);
                    if !forward(msg) {
                        counts.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            tx
        });
        Pacer {
            queue,
            forward,
            counts,
        }
    }

    /// Sends `msg` of `bytes` in its turn; false if it was refused (the
    /// queue full, or, unpaced, the network's): the caller counts that.
    pub fn send(&self, msg: T, bytes: u64) -> bool {
        let Some(queue) = &self.queue else {
            return (self.forward)(msg);
        };
        let queued = self.counts.queued.fetch_add(bytes, Ordering::Relaxed);
        if queued + bytes > MAX_QUEUED || queue.send((msg, bytes)).is_err() {
            self.counts.queued.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Messages dropped after their wait at a full network queue (those
    /// `send` refused are the caller's to count).
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    /// Messages held back to keep to the rate.
    pub fn held(&self) -> u64 {
        self.counts.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Milliseconds, rounded: the bucket counts in floating seconds.
    fn msr(d: Duration) -> u64 {
        (d.as_secs_f64() * 1000.0).round() as u64
    }

    #[test]
    fn a_burst_goes_at_once_and_what_follows_at_the_rate() {
        // 1,000 bytes a second, a burst of 1,000.
        let mut b = Bucket::new(1000, 1000);
        assert_eq!(msr(b.wait(ms(0), 1000)), 0, "the burst");
        assert_eq!(msr(b.wait(ms(0), 500)), 500, "half a second's bytes");
        assert_eq!(msr(b.wait(ms(0), 500)), 1000, "and another half");
        // A second later the last of them are paid; 100 more take 0.1 s.
        assert_eq!(msr(b.wait(ms(1000), 100)), 100);
    }

    #[test]
    fn a_quiet_spell_refills_the_burst_and_no_more() {
        let mut b = Bucket::new(1000, 1000);
        assert_eq!(msr(b.wait(ms(0), 3000)), 2000, "past the burst, waits");
        // Long after, a full burst goes at once, and only one.
        assert_eq!(msr(b.wait(ms(60_000), 1000)), 0);
        assert_eq!(msr(b.wait(ms(60_000), 1000)), 1000);
    }

    /// What a pacer forwards, and when (from the test's start).
    fn recorder(rate: Option<u64>) -> (Pacer<u32>, mpsc::UnboundedReceiver<(u32, u64)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let start = tokio::time::Instant::now();
        let pacer = Pacer::new(rate, move |n| {
            tx.send((n, start.elapsed().as_millis() as u64)).is_ok()
        });
        (pacer, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn bulk_messages_go_in_order_at_the_rate() {
        // 1 MiB a second: a burst of one 1 MiB chunk, then one a second.
        let (pacer, mut rx) = recorder(Some(1 << 20));
        for n in 0..4 {
            assert!(pacer.send(n, 1 << 20));
        }
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(rx.recv().await.unwrap());
        }
        assert_eq!(got, [(0, 0), (1, 1000), (2, 2000), (3, 3000)]);
        assert_eq!((pacer.held(), pacer.dropped()), (3, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn what_waits_is_bounded_in_bytes_and_unpaced_goes_at_once() {
        let (pacer, mut rx) = recorder(Some(1 << 20));
        let chunks = MAX_QUEUED / (1 << 20);
        let taken = (0..chunks + 3)
            .filter(|n| pacer.send(*n as u32, 1 << 20))
            .count() as u64;
        // The queue holds MAX_QUEUED; the pacer's task, not yet run, has
        // taken none of it out.
        assert_eq!(taken, chunks);
        assert_eq!(pacer.dropped(), 0, "refused ones are the caller's to count");
        assert_eq!(rx.recv().await, Some((0, 0)));
        let (pacer, mut rx) = recorder(None);
        assert!(pacer.send(7, 1 << 30));
        assert_eq!(rx.try_recv(), Ok((7, 0)), "no rate: at once");
    }
}
