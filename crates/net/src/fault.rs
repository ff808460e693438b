//! Test-only fault injection: hold every outgoing message for a while
//! (for chaos runs on kernels without netem). Bounded: past `MAX_HELD`
//! the oldest held message is dropped and counted.

use std::collections::VecDeque;
use std::ops::Add;
use std::time::Duration;

/// Messages held back at most.
pub const MAX_HELD: usize = 16_384;

#[derive(Debug)]
pub struct Delay<M, T> {
    delay: Duration,
    held: VecDeque<(T, M)>,
}

impl<M, T> Default for Delay<M, T> {
    fn default() -> Self {
        Delay {
            delay: Duration::ZERO,
            held: VecDeque::new(),
        }
    }
}

impl<M, T: Copy + Ord + Add<Duration, Output = T>> Delay<M, T> {
    /// Zero turns it off (what is held still goes out in order).
    pub fn set(&mut self, delay: Duration) {
        self.delay = delay;
    }

    /// Whether messages must wait: a delay is set, or some still wait
    /// (order is kept).
    pub fn active(&self) -> bool {
        !self.delay.is_zero() || !self.held.is_empty()
    }

    /// Holds `msg` until now plus the delay. Returns whether an older
    /// message was dropped to make room.
    pub fn hold(&mut self, msg: M, now: T) -> bool {
        let dropped = self.held.len() >= MAX_HELD;
        if dropped {
            self.held.pop_front();
        }
        self.held.push_back((now + self.delay, msg));
        dropped
    }

    /// When the next held message is due.
    pub fn next_due(&self) -> Option<T> {
        self.held.front().map(|(at, _)| *at)
    }

    /// The next message, if it is due.
    pub fn pop_due(&mut self, now: T) -> Option<M> {
        if self.next_due().is_some_and(|at| at <= now) {
            return self.held.pop_front().map(|(_, m)| m);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn held_messages_go_out_in_order_after_the_delay() {
        let mut d: Delay<u32, Duration> = Delay::default();
        assert!(!d.active());
        d.set(ms(300));
        assert!(!d.hold(1, ms(0)));
        assert!(!d.hold(2, ms(100)));
        assert_eq!(d.pop_due(ms(299)), None);
        assert_eq!(d.pop_due(ms(300)), Some(1));
        d.set(Duration::ZERO);
        assert!(d.active(), "2 still waits: order is kept");
        assert_eq!(d.next_due(), Some(ms(400)));
        assert_eq!(d.pop_due(ms(400)), Some(2));
        assert!(!d.active());
    }

    #[test]
    fn the_oldest_is_dropped_past_the_cap() {
        let mut d: Delay<usize, Duration> = Delay::default();
        d.set(ms(1));
        for i in 0..MAX_HELD {
            assert!(!d.hold(i, ms(0)));
        }
        assert!(d.hold(MAX_HELD, ms(0)));
        assert_eq!(d.pop_due(ms(1)), Some(1), "0 was dropped");
    }
}
