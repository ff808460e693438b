//! shoal's event model and replicated State.
//!
//! Everything here is pure: no I/O, no clock, no randomness. `State::apply`
//! is the only way State changes, it is total and deterministic, and it keeps
//! an incremental `state_hash` so replicas at the same index can be compared
//! at no cost. The sequencer, the replicas, the snapshot codec and the
//! simulator all build on these types. "Invariant N" in comments refers to
//! the list in `crates/proto/PROTOCOL.md`.

mod entry;
mod event;
mod hash;
mod ids;
mod leader;
mod ports;
mod state;
pub mod tree;

pub use entry::*;
pub use event::*;
pub use hash::StateHash;
pub use ids::*;
pub use leader::LeaderReason;
pub use ports::PortRange;
pub use state::*;

/// An id that failed to parse at the edge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: must be 1..={max} printable bytes")]
pub struct InvalidId {
    pub kind: &'static str,
    pub max: usize,
}

pub use tree::TreeMap;
