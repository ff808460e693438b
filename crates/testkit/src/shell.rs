//! A node's outputs performed as its shell would: frames encoded and
//! put on the simulated network, wake-ups, snapshots built and saved,
//! fsyncs that take a drawn time, runs started and stopped.

use super::network::{Delivery, Payload};
use super::{Sim, HOST_CAPACITY};
use rand::Rng;
use shoal_model::{NodeId, TaskId};
use shoal_proto::node::{Output, RangeRead};
use shoal_proto::snapshot_transfer::ChunkRead;
use shoal_proto::wire::{self, Direct, Frame};
use std::time::Duration;

impl Sim {
    /// Schedules a delivery from a node to itself.
    pub(super) fn deliver_to_self(&mut self, id: &NodeId, at: Duration, payload: Payload) {
        let d = Delivery {
            to: id.clone(),
            payload,
        };
        self.enqueue(at, d);
    }

    fn send(&mut self, from: &NodeId, to: &NodeId, frame: &Frame<Direct>) {
        let bytes = wire::encode(frame).unwrap_or_else(|e| {
            panic!("seed {}: {from} sent an unencodable frame: {e}", self.seed)
        });
        if self.nodes.contains_key(to) {
            self.transmit(from, to, || Payload::Direct(bytes.clone()));
        }
    }

    pub(super) fn outputs(&mut self, from: NodeId, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Send { to, frame } => self.send(&from, &to, &frame),
                Output::SendRange { to, frame } => {
                    self.send(&from, &to, &frame.map(RangeRead::reply))
                }
                Output::SendChunk { to, frame } => {
                    self.send(&from, &to, &frame.map(ChunkRead::reply))
                }
                Output::Broadcast(frame) => {
                    let bytes = wire::encode(&frame).unwrap_or_else(|e| {
                        panic!(
                            "seed {}: {from} broadcast an unencodable frame: {e}",
                            self.seed
                        )
                    });
                    let committed = matches!(frame.msg, wire::Gossip::Committed(_));
                    if committed {
                        *self.committed_gossip.entry(from.clone()).or_default() += 1;
                    }
                    let others: Vec<NodeId> = self
                        .nodes
                        .iter()
                        .filter(|(n, sn)| **n != from && (sn.follows_committed || !committed))
                        .map(|(n, _)| n.clone())
                        .collect();
                    for to in others {
                        self.transmit(&from, &to, || Payload::Gossip(bytes.clone()));
                    }
                }
                Output::Reply { to, reply } => {
                    self.replies.insert(to, reply);
                }
                Output::Wake { at } => {
                    let sn = self.nodes.get_mut(&from).expect("known node");
                    sn.wake += 1;
                    let generation = sn.wake;
                    self.deliver_to_self(&from, at, Payload::Wake(generation));
                }
                Output::BuildSnapshot {
                    state,
                    save,
                    chunk_bytes,
                } => {
                    let snap = crate::encoded_snapshot(&state, chunk_bytes);
                    if save {
                        self.nodes.get_mut(&from).expect("known node").disk.snapshot =
                            Some((snap.bytes.read_all().expect("bytes in memory"), snap.sha256));
                    } else {
                        *self.serve_builds.entry(from.clone()).or_default() += 1;
                    }
                    let at = self.now + Duration::from_millis(5);
                    self.deliver_to_self(&from, at, Payload::SnapshotBuilt(snap, save));
                }
                Output::SaveSnapshot { snap } => {
                    self.nodes.get_mut(&from).expect("known node").disk.snapshot =
                        Some((snap.bytes.read_all().expect("bytes in memory"), snap.sha256));
                    let at = self.now + Duration::from_millis(5);
                    self.deliver_to_self(&from, at, Payload::SnapshotBuilt(snap, true));
                }
                Output::SyncLog(job) => {
                    let span = (self.net.max_fsync - self.net.min_fsync).as_micros() as u64;
                    let took = Duration::from_micros(self.rng.gen_range(0..=span));
                    let at = self.now + self.net.min_fsync + took;
                    self.deliver_to_self(&from, at, Payload::LogSynced(job.id()));
                }
                Output::ClusterAdopted(c) => {
                    self.nodes.get_mut(&from).expect("known node").disk.cluster = Some(c);
                }
                Output::FollowCommitted(on) => {
                    self.nodes
                        .get_mut(&from)
                        .expect("known node")
                        .follows_committed = on;
                }
                Output::ClusterGivenUp(_) => {
                    self.nodes.get_mut(&from).expect("known node").disk.cluster = None;
                }
                Output::MeasureHost { .. } => {
                    let at = self.now + Duration::from_millis(1);
                    self.deliver_to_self(&from, at, Payload::HostCapacity(HOST_CAPACITY));
                }
                Output::CatchUp(p) => {
                    self.catch_up.insert(from.clone(), (p.received, p.total));
                }
                Output::Keep(_) | Output::Reconnect(_) | Output::SnapshotInstalled { .. } => {}
                Output::StartRun(run) => {
                    self.start_run(&from, run.task, run.token, run.attempt, &run.spec.runner)
                }
                Output::StartReplica(r) => {
                    let name = TaskId(format!("deploy:{}/{}", r.deployment, r.replica));
                    self.start_run(&from, name, r.token, r.restarts + 1, &r.spec.runner);
                }
                Output::StopRun { token, reason } => self.stop_run(&from, token, reason),
                Output::TaskOutput(chunk) => {
                    self.task_output
                        .entry(from.clone())
                        .or_default()
                        .push(chunk);
                }
                Output::Fatal(why) => {
                    let sn = self.nodes.get_mut(&from).expect("known node");
                    sn.fatal = Some(why);
                    self.crash(&from);
                }
            }
        }
    }
}
