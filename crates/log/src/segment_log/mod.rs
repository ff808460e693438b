//! Append-only segment files with a checksum per record.
//!
//! File layout: an 8-byte magic, a little-endian u16 format version, then
//! records `[len: u32][crc32(payload): u32][payload]`, where the payload is a
//! postcard `Record`. Segments are named by a sequence number; within one
//! segment entry indices are consecutive. Raft may replace an uncommitted
//! suffix: that starts a new segment, and replaying the segments in order
//! (a later entry at an index replaces the earlier one) gives the same log.
//! Each segment begins with the current hard state and membership, so old
//! segments can be deleted without losing them.

use serde::{Deserialize, Serialize};
use shoal_model::{EventIdx, LogEntry};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockWriteGuard};
use tracing::warn;

mod reader;
mod records;
mod sync;

pub use sync::SyncJob;

pub use reader::LogReader;
use reader::{read_entries, Index};
use records::{encode_record, parse_record, Record, Replay, Segment};

const MAGIC: &[u8; 8] = b"SHOALLOG";
const FORMAT_VERSION: u16 = 1;
const HEADER_LEN: u64 = 10;

#[derive(Clone, Copy, Debug)]
pub struct LogConfig {
    /// A segment is closed once it passes this size.
    pub segment_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
        }
    }
}

/// Raft's persisted vote and term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// Raft's persisted membership (voter and learner Raft ids).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} has log format version {found}; this node reads {supported}")]
    Version {
        path: PathBuf,
        found: u16,
        supported: u16,
    },
    #[error("entry {got} does not follow the log's last index {last}")]
    NotContiguous { last: EventIdx, got: EventIdx },
    #[error("entry {0} is below the log's first index")]
    Compacted(EventIdx),
    #[error("entry of {0} bytes is larger than a log record may be")]
    TooLarge(usize),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What opening the log found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub entries: u64,
    /// Where a torn or corrupt record was cut, and why.
    pub cut: Option<(PathBuf, u64, String)>,
}

/// The durable log. Appends are buffered; `sync` makes them durable.
///
/// A write or fsync that fails (a full disk) loses nothing and tears
/// nothing: the bytes not yet known durable stay in the buffer and are
/// written again, at the same offset, by the next `sync`.
#[derive(Debug)]
pub struct DurableLog {
    dir: PathBuf,
    cfg: LogConfig,
    /// Where each entry is, shared with readers (`LogReader`).
    index: Arc<RwLock<Index>>,
    /// The active segment's file; `None` only inside `open`. Shared with
    /// a sync under way (`start_sync`).
    file: Option<Arc<File>>,
    /// Bytes of the active segment known durable (`buf` follows them).
    file_len: u64,
    /// Records not yet known durable, in file order after `file_len`.
    buf: Vec<u8>,
    /// How much of `buf` is written to the file (not yet fsynced).
    buf_written: usize,
    first: EventIdx,
    last: EventIdx,
    hard_state: HardState,
    membership: MembershipRecord,
    /// Syncs started so far (`start_sync`), and the last one if it has
    /// not ended.
    syncs: u64,
    started: Option<sync::Started>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.seg"))
}

impl DurableLog {
    /// Opens (or creates) the log in `dir`, cutting a torn or corrupt tail.
    pub fn open(dir: &Path, cfg: LogConfig) -> Result<(DurableLog, Recovery), LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut seqs: Vec<u64> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        seqs.sort_unstable();

        let mut log = Replay::default();
        let mut recovery = Recovery::default();
        let mut segments: Vec<Segment> = Vec::new();
        let mut stop_at = None;
        for (n, &seq) in seqs.iter().enumerate() {
            let path = segment_path(dir, seq);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_err(&path))?;
            if bytes.len() < HEADER_LEN as usize || &bytes[..8] != MAGIC {
                // A segment whose header never reached the disk holds nothing.
                recovery.cut = Some((path.clone(), 0, "missing segment header".into()));
                stop_at = Some(n);
                fs::remove_file(&path).map_err(io_err(&path))?;
                break;
            }
            let version = u16::from_le_bytes([bytes[8], bytes[9]]);
            if version != FORMAT_VERSION {
                return Err(LogError::Version {
                    path,
                    found: version,
                    supported: FORMAT_VERSION,
                });
            }
            let mut seg = Segment {
                seq,
                path: path.clone(),
                first: log.last.next(),
                locs: Vec::new(),
            };
            let mut pos = HEADER_LEN as usize;
            while pos < bytes.len() {
                match parse_record(&bytes, pos) {
                    Ok((rec, len)) => {
                        if let Err(reason) =
                            log.replay(rec, &mut segments, &mut seg, pos as u64, len as u32)
                        {
                            recovery.cut = Some((path.clone(), pos as u64, reason));
                            break;
                        }
                        pos += len;
                    }
                    Err(reason) => {
                        recovery.cut = Some((path.clone(), pos as u64, reason));
                        break;
                    }
                }
            }
            if let Some((_, at, reason)) = &recovery.cut {
                warn!(segment = %path.display(), offset = at, reason = %reason, "cutting torn or corrupt log tail");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(*at).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                segments.push(seg);
                stop_at = Some(n + 1);
                break;
            }
            segments.push(seg);
        }
        if let Some(n) = stop_at {
            for &seq in &seqs[n..] {
                let path = segment_path(dir, seq);
                if path.exists() {
                    warn!(segment = %path.display(), "removing log segment after a corrupt record");
                    fs::remove_file(&path).map_err(io_err(&path))?;
                }
            }
        }
        recovery.entries = log.last.0.saturating_sub(log.first.0.saturating_sub(1));
        if log.last < log.first {
            recovery.entries = 0;
        }

        let next_seq = segments.last().map_or(0, |s| s.seq + 1);
        let mut this = DurableLog {
            dir: dir.to_owned(),
            cfg,
            index: Arc::new(RwLock::new(Index {
                segments,
                first: log.first,
                written: log.last,
            })),
            file: None,
            file_len: 0,
            buf: Vec::new(),
            buf_written: 0,
            first: log.first,
            last: log.last,
            hard_state: log.hard_state,
            membership: log.membership,
            syncs: 0,
            started: None,
        };
        // Appends always go to a fresh segment: a cut file is never written
        // into again, so its good prefix stays as it was.
        this.roll(next_seq)?;
        Ok((this, recovery))
    }

    pub fn first_index(&self) -> EventIdx {
        self.first
    }

    /// A reader of this log's entries for other threads: it sees what has
    /// been written to the files, and never blocks the writer for longer
    /// than it takes to look up where a run of entries is.
    pub fn reader(&self) -> LogReader {
        LogReader::new(self.index.clone())
    }

    /// A reader that sees every entry appended so far: what is buffered
    /// is written to the file first (not synced).
    pub fn flushed_reader(&mut self) -> Result<LogReader, LogError> {
        self.flush()?;
        Ok(self.reader())
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        // The index is consistent between statements: a panic elsewhere
        // while it was held leaves nothing half-done.
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The last entry's index, or `first_index() - 1` when empty.
    pub fn last_index(&self) -> EventIdx {
        self.last
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn membership(&self) -> &MembershipRecord {
        &self.membership
    }

    /// Appends entries; an entry at or below the last index replaces that
    /// index and everything after it (Raft overwriting an uncommitted tail).
    pub fn append(&mut self, entries: &[LogEntry]) -> Result<(), LogError> {
        let Some(head) = entries.first() else {
            return Ok(());
        };
        if head.idx < self.first {
            return Err(LogError::Compacted(head.idx));
        }
        if head.idx > self.last.next() {
            return Err(LogError::NotContiguous {
                last: self.last,
                got: head.idx,
            });
        }
        if head.idx <= self.last {
            self.truncate_from(head.idx)?;
        }
        for (i, e) in entries.iter().enumerate() {
            if e.idx.0 != head.idx.0 + i as u64 {
                return Err(LogError::NotContiguous {
                    last: self.last,
                    got: e.idx,
                });
            }
            self.maybe_roll()?;
            let offset = self.file_len + self.buf.len() as u64;
            let before = self.buf.len();
            encode_record(&Record::Entry(e.clone()), &mut self.buf)?;
            let len = (self.buf.len() - before) as u32;
            self.index_mut()
                .segments
                .last_mut()
                .expect("an active segment")
                .locs
                .push((offset, len));
            self.last = e.idx;
        }
        Ok(())
    }

    pub fn set_hard_state(&mut self, hs: HardState) -> Result<(), LogError> {
        if hs != self.hard_state {
            self.hard_state = hs;
            encode_record(&Record::HardState(hs), &mut self.buf)?;
        }
        Ok(())
    }

    pub fn set_membership(&mut self, m: MembershipRecord) -> Result<(), LogError> {
        if m != self.membership {
            encode_record(&Record::Membership(m.clone()), &mut self.buf)?;
            self.membership = m;
        }
        Ok(())
    }

    /// Writes buffered records and fsyncs them.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.flush()?;
        let Some(f) = &self.file else {
            return Ok(());
        };
        if let Err(e) = f.sync_data() {
            // After a failed fsync the kernel may have dropped the pages:
            // write them all again next time.
            self.buf_written = 0;
            self.started = None;
            return Err(io_err(&self.active_path())(e));
        }
        self.file_len += self.buf.len() as u64;
        self.buf.clear();
        self.buf_written = 0;
        // A sync under way covers less than this one.
        self.started = None;
        Ok(())
    }

    /// Writes what is buffered to the file (readers see it; it is durable
    /// once `sync` returns).
    fn flush(&mut self) -> Result<(), LogError> {
        if self.buf_written < self.buf.len() {
            let file = self.file.as_ref().expect("an active segment");
            let at = self.file_len + self.buf_written as u64;
            if let Err(e) = file.write_all_at(&self.buf[self.buf_written..], at) {
                return Err(io_err(&self.active_path())(e));
            }
            self.buf_written = self.buf.len();
        }
        let last = self.last;
        let mut index = self.index_mut();
        if index.written != last {
            index.written = last;
        }
        Ok(())
    }

    fn active_path(&self) -> PathBuf {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_else(|| self.dir.clone())
    }

    /// Reads entries `from..=to`, stopping early once `max_bytes` is passed
    /// (at least one entry is returned if any is in range).
    pub fn read(
        &mut self,
        from: EventIdx,
        to: EventIdx,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        self.flush()?;
        read_entries(&self.index, from, to.min(self.last), max_bytes)
    }

    /// The bytes the entries after `idx` take in the log (what fetching
    /// them by range costs, about), or `None` when some are compacted.
    pub fn bytes_after(&self, idx: EventIdx) -> Option<u64> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index.bytes_after(idx)
    }

    /// Drops whole segments that end below `floor` (a snapshot covers them).
    pub fn compact(&mut self, floor: EventIdx) -> Result<(), LogError> {
        let floor = floor.min(self.last.next());
        if floor <= self.first {
            return Ok(());
        }
        self.first = floor;
        encode_record(&Record::Floor(floor), &mut self.buf)?;
        let mut index = self.index_mut();
        index.first = floor;
        let n = index.segments.len();
        let mut keep = Vec::with_capacity(n);
        for (i, seg) in std::mem::take(&mut index.segments).into_iter().enumerate() {
            let below = seg.last().is_none_or(|l| l < floor);
            if below && i + 1 < n {
                fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            } else {
                keep.push(seg);
            }
        }
        index.segments = keep;
        Ok(())
    }

    /// Empties the log so that it continues at `next` (after a snapshot was
    /// installed that is newer than anything held here).
    pub fn reset(&mut self, next: EventIdx) -> Result<(), LogError> {
        self.sync()?;
        self.first = next;
        self.last = next.prev();
        let next_seq = {
            let mut index = self.index_mut();
            index.first = next;
            index.written = next.prev();
            let next_seq = index.next_seq();
            for seg in std::mem::take(&mut index.segments) {
                fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            }
            next_seq
        };
        self.roll(next_seq)?;
        self.sync()
    }

    /// Drops `idx` and what follows. The replacement entries go to a new
    /// segment so that each segment keeps consecutive indices; that
    /// segment is made first, so that a disk that fails leaves the log as
    /// it was (on disk and here alike).
    fn truncate_from(&mut self, idx: EventIdx) -> Result<(), LogError> {
        let next_seq = self.index_mut().next_seq();
        let (file, path, head_len) = self.new_segment(next_seq)?;
        {
            let mut index = self.index_mut();
            for seg in &mut index.segments {
                if seg.first >= idx {
                    seg.locs.clear();
                } else {
                    seg.locs.truncate((idx.0 - seg.first.0) as usize);
                }
            }
            index.written = index.written.min(idx.prev());
        }
        self.last = idx.prev();
        self.install_segment(next_seq, file, path, head_len)
    }

    fn maybe_roll(&mut self) -> Result<(), LogError> {
        if self.file_len + self.buf.len() as u64 >= self.cfg.segment_bytes {
            let next_seq = self.index_mut().next_seq();
            self.roll(next_seq)?;
        }
        Ok(())
    }

    fn roll(&mut self, seq: u64) -> Result<(), LogError> {
        let (file, path, head_len) = self.new_segment(seq)?;
        self.install_segment(seq, file, path, head_len)
    }

    /// Makes what is buffered durable, then segment `seq` on disk with its
    /// head; the log itself is not changed yet (`install_segment`).
    fn new_segment(&mut self, seq: u64) -> Result<(File, PathBuf, u64), LogError> {
        self.sync()?;
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        encode_record(&Record::Floor(self.first), &mut head)?;
        encode_record(&Record::HardState(self.hard_state), &mut head)?;
        encode_record(&Record::Membership(self.membership.clone()), &mut head)?;
        let written = file
            .write_all_at(&head, 0)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&path));
        if let Err(e) = written {
            // A torn head would read as a corrupt segment at the next open.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok((file, path, head.len() as u64))
    }

    /// Makes segment `seq` (from `new_segment`) the active one, for the
    /// entries after the last.
    fn install_segment(
        &mut self,
        seq: u64,
        file: File,
        path: PathBuf,
        head_len: u64,
    ) -> Result<(), LogError> {
        // Drop segments left with no entries; their other records are
        // repeated at the head of the new one.
        let first = self.last.next();
        let mut index = self.index_mut();
        let mut kept = Vec::new();
        for s in std::mem::take(&mut index.segments) {
            if s.locs.is_empty() {
                fs::remove_file(&s.path).map_err(io_err(&s.path))?;
            } else {
                kept.push(s);
            }
        }
        index.segments = kept;
        index.segments.push(Segment {
            seq,
            path,
            first,
            locs: Vec::new(),
        });
        drop(index);
        self.file = Some(Arc::new(file));
        self.file_len = head_len;
        Ok(())
    }
}

impl Drop for DurableLog {
    /// A clean shutdown keeps what was buffered; a crash loses only that.
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            warn!(error = %e, "log sync on close failed");
        }
    }
}
