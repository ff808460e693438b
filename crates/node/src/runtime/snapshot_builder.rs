//! Encoding State into a snapshot off the event loop (invariant 4): State
//! is persistent maps, so the loop hands over a clone in O(1) and goes on
//! applying while a thread of its own encodes (and, if asked, saves), at
//! a lower CPU priority than the node's other work (`bulk`). A
//! snapshot received from a peer is saved as it came, with no encode. Once
//! saved, a snapshot is served from its file and its bytes leave memory.

use super::bulk;
use shoal_log::{encode_snapshot, SnapshotBytes, SnapshotStore};
use shoal_model::EventIdx;
use shoal_model::State;
use shoal_proto::node::Saved;
use shoal_proto::snapshot_transfer::{chunk_hashes, chunk_hashes_of, EncodedSnapshot};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

/// zstd level of every snapshot: fast, and the same bytes on every node.
pub(super) const LEVEL: i32 = 1;

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

    /// Encodes on a thread of its own, as bulk work; the result comes
    /// back on `done`.
    pub fn build(&self, state: State, save: bool, chunk_bytes: u32) {
        let this = self.clone();
        bulk::spawn("shoal-snapshot", move || {
            let (bytes, sha) = encode_snapshot(&state, LEVEL);
            let index = state.index();
            drop(state);
            let chunks = chunk_hashes(&bytes, chunk_bytes);
            let bytes: Arc<dyn SnapshotBytes> = if save {
                Arc::new(bytes)
            } else {
                this.spill(bytes)
            };
            let mut snap = EncodedSnapshot {
                index,
                bytes,
                sha256: sha,
                chunk_bytes,
                chunks,
            };
            let saved = if save {
                this.write(&mut snap)
            } else {
                Saved::NotAsked
            };
            let _ = this.done.blocking_send((snap, saved));
        });
    }

    /// A snapshot built only to serve is served from an unnamed file.
    fn spill(&self, bytes: Vec<u8>) -> Arc<dyn SnapshotBytes> {
        match self.store.spill(&bytes) {
            Ok(file) => Arc::new(file),
            Err(e) => {
                warn!(error = %e, "serving a snapshot from memory");
                Arc::new(bytes)
            }
        }
    }

    /// Saves a snapshot that arrived encoded (received and verified), as
    /// bulk work; the answer comes back on `done` as for `build`.
    pub fn save(&self, mut snap: EncodedSnapshot) {
        let this = self.clone();
        bulk::spawn("shoal-snapshot", move || {
            let saved = this.write(&mut snap);
            let _ = this.done.blocking_send((snap, saved));
        });
    }

    /// The local snapshot at `index` this node started from, to serve
    /// again: its chunks hashed from its file as bulk work, then handed
    /// back on `done` as `Saved::Loaded`. Where the file cannot be read,
    /// it is not served (a build serves instead, as before a restart).
    pub fn hold_saved(&self, index: EventIdx, chunk_bytes: u32) {
        let this = self.clone();
        bulk::spawn("shoal-snapshot", move || {
            let read = this.store.open_file(index).and_then(|file| {
                let sha256 = file.read_trailer()?;
                let chunks = chunk_hashes_of(&file, chunk_bytes)?;
                Ok(EncodedSnapshot {
                    index,
                    bytes: Arc::new(file),
                    sha256,
                    chunk_bytes,
                    chunks,
                })
            });
            match read {
                Ok(snap) => {
                    let _ = this.done.blocking_send((snap, Saved::Loaded));
                }
                Err(e) => warn!(error = %e, index = %index, "the saved snapshot is not served"),
            }
        });
    }

    /// Saves the snapshot and points it at its file.
    fn write(&self, snap: &mut EncodedSnapshot) -> Saved {
        match self
            .store
            .save(snap.index, snap.bytes.as_ref(), &snap.sha256)
        {
            Ok(()) => {
                match self.store.open_file(snap.index) {
                    Ok(file) => snap.bytes = Arc::new(file),
                    Err(e) => warn!(error = %e, "serving a saved snapshot from memory"),
                }
                Saved::Saved
            }
            Err(e) => {
                warn!(error = %e, "could not save a local snapshot");
                Saved::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::{Command, CommandId, Envelope, Event, EventIdx, Op, Term};

    /// The local snapshot a node started from comes back from its file as
    /// it was saved: its checksum, its bytes and the hash of each chunk.
    #[test]
    fn a_saved_snapshot_is_held_again_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let mut state = State::new();
        for i in 0..300 {
            let cmd = Command {
                id: CommandId(format!("c{i}")),
                op: Op::KvSet {
                    key: format!("k{i}"),
                    value: format!("v{i}"),
                },
            };
            let event = Event::Command { cmd, at_ms: 0 };
            let idx = EventIdx(i + 1);
            let term = Term(1);
            state.apply(&Envelope { idx, term, event }).unwrap();
        }
        let (bytes, sha) = encode_snapshot(&state, LEVEL);
        store.save(state.index(), &bytes, &sha).unwrap();
        let (done, mut rx) = mpsc::channel(1);
        let builder = SnapshotBuilder::new(store, done);
        builder.hold_saved(state.index(), 512);
        let (snap, saved) = rx.blocking_recv().unwrap();
        assert_eq!(saved, Saved::Loaded);
        assert_eq!(
            (snap.index, snap.sha256, snap.chunk_bytes),
            (state.index(), sha, 512)
        );
        assert_eq!(snap.chunks, chunk_hashes(&bytes, 512));
        assert!(snap.chunks.len() > 1);
        assert_eq!(snap.bytes.read_at(0, bytes.len()).unwrap(), bytes);
    }
}
