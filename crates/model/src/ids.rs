//! Identifiers and indices. Strings are parsed at the edge; inside shoal every
//! id is one of these newtypes.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// Position of a committed event in the cluster log. Index 0 is the empty log.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
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
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(transparent)]
pub struct Term(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
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
/// What State keeps of a command id once the command is applied: the first
/// 16 bytes of the id's SHA-256. Sixteen bytes inline instead of an id of up
/// to 128 in its own allocation, for the million outcomes a busy cluster
/// holds. SHA-256, not a faster hash, because ids are chosen by clients: one
/// that could make two ids collide could read or suppress another client's
/// result. JSON shows it as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandDigest(pub [u8; 16]);

impl CommandDigest {
    pub fn of(id: &CommandId) -> Self {
        use sha2::{Digest, Sha256};
        let full = Sha256::digest(id.0.as_bytes());
        let mut d = [0; 16];
        d.copy_from_slice(&full[..16]);
        CommandDigest(d)
    }
}

impl fmt::Display for CommandDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CommandDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandDigest({self})")
    }
}

impl std::str::FromStr for CommandDigest {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const BAD: &str = "a command digest is 32 hex digits";
        if s.len() != 32 || !s.is_ascii() {
            return Err(BAD);
        }
        let mut d = [0; 16];
        for (i, b) in d.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| BAD)?;
        }
        Ok(CommandDigest(d))
    }
}

impl Serialize for CommandDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for CommandDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(d).map(CommandDigest)
        }
    }
}

string_id!(
    /// A task's id (the id of the command that submitted it).
    TaskId,
    128
);

/// The numeric id Raft uses for a voter; assigned in State when a node joins,
/// so every replica maps node ids to Raft ids the same way.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
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
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_digest_is_16_bytes_on_the_wire_and_hex_in_json() {
        let d = CommandDigest::of(&CommandId::from("c1"));
        assert_ne!(d, CommandDigest::of(&CommandId::from("c2")));
        assert_eq!(postcard::to_allocvec(&d).unwrap().len(), 16);
        let back: CommandDigest =
            postcard::from_bytes(&postcard::to_allocvec(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json.len(), 34);
        assert_eq!(serde_json::from_str::<CommandDigest>(&json).unwrap(), d);
        for bad in ["\"abc\"", "\"zz0102030405060708090a0b0c0d0e0f\"", "[1,2]"] {
            assert!(serde_json::from_str::<CommandDigest>(bad).is_err(), "{bad}");
        }
    }
}
