//! The records of a segment file and what replaying them rebuilds: the
//! log's bounds, hard state and membership, and where each entry is.
//!
//! A record is `[len: u32][crc32(payload): u32][payload]`, the payload a
//! postcard `Record`; anything else at a position is a torn or corrupt tail.

use super::{HardState, LogError, MembershipRecord};
use serde::{Deserialize, Serialize};
use shoal_model::{EventIdx, LogEntry};
use std::path::PathBuf;

const RECORD_HEADER_LEN: usize = 8;
/// Larger than any entry a node accepts; a length above it is corruption.
const MAX_RECORD_LEN: usize = 32 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Record {
    Entry(LogEntry),
    HardState(HardState),
    Membership(MembershipRecord),
    /// The log starts at this index; anything older was compacted into a
    /// snapshot.
    Floor(EventIdx),
}

/// Where a segment file's entries are.
#[derive(Debug)]
pub(super) struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    pub first: EventIdx,
    /// Offset and length of each entry record, for `first + i`.
    pub locs: Vec<(u64, u32)>,
}

impl Segment {
    pub fn last(&self) -> Option<EventIdx> {
        (!self.locs.is_empty()).then(|| EventIdx(self.first.0 + self.locs.len() as u64 - 1))
    }
}

pub(super) fn encode_record(rec: &Record, out: &mut Vec<u8>) -> Result<(), LogError> {
    let payload = postcard::to_allocvec(rec).expect("records serialize into a Vec");
    if payload.len() > MAX_RECORD_LEN {
        return Err(LogError::TooLarge(payload.len()));
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Parses the record at `pos`, or says why it is not a whole, valid record.
pub(super) fn parse_record(bytes: &[u8], pos: usize) -> Result<(Record, usize), String> {
    let rest = &bytes[pos..];
    if rest.len() < RECORD_HEADER_LEN {
        return Err(format!("torn record header ({} bytes)", rest.len()));
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len > MAX_RECORD_LEN {
        return Err(format!("record length {len} is impossible"));
    }
    if rest.len() < RECORD_HEADER_LEN + len {
        return Err(format!(
            "torn record: {} of {len} bytes",
            rest.len() - RECORD_HEADER_LEN
        ));
    }
    let payload = &rest[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".to_owned());
    }
    let rec = postcard::from_bytes(payload).map_err(|e| format!("undecodable record: {e}"))?;
    Ok((rec, RECORD_HEADER_LEN + len))
}

/// The log as the records on disk describe it.
#[derive(Debug)]
pub(super) struct Replay {
    pub first: EventIdx,
    pub last: EventIdx,
    pub hard_state: HardState,
    pub membership: MembershipRecord,
}

impl Default for Replay {
    fn default() -> Self {
        Replay {
            first: EventIdx(1),
            last: EventIdx(0),
            hard_state: HardState::default(),
            membership: MembershipRecord::default(),
        }
    }
}

impl Replay {
    pub fn replay(
        &mut self,
        rec: Record,
        done: &mut [Segment],
        seg: &mut Segment,
        offset: u64,
        len: u32,
    ) -> Result<(), String> {
        match rec {
            Record::HardState(hs) => self.hard_state = hs,
            Record::Membership(m) => self.membership = m,
            Record::Floor(f) => {
                if f > self.first {
                    self.first = f;
                }
                if self.last < f.prev() {
                    // Everything held is older than the floor.
                    self.last = f.prev();
                    for s in done.iter_mut() {
                        s.locs.clear();
                    }
                    seg.locs.clear();
                    seg.first = f;
                }
            }
            Record::Entry(e) => {
                if self.last < self.first && e.idx > self.first {
                    // The oldest retained entry of a compacted log.
                    self.first = e.idx;
                    self.last = e.idx.prev();
                }
                if e.idx > self.last.next() || e.idx < self.first {
                    return Err(format!("entry {} does not follow {}", e.idx, self.last));
                }
                if e.idx <= self.last {
                    for s in done.iter_mut() {
                        if s.first >= e.idx {
                            s.locs.clear();
                        } else {
                            s.locs.truncate((e.idx.0 - s.first.0) as usize);
                        }
                    }
                }
                if seg.locs.is_empty() {
                    seg.first = e.idx;
                } else if seg.first.0 + seg.locs.len() as u64 != e.idx.0 {
                    return Err(format!("entry {} breaks its segment's sequence", e.idx));
                }
                seg.locs.push((offset, len));
                self.last = e.idx;
            }
        }
        Ok(())
    }
}
