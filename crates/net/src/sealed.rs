//! Gossip signed by shoal rather than by gossipsub, so that a node checks
//! each message once however many peers relay it to it.
//!
//! gossipsub checks its own signatures as it reads each copy, before the
//! behaviour drops copies it has seen: in a mesh of degree D a node checked
//! every message about D times, and an ed25519 check costs tens of
//! microseconds. Here gossipsub carries messages without author or
//! signature of its own (`ValidationMode::Anonymous`, ids hashed from the
//! whole message) and holds each new one until the actor has checked the
//! signature inside it (`validate_messages`). A copy seen before is
//! dropped by its id unchecked; a message whose signature fails is
//! rejected, relayed to no one, and counted.
//!
//! A sealed message, in order: a version byte; the publisher's peer id (a
//! length byte, then the id); a sequence number (8 bytes, big-endian), so
//! that two equal payloads are two messages; an ed25519 signature (64
//! bytes) over `CONTEXT`, the topic, a zero byte, the peer id, the
//! sequence number and the payload; then the payload.

use crate::greeting::public_key;
use libp2p::gossipsub::{Message, MessageId};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const CONTEXT: &[u8] = b"shoal/gossip/1";
const SIGNATURE_LEN: usize = 64;
/// A peer id takes at most this many bytes (a multihash of 64 bytes).
const MAX_PEER_LEN: usize = 2 + 64;

/// Why a gossip message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsealed {
    #[error("gossip of an unknown format (version {0})")]
    Version(u8),
    #[error("gossip cut short")]
    Short,
    #[error("gossip names no valid peer id")]
    Peer,
    #[error("gossip from {0} not signed by it")]
    Signature(PeerId),
}

/// The bytes the publisher signs.
fn signed_bytes(topic: &str, peer: &[u8], seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut b =
        Vec::with_capacity(CONTEXT.len() + topic.len() + 1 + peer.len() + 8 + payload.len());
    b.extend_from_slice(CONTEXT);
    b.extend_from_slice(topic.as_bytes());
    b.push(0);
    b.extend_from_slice(peer);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// `payload`, signed by the holder of `key` for `topic`. Signing with an
/// ed25519 key cannot fail; a key that could gets an empty signature,
/// which no one accepts.
pub fn seal(key: &Keypair, topic: &str, seq: u64, payload: &[u8]) -> Vec<u8> {
    let peer = key.public().to_peer_id().to_bytes();
    let mut signature = key
        .sign(&signed_bytes(topic, &peer, seq, payload))
        .unwrap_or_default();
    signature.resize(SIGNATURE_LEN, 0);
    let mut b = Vec::with_capacity(2 + peer.len() + 8 + SIGNATURE_LEN + payload.len());
    b.push(VERSION);
    b.push(peer.len() as u8);
    b.extend_from_slice(&peer);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&signature);
    b.extend_from_slice(payload);
    b
}

/// The publisher and payload of a sealed message on `topic`, if its
/// signature holds (the payload is `bytes` past the seal).
pub fn open(topic: &str, mut bytes: Vec<u8>) -> Result<(PeerId, Vec<u8>), Unsealed> {
    let (peer, payload) = check(topic, &bytes)?;
    let header = bytes.len() - payload.len();
    bytes.drain(..header);
    Ok((peer, bytes))
}

/// The publisher and where the payload starts, if the seal holds.
fn check<'a>(topic: &str, bytes: &'a [u8]) -> Result<(PeerId, &'a [u8]), Unsealed> {
    let (&version, rest) = bytes.split_first().ok_or(Unsealed::Short)?;
    if version != VERSION {
        return Err(Unsealed::Version(version));
    }
    let (&len, rest) = rest.split_first().ok_or(Unsealed::Short)?;
    let len = len as usize;
    if len > MAX_PEER_LEN {
        return Err(Unsealed::Peer);
    }
    if rest.len() < len + 8 + SIGNATURE_LEN {
        return Err(Unsealed::Short);
    }
    let (peer_bytes, rest) = rest.split_at(len);
    let (seq, rest) = rest.split_at(8);
    let (signature, payload) = rest.split_at(SIGNATURE_LEN);
    let peer = PeerId::from_bytes(peer_bytes).map_err(|_| Unsealed::Peer)?;
    let seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
    let key = public_key(&peer).ok_or(Unsealed::Peer)?;
    if !key.verify(&signed_bytes(topic, peer_bytes, seq, payload), signature) {
        return Err(Unsealed::Signature(peer));
    }
    Ok((peer, payload))
}

/// The first sequence number a node seals with: the wall clock in
/// nanoseconds, so a restarted node does not repeat a number its peers
/// may still remember (the next is one more each time).
pub fn first_seq() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() as u64
}

/// A message's gossip id: a hash of all of its bytes, signature included,
/// so a forged copy can never take the id of the message it imitates.
pub fn message_id(m: &Message) -> MessageId {
    MessageId::new(&Sha256::digest(&m.data)[..20])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Keypair {
        Keypair::generate_ed25519()
    }

    #[test]
    fn a_sealed_message_opens_to_its_publisher_and_payload() {
        let k = key();
        let sealed = seal(&k, "t", 7, b"hello");
        let (peer, payload) = open("t", sealed.clone()).unwrap();
        assert_eq!(peer, k.public().to_peer_id());
        assert_eq!(payload, b"hello");
        assert_ne!(
            seal(&k, "t", 8, b"hello"),
            sealed,
            "the sequence makes it new"
        );
    }

    #[test]
    fn anything_changed_or_cut_is_refused() {
        let k = key();
        let sealed = seal(&k, "t", 7, b"hello");
        assert!(
            matches!(open("u", sealed.clone()), Err(Unsealed::Signature(_))),
            "another topic"
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(open("t", bad).is_err(), "byte {i} flipped");
        }
        for n in 0..sealed.len() {
            assert!(open("t", sealed[..n].to_vec()).is_err(), "cut at {n}");
        }
        assert_eq!(open("t", vec![2]), Err(Unsealed::Version(2)));
        assert_eq!(open("t", vec![]), Err(Unsealed::Short));
    }

    #[test]
    fn a_payload_signed_by_one_peer_cannot_be_claimed_by_another() {
        let (a, b) = (key(), key());
        let sealed = seal(&a, "t", 1, b"x");
        // b's id put in place of a's: same length, a's signature.
        let (ida, idb) = (
            a.public().to_peer_id().to_bytes(),
            b.public().to_peer_id().to_bytes(),
        );
        assert_eq!(ida.len(), idb.len());
        let mut forged = sealed.clone();
        forged[2..2 + idb.len()].copy_from_slice(&idb);
        assert_eq!(
            open("t", forged),
            Err(Unsealed::Signature(b.public().to_peer_id()))
        );
    }

    #[test]
    fn ids_differ_for_any_difference_in_the_bytes() {
        let k = key();
        let m = |data: Vec<u8>| Message {
            source: None,
            data,
            sequence_number: None,
            topic: libp2p::gossipsub::TopicHash::from_raw("t"),
        };
        let a = seal(&k, "t", 1, b"x");
        let mut b = a.clone();
        *b.last_mut().unwrap() ^= 1;
        assert_eq!(message_id(&m(a.clone())), message_id(&m(a.clone())));
        assert_ne!(message_id(&m(a)), message_id(&m(b)));
    }
}
