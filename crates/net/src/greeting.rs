//! Greetings signed with the node's identity key. Every process greets its
//! peers once a second with its incarnation and the time; a judge that
//! hears two live incarnations of one identity tells the later one so,
//! forwarding the earlier one's latest greeting as evidence.
//!
//! The evidence is what makes the verdict believable: only a holder of
//! this node's private key can sign a greeting in its name, so a peer
//! cannot invent another incarnation of us; and the greeting must have
//! been sent after this process started, so an old greeting of an earlier
//! run of this node cannot be replayed to stop a restarted one.

use crate::identity_watch::Incarnation;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;

/// Bytes a greeting takes on the wire: incarnation, send time, signature.
pub const GREETING_LEN: usize = 16 + 8 + SIGNATURE_LEN;
const SIGNATURE_LEN: usize = 64;
const CONTEXT: &[u8] = b"shoal/hello/2";
/// How far ahead of this node's clock a greeting's time may be.
const MAX_CLOCK_SKEW_MS: u64 = 60_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    pub incarnation: Incarnation,
    /// The sender's wall clock when it sent this.
    pub sent_ms: u64,
    pub signature: [u8; SIGNATURE_LEN],
}

fn signed_bytes(peer: &PeerId, inc: &Incarnation, sent_ms: u64) -> Vec<u8> {
    let mut b = CONTEXT.to_vec();
    b.extend_from_slice(&peer.to_bytes());
    b.extend_from_slice(&inc.nonce.to_le_bytes());
    b.extend_from_slice(&inc.started_ms.to_le_bytes());
    b.extend_from_slice(&sent_ms.to_le_bytes());
    b
}

/// The public key a peer id carries (ed25519 ids carry it whole).
pub(crate) fn public_key(peer: &PeerId) -> Option<PublicKey> {
    let mh: libp2p::multiaddr::multihash::Multihash<64> = (*peer).into();
    (mh.code() == 0)
        .then(|| PublicKey::try_decode_protobuf(mh.digest()).ok())
        .flatten()
}

impl Greeting {
    /// A greeting from the holder of `key`. Signing with an ed25519 key
    /// cannot fail; a key that could gets an empty signature, which no
    /// one believes.
    pub fn sign(key: &Keypair, incarnation: Incarnation, sent_ms: u64) -> Greeting {
        let peer = key.public().to_peer_id();
        let sig = key
            .sign(&signed_bytes(&peer, &incarnation, sent_ms))
            .unwrap_or_default();
        let mut signature = [0u8; SIGNATURE_LEN];
        if sig.len() == SIGNATURE_LEN {
            signature.copy_from_slice(&sig);
        }
        Greeting {
            incarnation,
            sent_ms,
            signature,
        }
    }

    /// Whether the holder of `peer`'s key signed this.
    pub fn signed_by(&self, peer: &PeerId) -> bool {
        public_key(peer).is_some_and(|k| {
            k.verify(
                &signed_bytes(peer, &self.incarnation, self.sent_ms),
                &self.signature,
            )
        })
    }

    pub fn encode(&self) -> [u8; GREETING_LEN] {
        let mut b = [0u8; GREETING_LEN];
        b[..8].copy_from_slice(&self.incarnation.nonce.to_le_bytes());
        b[8..16].copy_from_slice(&self.incarnation.started_ms.to_le_bytes());
        b[16..24].copy_from_slice(&self.sent_ms.to_le_bytes());
        b[24..].copy_from_slice(&self.signature);
        b
    }

    pub fn decode(b: &[u8; GREETING_LEN]) -> Greeting {
        let word = |r: std::ops::Range<usize>| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[r]);
            u64::from_le_bytes(w)
        };
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&b[24..]);
        Greeting {
            incarnation: Incarnation {
                nonce: word(0..8),
                started_ms: word(8..16),
            },
            sent_ms: word(16..24),
            signature,
        }
    }
}

/// Whether a verdict that this process is a duplicate, with `evidence`,
/// is to be believed: the evidence is signed with this node's own key, by
/// another incarnation that started first, and was sent after this one
/// started (so it is alive now, not a replay of an earlier run).
pub fn believe(
    evidence: &Greeting,
    me: &PeerId,
    mine: &Incarnation,
    now_ms: u64,
) -> Result<(), String> {
    if !evidence.signed_by(me) {
        return Err("the evidence is not signed with this node's key".into());
    }
    let other = &evidence.incarnation;
    if other == mine {
        return Err("the evidence is this process's own greeting".into());
    }
    if !mine.is_later_than(other) {
        return Err("the other process started after this one".into());
    }
    if evidence.sent_ms <= mine.started_ms {
        return Err("the evidence was sent before this process started".into());
    }
    if evidence.sent_ms > now_ms + MAX_CLOCK_SKEW_MS {
        return Err("the evidence is from the future".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(nonce: u64, started_ms: u64) -> Incarnation {
        Incarnation { nonce, started_ms }
    }

    #[test]
    fn a_greeting_round_trips_and_only_its_signer_verifies() {
        let key = Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let g = Greeting::sign(&key, inc(1, 1000), 2000);
        assert!(g.signed_by(&me));
        assert_eq!(Greeting::decode(&g.encode()), g);
        let stranger = Keypair::generate_ed25519().public().to_peer_id();
        assert!(!g.signed_by(&stranger));
        let mut forged = g.clone();
        forged.sent_ms += 1;
        assert!(
            !forged.signed_by(&me),
            "a changed greeting no longer verifies"
        );
    }

    #[test]
    fn only_checkable_evidence_of_a_live_earlier_process_is_believed() {
        let key = Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let mine = inc(5, 10_000);
        let other = inc(9, 5_000);
        let now = 20_000;
        // The clone started first and greeted after this process started.
        assert!(believe(&Greeting::sign(&key, other, 12_000), &me, &mine, now).is_ok());
        // Anyone else's signature.
        let hostile = Keypair::generate_ed25519();
        assert!(believe(&Greeting::sign(&hostile, other, 12_000), &me, &mine, now).is_err());
        // An earlier run's greeting, replayed after a restart.
        assert!(believe(&Greeting::sign(&key, other, 9_000), &me, &mine, now).is_err());
        // A process that started later is the one to go, not this one.
        assert!(believe(
            &Greeting::sign(&key, inc(9, 15_000), 16_000),
            &me,
            &mine,
            now
        )
        .is_err());
        // This process's own greeting sent back.
        assert!(believe(&Greeting::sign(&key, mine, 12_000), &me, &mine, now).is_err());
        // Far in the future.
        assert!(believe(
            &Greeting::sign(&key, other, now + 3_600_000),
            &me,
            &mine,
            now
        )
        .is_err());
    }
}
