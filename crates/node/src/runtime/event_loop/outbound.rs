//! What the loop sends: one-to-one frames, range replies and snapshot
//! chunks (read and encoded off the loop by a `ReadServer`), gossip, and
//! dials to members.
//! Snapshot chunks and range replies go through the bulk pacer.

use super::EventLoop;
use shoal_model::NodeId;
use shoal_net::{Addr, NetCommand, Peer, Topic};
use shoal_proto::wire::{self, Direct, Frame, Gossip};
use tracing::{error, warn};

impl EventLoop {
    /// Where a node listens, from State or from its heartbeats.
    pub(super) fn addr_of(&mut self, node: &NodeId) -> Option<Addr> {
        let text = match self.node.state().nodes().get(node) {
            Some(n) if !n.addr.is_empty() => n.addr.clone(),
            _ => {
                self.node
                    .peer_summaries()
                    .into_iter()
                    .find(|p| &p.node == node)?
                    .addr
            }
        };
        self.book.addr(&text)
    }

    pub(super) fn send(&mut self, to: &NodeId, frame: &Frame<Direct>) {
        let Some((peer, addr)) = self.target(to) else {
            return;
        };
        match wire::encode(frame) {
            Ok(bytes) => {
                let cmd = NetCommand::Send {
                    to: peer,
                    addr,
                    bytes,
                };
                if !self.net.try_send(cmd) {
                    self.send_overflow += 1;
                }
            }
            Err(e) => error!(error = %e, "could not encode a message"),
        }
    }

    /// What hands `to` a range reply or a snapshot chunk once a
    /// `ReadServer` has read and encoded it off the loop, through the bulk
    /// pacer: it holds a handle of its own to the network. None for a
    /// node whose peer id is not known, counted.
    pub(super) fn bulk_sender(
        &mut self,
        to: &NodeId,
    ) -> Option<impl FnOnce(Vec<u8>) -> bool + Send + 'static> {
        let (peer, addr) = self.target(to)?;
        let bulk = self.bulk.clone();
        Some(move |bytes: Vec<u8>| {
            let len = bytes.len() as u64;
            let cmd = NetCommand::Send {
                to: peer,
                addr,
                bytes,
            };
            bulk.send(cmd, len)
        })
    }

    /// The peer id and address to send `to` at; none for a node whose
    /// peer id is not known, counted.
    fn target(&mut self, to: &NodeId) -> Option<(Peer, Option<Addr>)> {
        let Some(peer) = self.book.peer(to) else {
            self.bad_frames += 1;
            return None;
        };
        Some((peer, self.addr_of(to)))
    }

    pub(super) fn broadcast(&mut self, frame: &Frame<Gossip>) {
        let topic = match frame.msg {
            Gossip::Committed(_) => Topic::Committed,
            Gossip::Transient(_) => Topic::Transient,
            Gossip::SnapshotWanted { .. } => Topic::Snapshot,
        };
        match wire::encode(frame) {
            Ok(bytes) => {
                if !self.net.try_send(NetCommand::Publish { topic, bytes }) {
                    self.send_overflow += 1;
                }
            }
            Err(e) => error!(error = %e, "could not encode a broadcast"),
        }
    }

    /// The members' addresses: the actor keeps each connected (and
    /// redials it when it drops), and those it kept before no longer.
    pub(super) fn keep(&mut self, texts: &[String]) {
        let mut addrs = Vec::with_capacity(texts.len());
        for text in texts {
            match self.book.addr(text) {
                Some(a) => addrs.push(a),
                None => warn!(addr = %text, "a member's address does not parse"),
            }
        }
        if !self.net.try_send(NetCommand::Keep(addrs)) {
            warn!("the network actor is saturated: the members to keep were not passed on");
        }
    }
}
