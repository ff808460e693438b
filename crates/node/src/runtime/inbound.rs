//! What arrives from the network actor, turned into the core's inputs.
//! A frame must decode, and must name as its sender the peer that the
//! transport authenticated (one-to-one) or that signed it (gossip);
//! anything else is dropped and counted (invariant 9).

use shoal_net::{Addr, Incarnation, NetEvent, Peer};
use shoal_proto::node::Input;
use shoal_proto::wire::{self, Direct, Gossip};

#[derive(Debug)]
pub(super) enum Inbound {
    Input(Box<Input>),
    /// A frame that did not decode or lied about its sender.
    Bad(String),
    Listening(Addr),
    /// Another live process has this node's identity and started first.
    IdentityConflict {
        reporter: Peer,
        other: Incarnation,
    },
    /// Nothing for the core (connection events: liveness comes from
    /// heartbeats).
    Nothing,
}

pub(super) fn inbound(ev: NetEvent) -> Inbound {
    match ev {
        NetEvent::Direct { from, bytes } => match wire::decode::<Direct>(&bytes) {
            Ok(frame) if frame.from.0 == from.to_base58() => {
                Inbound::Input(Box::new(Input::Direct(frame)))
            }
            Ok(frame) => Inbound::Bad(format!(
                "a frame from {from} claims to come from {}",
                frame.from
            )),
            Err(e) => Inbound::Bad(format!("an undecodable frame from {from}: {e}")),
        },
        NetEvent::Gossip { source, bytes } => match wire::decode::<Gossip>(&bytes) {
            Ok(frame) if frame.from.0 == source.to_base58() => {
                Inbound::Input(Box::new(Input::Gossip(frame)))
            }
            Ok(frame) => Inbound::Bad(format!(
                "gossip signed by {source} claims to come from {}",
                frame.from
            )),
            Err(e) => Inbound::Bad(format!("undecodable gossip: {e}")),
        },
        NetEvent::Listening(a) => Inbound::Listening(a),
        NetEvent::IdentityConflict { reporter, other } => {
            Inbound::IdentityConflict { reporter, other }
        }
        NetEvent::Connected(_) | NetEvent::Disconnected(_) => Inbound::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::NodeId;
    use shoal_proto::wire::{FetchRange, Frame, PROTOCOL_VERSION};

    fn peer() -> Peer {
        shoal_net::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn frame<M: serde::Serialize>(from: &Peer, msg: M) -> Vec<u8> {
        wire::encode(&Frame {
            version: PROTOCOL_VERSION,
            cluster: None,
            from: NodeId(from.to_base58()),
            msg,
        })
        .unwrap()
    }

    fn direct(from: &Peer) -> Vec<u8> {
        let (from_idx, to) = (shoal_model::EventIdx(1), shoal_model::EventIdx(2));
        frame(from, Direct::FetchRange(FetchRange { from: from_idx, to }))
    }

    fn gossip(from: &Peer) -> Vec<u8> {
        frame(from, Gossip::Committed(vec![]))
    }

    #[test]
    fn a_frame_must_come_from_the_peer_it_names() {
        let (a, b) = (peer(), peer());
        let ok = inbound(NetEvent::Direct {
            from: a,
            bytes: direct(&a),
        });
        assert!(matches!(ok, Inbound::Input(i) if matches!(*i, Input::Direct(_))));
        let lie = inbound(NetEvent::Direct {
            from: b,
            bytes: direct(&a),
        });
        assert!(matches!(lie, Inbound::Bad(_)));
        let junk = inbound(NetEvent::Direct {
            from: a,
            bytes: vec![1, 2, 3],
        });
        assert!(matches!(junk, Inbound::Bad(_)));
        let forged = inbound(NetEvent::Gossip {
            source: b,
            bytes: gossip(&a),
        });
        assert!(matches!(forged, Inbound::Bad(_)));
        let signed = inbound(NetEvent::Gossip {
            source: a,
            bytes: gossip(&a),
        });
        assert!(matches!(signed, Inbound::Input(i) if matches!(*i, Input::Gossip(_))));
    }
}
