//! Encoding State into a snapshot off the event loop (invariant 4): State
//! is persistent maps, so the loop hands over a clone in O(1) and goes on
//! applying while a blocking thread encodes (and, if asked, saves). A
//! snapshot received from a peer is saved as it came, with no encode.

use shoal_log::{encode_snapshot, SnapshotStore};
use shoal_model::State;
use shoal_proto::node::Saved;
use shoal_proto::snapshot_transfer::EncodedSnapshot;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

/// zstd level of every snapshot: fast, and the same bytes on every node.
const LEVEL: i32 = 1;

#[derive(Clone, Debug)]
pub(super) struct SnapshotBuilder {
    store: Arc<SnapshotStore>,
    done: mpsc::Sender<(EncodedSnapshot, Saved)>,
}

impl SnapshotBuilder {
    pub fn new(store: SnapshotStore, done: mpsc::Sender<(EncodedSnapshot, Saved)>) -> Self {
        SnapshotBuilder {
            store: Arc::new(store),
            done,
        }
    }

    /// Encodes on a blocking thread; the result comes back on `done`.
    pub fn build(&self, state: State, save: bool) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let (bytes, sha) = encode_snapshot(&state, LEVEL);
            let snap = EncodedSnapshot {
                index: state.index(),
                bytes: Arc::new(bytes),
                sha256: sha,
            };
            let saved = match save {
                false => Saved::NotAsked,
                true => this.write(&snap),
            };
            let _ = this.done.blocking_send((snap, saved));
        });
    }

    /// Saves a snapshot that arrived encoded (received and verified) on a
    /// blocking thread; the answer comes back on `done` as for `build`.
    pub fn save(&self, snap: EncodedSnapshot) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let saved = this.write(&snap);
            let _ = this.done.blocking_send((snap, saved));
        });
    }

    fn write(&self, snap: &EncodedSnapshot) -> Saved {
        match self.store.save(snap.index, &snap.bytes, &snap.sha256) {
            Ok(()) => Saved::Saved,
            Err(e) => {
                warn!(error = %e, "could not save a local snapshot");
                Saved::Failed
            }
        }
    }
}
