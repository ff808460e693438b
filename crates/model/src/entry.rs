//! `LogEntry`: the unit that is replicated, stored and fetched. It carries a
//! Raft entry as Raft wrote it, so a voter can restart from its own log, and
//! it decodes into an `Envelope` for `apply`.

use crate::event::{Envelope, Event, EVENT_FORMAT_VERSION};
use crate::ids::{EventIdx, Term};
use serde::{Deserialize, Serialize};

/// The kind of a Raft entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// `data` is an encoded event (empty for a new master's no-op).
    Normal,
    /// `data` is Raft's own conf-change record; `context` is the encoded
    /// `Event::Membership` it stands for.
    ConfChange,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub idx: EventIdx,
    pub term: Term,
    pub kind: EntryKind,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub context: Vec<u8>,
}

impl LogEntry {
    /// Bytes this entry takes on the wire and on disk, near enough for
    /// bounding batches.
    pub fn size_hint(&self) -> usize {
        24 + self.data.len() + self.context.len()
    }

    /// Decodes the event this entry carries.
    pub fn envelope(&self) -> Result<Envelope, DecodeError> {
        let bytes = match self.kind {
            EntryKind::Normal => &self.data,
            EntryKind::ConfChange => &self.context,
        };
        let event = if bytes.is_empty() {
            Event::Noop
        } else {
            decode_event(bytes)?
        };
        Ok(Envelope {
            idx: self.idx,
            term: self.term,
            event,
        })
    }
}

#[derive(Serialize)]
struct PayloadRef<'a> {
    version: u16,
    event: &'a Event,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event format version {found} is not readable by this node (reads {supported})")]
    Version { found: u16, supported: u16 },
    #[error("malformed event: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes an event, tagged with the format version.
pub fn encode_event(event: &Event) -> Vec<u8> {
    postcard::to_allocvec(&PayloadRef {
        version: EVENT_FORMAT_VERSION,
        event,
    })
    .expect("events serialize into a Vec")
}

pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    // The version is read first so a newer format is reported as such, not
    // as garbage.
    let (version, _) = postcard::take_from_bytes::<u16>(bytes)?;
    if version != EVENT_FORMAT_VERSION {
        return Err(DecodeError::Version {
            found: version,
            supported: EVENT_FORMAT_VERSION,
        });
    }
    let (_, event): (u16, Event) = postcard::from_bytes(bytes)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, CommandId, Op};

    #[test]
    fn events_round_trip_and_empty_data_is_noop() {
        let e = Event::Command {
            cmd: Command {
                id: CommandId::from("x"),
                op: Op::KvIncrBy {
                    key: "k".into(),
                    by: 3,
                },
            },
            at_ms: 7,
        };
        let entry = LogEntry {
            idx: EventIdx(5),
            term: Term(2),
            kind: EntryKind::Normal,
            data: encode_event(&e),
            context: vec![],
        };
        assert_eq!(entry.envelope().unwrap().event, e);
        let noop = LogEntry {
            data: vec![],
            ..entry
        };
        assert_eq!(noop.envelope().unwrap().event, Event::Noop);
    }

    #[test]
    fn unknown_versions_and_garbage_are_clear_errors() {
        let mut bytes = encode_event(&Event::Noop);
        bytes[0] = 9;
        assert!(matches!(
            decode_event(&bytes),
            Err(DecodeError::Version { found: 9, .. })
        ));
        assert!(matches!(
            decode_event(&[1, 0xff, 0xff]),
            Err(DecodeError::Malformed(_))
        ));
    }
}
