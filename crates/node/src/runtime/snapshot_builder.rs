//! Encoding State into a snapshot off the event loop (invariant 4): State
//! is persistent maps, so the loop hands over a clone in O(1) and goes on
//! applying while a blocking thread encodes (and, if asked, saves).

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
        let store = self.store.clone();
        let tx = self.done.clone();
        tokio::task::spawn_blocking(move || {
            let (bytes, sha) = encode_snapshot(&state, LEVEL);
            let saved = match save {
                false => Saved::NotAsked,
                true => match store.save(state.index(), &bytes, &sha) {
                    Ok(()) => Saved::Saved,
                    Err(e) => {
                        warn!(error = %e, "could not save a local snapshot");
                        Saved::Failed
                    }
                },
            };
            let snap = EncodedSnapshot {
                index: state.index(),
                bytes: Arc::new(bytes),
                sha256: sha,
            };
            let _ = tx.blocking_send((snap, saved));
        });
    }
}
