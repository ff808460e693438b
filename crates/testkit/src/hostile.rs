//! Forged messages: a test makes a node send frames of its choosing, in
//! its own name, beside what its (honest) core sends. Honest nodes then
//! refuse and count what they receive, so the check that no correct
//! node's message is refused is turned off.

use super::network::Payload;
use super::Sim;
use shoal_model::NodeId;
use shoal_proto::wire::{self, Direct, Frame, Gossip, PROTOCOL_VERSION};

impl Sim {
    /// From now on some node misbehaves: refusals are expected.
    pub fn expect_refusals(&mut self) {
        self.refusals_expected = true;
    }

    fn forged<M>(&self, from: &NodeId, msg: M) -> Frame<M> {
        Frame {
            version: PROTOCOL_VERSION,
            cluster: self.node(from).and_then(|n| n.cluster().cloned()),
            from: from.clone(),
            msg,
        }
    }

    /// `from` sends `msg` to `to`, one-to-one.
    pub fn forge_direct(&mut self, from: &NodeId, to: &NodeId, msg: Direct) {
        self.expect_refusals();
        let bytes = wire::encode(&self.forged(from, msg)).expect("a forged frame encodes");
        self.transmit(from, to, || Payload::Direct(bytes.clone()));
    }

    /// `from` broadcasts `msg`.
    pub fn forge_gossip(&mut self, from: &NodeId, msg: Gossip) {
        self.expect_refusals();
        let bytes = wire::encode(&self.forged(from, msg)).expect("a forged frame encodes");
        let others: Vec<NodeId> = self.nodes.keys().filter(|n| *n != from).cloned().collect();
        for to in others {
            self.transmit(from, &to, || Payload::Gossip(bytes.clone()));
        }
    }
}
