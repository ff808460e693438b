//! Snapshot transfer: a server that offers one encoded snapshot and hands
//! out its chunks, and a receiver that pulls the chunks of one snapshot
//! from several servers at once, checks each, decodes while they arrive
//! and verifies the result.
//!
//! A receiver asks on gossip (`Gossip::SnapshotWanted`); every replica
//! that holds a snapshot past what it has, or (a Raft member) can make
//! one, answers one-to-one with an offer. Encodings are deterministic, so
//! replicas at the same snapshot point offer the same bytes: the receiver
//! takes the offer a trusted node vouched for, and every offer equal to it
//! as a source. A source that sends a chunk whose hash is not the offer's
//! is dropped; one that dies or stalls leaves its chunks to the others.
//!
//! The server encodes off its event loop: it asks its shell to build from
//! a clone of State (O(1) with persistent maps) and makes its offers once
//! the bytes are ready. The latest build is cached, so every receiver of
//! one snapshot point shares one build.

mod receiver;
mod server;

pub use receiver::{ReceiveConfig, ReceiveEvent, SnapshotReceiver};

/// How far a snapshot download has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes received in order (decoded).
    pub received: u64,
    pub total: u64,
    /// State entries decoded so far.
    pub entries: u64,
}
pub use server::{ChunkRead, Point, ServeAction, SnapshotServer};

use crate::wire::SnapshotOffer;
use sha2::{Digest, Sha256};
use shoal_log::SnapshotBytes;
use shoal_model::EventIdx;
use std::sync::Arc;

/// An encoded snapshot, shared between the cache and the shell: its bytes
/// in memory, or in its file once the shell saved it, with the hash of
/// each chunk.
#[derive(Clone, Debug)]
pub struct EncodedSnapshot {
    pub index: EventIdx,
    pub bytes: Arc<dyn SnapshotBytes>,
    pub sha256: [u8; 32],
    pub chunk_bytes: u32,
    pub chunks: Arc<[[u8; 32]]>,
}

impl EncodedSnapshot {
    /// Bytes just encoded, cut into chunks of `chunk_bytes` and hashed.
    pub fn new(index: EventIdx, bytes: Vec<u8>, sha256: [u8; 32], chunk_bytes: u32) -> Self {
        EncodedSnapshot {
            index,
            chunks: chunk_hashes(&bytes, chunk_bytes),
            bytes: Arc::new(bytes),
            sha256,
            chunk_bytes,
        }
    }

    /// The offer of these bytes.
    pub fn offer(&self, session: u64, busy: u32) -> SnapshotOffer {
        SnapshotOffer {
            session,
            index: self.index,
            total_len: self.bytes.len(),
            sha256: self.sha256,
            chunk_bytes: self.chunk_bytes,
            chunks: self.chunks.to_vec(),
            busy,
        }
    }
}

/// The hash of each chunk of snapshot bytes that may be in a file, read
/// a chunk at a time.
pub fn chunk_hashes_of(
    bytes: &dyn SnapshotBytes,
    chunk_bytes: u32,
) -> std::io::Result<Arc<[[u8; 32]]>> {
    let step = chunk_bytes.max(1);
    (0..bytes.len().div_ceil(u64::from(step)))
        .map(|i| {
            let chunk = bytes.read_at(i * u64::from(step), step as usize)?;
            Ok(Sha256::digest(&chunk).into())
        })
        .collect()
}

/// The SHA-256 of each `chunk_bytes` piece of `bytes`, in order.
pub fn chunk_hashes(bytes: &[u8], chunk_bytes: u32) -> Arc<[[u8; 32]]> {
    bytes
        .chunks(chunk_bytes.max(1) as usize)
        .map(|c| Sha256::digest(c).into())
        .collect()
}

#[cfg(test)]
mod tests;
