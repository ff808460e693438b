//! Identifiers and indices. Strings are parsed at the edge; inside shoal every
//! id is one of these newtypes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Position of a committed event in the cluster log. Index 0 is the empty log.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct EventIdx(pub u64);

impl EventIdx {
    pub const ZERO: EventIdx = EventIdx(0);

    pub fn next(self) -> EventIdx {
        EventIdx(self.0 + 1)
    }

    pub fn prev(self) -> EventIdx {
        EventIdx(self.0.saturating_sub(1))
    }
}

impl fmt::Display for EventIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A Raft term: at most one master per term.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Term(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Longest accepted textual form, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Parses an id at the edge: non-empty, bounded, printable.
            pub fn parse(s: &str) -> Result<Self, crate::InvalidId> {
                if s.is_empty() || s.len() > Self::MAX_LEN || s.chars().any(|c| c.is_control()) {
                    return Err(crate::InvalidId { kind: stringify!($name), max: Self::MAX_LEN });
                }
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

string_id!(
    /// A node's identity: the textual form of its persisted public key.
    NodeId,
    128
);
string_id!(
    /// A cluster's id, minted at bootstrap and persisted by every member.
    ClusterId,
    64
);
string_id!(
    /// A client-minted command id; a retried command carries the same id.
    CommandId,
    128
);
string_id!(
    /// A task's id (the id of the command that submitted it).
    TaskId,
    128
);

/// The numeric id Raft uses for a voter; assigned in State when a node joins,
/// so every replica maps node ids to Raft ids the same way.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct RaftId(pub u64);

impl fmt::Display for RaftId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A fencing token: the commit index of the grant it protects.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
