//! The simulated network: every message is delayed by a random amount
//! within bounds, and may be lost or duplicated; cut links drop
//! everything. Deliveries to a node itself (wake-ups, finished snapshot
//! builds, run events) share the one queue, so virtual time has a single
//! order.

use super::runs::RunEvent;
use super::Sim;
use rand::Rng;
use shoal_model::NodeId;
use shoal_proto::snapshot_transfer::EncodedSnapshot;
use std::cmp::Reverse;
use std::time::Duration;

/// How the simulated network misbehaves.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    pub loss: f64,
    pub duplicate: f64,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// How long a log fsync takes, drawn in this range (the disk is
    /// modelled here with the network: both are the sim's latencies).
    pub min_fsync: Duration,
    pub max_fsync: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(3),
            min_fsync: Duration::from_micros(100),
            max_fsync: Duration::from_millis(4),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Payload {
    Direct(Vec<u8>),
    Gossip(Vec<u8>),
    /// The node asked to be woken; only its latest request counts.
    Wake(u64),
    SnapshotBuilt(EncodedSnapshot, bool),
    HostCapacity((u32, u64)),
    /// A log fsync the node started ended.
    LogSynced(u64),
    /// Output or end of a simulated run.
    Run(RunEvent),
}

#[derive(Debug)]
pub(crate) struct Delivery {
    pub to: NodeId,
    pub payload: Payload,
}

impl Sim {
    pub(crate) fn enqueue(&mut self, at: Duration, d: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.in_flight.insert(self.seq, d);
    }

    /// Sends one message over the network, as it misbehaves.
    pub(crate) fn transmit(&mut self, from: &NodeId, to: &NodeId, payload: impl Fn() -> Payload) {
        self.messages_sent += 1;
        if self.cut.contains(&(from.clone(), to.clone())) || self.rng.gen_bool(self.net.loss) {
            self.messages_dropped += 1;
            return;
        }
        *self.received.entry(to.clone()).or_default() += 1;
        let copies = if self.rng.gen_bool(self.net.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let span = (self.net.max_delay - self.net.min_delay).as_micros() as u64;
            let delay = self.net.min_delay + Duration::from_micros(self.rng.gen_range(0..=span));
            self.enqueue(
                self.now + delay,
                Delivery {
                    to: to.clone(),
                    payload: payload(),
                },
            );
        }
    }
}
