//! Reading entries back: by the log itself, and by a `LogReader` on
//! another thread while the log goes on writing.
//!
//! Where each entry is lives in an `Index` that the writer and its readers
//! share. A reader holds its lock only to look up a run of entries, then
//! reads the file without it. It sees entries once they are written to
//! the file (`written`), never ones still in the writer's buffer. A
//! segment deleted under it (compaction) reads as compacted; an unlinked
//! file it already opened stays readable.

use super::records::{parse_record, Record, Segment};
use super::LogError;
use shoal_model::{EventIdx, LogEntry};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Where the log's entries are.
#[derive(Debug)]
pub(super) struct Index {
    pub segments: Vec<Segment>,
    /// The oldest entry the log retains.
    pub first: EventIdx,
    /// The newest entry whose record is in its file.
    pub written: EventIdx,
}

impl Index {
    pub fn next_seq(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.seq + 1)
    }

    /// The bytes of the entry records after `idx`, or `None` when the log
    /// no longer holds all of them (compacted).
    pub fn bytes_after(&self, idx: EventIdx) -> Option<u64> {
        if idx.next() < self.first {
            return None;
        }
        let mut bytes = 0;
        for seg in &self.segments {
            let Some(seg_last) = seg.last() else {
                continue;
            };
            let from = seg.first.max(idx.next());
            if from > seg_last {
                continue;
            }
            let (start, _) = seg.locs[(from.0 - seg.first.0) as usize];
            let (end, len) = seg.locs[(seg_last.0 - seg.first.0) as usize];
            bytes += end + u64::from(len) - start;
        }
        Some(bytes)
    }

    /// The run of entries from `idx` (at most to `to`, about `max_bytes`)
    /// that lies in one segment.
    fn run(&self, idx: EventIdx, to: EventIdx, max_bytes: usize) -> Option<Run> {
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.first <= idx && s.last().is_some_and(|l| l >= idx))?;
        let last_here = seg.last()?.min(to);
        let i0 = (idx.0 - seg.first.0) as usize;
        let i1 = (last_here.0 - seg.first.0) as usize;
        let mut offsets = Vec::new();
        let mut bytes = 0usize;
        for &(off, len) in &seg.locs[i0..=i1] {
            offsets.push(off);
            bytes += len as usize;
            if bytes >= max_bytes {
                break;
            }
        }
        let (last_off, last_len) = seg.locs[i0 + offsets.len() - 1];
        Some(Run {
            seq: seg.seq,
            path: seg.path.clone(),
            start: offsets[0],
            span: (last_off + last_len as u64 - offsets[0]) as usize,
            offsets,
        })
    }
}

/// A run of entry records in one segment file.
struct Run {
    seq: u64,
    path: PathBuf,
    start: u64,
    /// Bytes from the first record's start to the last one's end (other
    /// records, hard state or membership, may sit between entries).
    span: usize,
    offsets: Vec<u64>,
}

/// Entries `from..=to`, stopping once `max_bytes` is passed (at least one
/// entry if any is in range).
pub(super) fn read_entries(
    index: &RwLock<Index>,
    from: EventIdx,
    to: EventIdx,
    max_bytes: usize,
) -> Result<Vec<LogEntry>, LogError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut idx = from;
    let mut open: Option<(u64, File)> = None;
    while idx <= to {
        let run = {
            let index = index.read().unwrap_or_else(|e| e.into_inner());
            if idx < index.first {
                return Err(LogError::Compacted(idx));
            }
            index.run(idx, to, max_bytes - bytes)
        };
        // Not in any segment: compacted (or reset) since it was asked for.
        let Some(run) = run else {
            return Err(LogError::Compacted(idx));
        };
        if open.as_ref().is_none_or(|(s, _)| *s != run.seq) {
            let f = File::open(&run.path).map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => LogError::Compacted(idx),
                _ => LogError::Io {
                    path: run.path.clone(),
                    source,
                },
            })?;
            open = Some((run.seq, f));
        }
        let f = &open.as_ref().expect("opened above").1;
        let mut buf = vec![0u8; run.span];
        f.read_exact_at(&mut buf, run.start)
            .map_err(|source| LogError::Io {
                path: run.path.clone(),
                source,
            })?;
        for (k, &off) in run.offsets.iter().enumerate() {
            let at = (off - run.start) as usize;
            match parse_record(&buf, at) {
                Ok((Record::Entry(e), _)) if e.idx.0 == idx.0 + k as u64 => out.push(e),
                _ => {
                    return Err(LogError::Io {
                        path: run.path.clone(),
                        source: io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("entry {} is unreadable", idx.0 + k as u64),
                        ),
                    })
                }
            }
        }
        bytes += run.span;
        idx = EventIdx(idx.0 + run.offsets.len() as u64);
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(out)
}

/// Reads a `DurableLog`'s entries from another thread (`DurableLog::reader`).
/// Its calls block on file reads: run them where blocking is allowed.
#[derive(Clone, Debug)]
pub struct LogReader {
    index: Arc<RwLock<Index>>,
}

impl LogReader {
    pub(super) fn new(index: Arc<RwLock<Index>>) -> Self {
        LogReader { index }
    }

    /// The oldest entry the log retains.
    pub fn first_index(&self) -> EventIdx {
        self.index.read().unwrap_or_else(|e| e.into_inner()).first
    }

    /// The newest entry this reader can see.
    pub fn written_index(&self) -> EventIdx {
        self.index.read().unwrap_or_else(|e| e.into_inner()).written
    }

    /// Entries `from..=to` that are written, stopping once `max_bytes` is
    /// passed (at least one entry if any is in range). `Compacted` when the
    /// log no longer holds `from`, or dropped it while reading.
    pub fn read(
        &self,
        from: EventIdx,
        to: EventIdx,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        let to = to.min(self.written_index());
        read_entries(&self.index, from, to, max_bytes.max(1))
    }
}
