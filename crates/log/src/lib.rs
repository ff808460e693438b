//! shoal's storage: the durable log and the State snapshot codec.
//!
//! The log is a directory of append-only segment files. Every record has a
//! length and a CRC32; a torn or corrupt tail is cut on open with a warning.
//! Raft's hard state and entries live here, and so do the committed entries a
//! follower receives, so a restarted node resumes from its own disk: load the
//! newest local snapshot, replay the tail.
//!
//! A snapshot is State at one index, encoded as batches of sorted tuples and
//! compressed with zstd, with a SHA-256 over the whole file. It decodes
//! incrementally while the bytes stream in.

mod segment_log;
mod snapshot;
mod snapshot_bytes;
mod snapshot_legacy;
mod snapshot_store;

pub use segment_log::{
    DurableLog, HardState, LogConfig, LogError, LogReader, MembershipRecord, Recovery, SyncJob,
};
pub use snapshot::{
    decode_snapshot, encode_snapshot, SnapshotDecoder, SnapshotError, SnapshotHeader,
    SNAPSHOT_FORMAT_VERSION,
};
pub use snapshot_bytes::{SnapshotBytes, SnapshotFile};
pub use snapshot_store::{read_snapshot_file, SnapshotStore};
