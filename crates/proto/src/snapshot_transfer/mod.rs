//! Snapshot transfer: a server that hands out chunks of one encoded
//! snapshot, and a receiver that pulls them with a few in flight, decodes
//! while they arrive, resumes after a lost chunk and verifies the result.
//!
//! A transfer is bound to a session id (minted by the receiver) and to the
//! node it asked; chunks from anyone else, or for another session, are
//! ignored. The server encodes off its event loop: it asks its shell to
//! build from a clone of State (O(1) with persistent maps) and serves
//! waiting requests once the bytes are ready. The latest snapshot is cached,
//! so joiners arriving together share one build.

mod receiver;
mod server;

pub use receiver::{ReceiveConfig, ReceiveEvent, SnapshotReceiver};
pub use server::{ServeAction, SnapshotServer};

use shoal_log::SnapshotBytes;
use shoal_model::EventIdx;
use std::sync::Arc;

/// An encoded snapshot, shared between the cache and the shell: its bytes
/// in memory, or in its file once the shell saved it.
#[derive(Clone, Debug)]
pub struct EncodedSnapshot {
    pub index: EventIdx,
    pub bytes: Arc<dyn SnapshotBytes>,
    pub sha256: [u8; 32],
}

#[cfg(test)]
mod tests;
