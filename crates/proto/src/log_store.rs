//! The log as the cores see it: the durable segment log on a real node, an
//! in-memory log with a crash model in the simulator.

use shoal_log::{DurableLog, HardState, LogError, LogReader, MembershipRecord, SyncJob};
use shoal_model::{EventIdx, LogEntry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub trait LogStore {
    /// Appends; an entry at or below the last index replaces the suffix.
    fn append(&mut self, entries: &[LogEntry]) -> Result<(), LogError>;
    fn set_hard_state(&mut self, hs: HardState) -> Result<(), LogError>;
    fn set_membership(&mut self, m: MembershipRecord) -> Result<(), LogError>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> Result<(), LogError>;
    /// Starts making everything written so far durable without waiting:
    /// the job's `wait` runs off the event loop, and `synced` takes its
    /// outcome (then what it covers is durable).
    fn start_sync(&mut self) -> Result<SyncJob, LogError>;
    fn synced(&mut self, id: u64, result: std::io::Result<()>) -> Result<(), LogError>;
    fn read(
        &mut self,
        from: EventIdx,
        to: EventIdx,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogError>;
    /// Entries `from..=to` (about `max_bytes`) to be read where blocking
    /// is allowed, not on the event loop: from the files, or already in
    /// hand where the log is in memory.
    fn read_later(
        &mut self,
        from: EventIdx,
        to: EventIdx,
        max_bytes: usize,
    ) -> Result<LaterRead, LogError>;
    fn first_index(&self) -> EventIdx;
    fn last_index(&self) -> EventIdx;
    /// About the bytes the entries after `idx` take (what fetching them by
    /// range costs), or `None` when the log no longer holds them all.
    fn bytes_after(&self, idx: EventIdx) -> Option<u64>;
    fn hard_state(&self) -> HardState;
    fn membership(&self) -> MembershipRecord;
    fn compact(&mut self, floor: EventIdx) -> Result<(), LogError>;
    fn reset(&mut self, next: EventIdx) -> Result<(), LogError>;
}

/// Log entries to be read off the event loop (`LogStore::read_later`).
#[derive(Clone, Debug)]
pub struct LaterRead {
    from: EventIdx,
    to: EventIdx,
    max_bytes: usize,
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    Files(LogReader),
    InHand(Vec<LogEntry>),
}

impl LaterRead {
    /// The entries from `from` on, as many as `read` would give, or fewer
    /// if the log wrote no more; blocks on file reads. `Compacted` when
    /// the log dropped them meanwhile (a compaction, a reset under a
    /// snapshot).
    pub fn read(self) -> Result<Vec<LogEntry>, LogError> {
        match self.source {
            Source::Files(reader) => reader.read(self.from, self.to, self.max_bytes),
            Source::InHand(entries) => Ok(entries),
        }
    }

    pub fn from(&self) -> EventIdx {
        self.from
    }
}

impl LogStore for DurableLog {
    fn append(&mut self, entries: &[LogEntry]) -> Result<(), LogError> {
        DurableLog::append(self, entries)
    }
    fn set_hard_state(&mut self, hs: HardState) -> Result<(), LogError> {
        DurableLog::set_hard_state(self, hs)
    }
    fn set_membership(&mut self, m: MembershipRecord) -> Result<(), LogError> {
        DurableLog::set_membership(self, m)
    }
    fn sync(&mut self) -> Result<(), LogError> {
        DurableLog::sync(self)
    }
    fn start_sync(&mut self) -> Result<SyncJob, LogError> {
        DurableLog::start_sync(self)
    }
    fn synced(&mut self, id: u64, result: std::io::Result<()>) -> Result<(), LogError> {
        DurableLog::synced(self, id, result)
    }
    fn read(
        &mut self,
        from: EventIdx,
        to: EventIdx,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        DurableLog::read(self, from, to, max_bytes)
    }
    fn read_later(
        &mut self,
        from: EventIdx,
        to: EventIdx,
        max_bytes: usize,
    ) -> Result<LaterRead, LogError> {
        let reader = self.flushed_reader()?;
        if from < reader.first_index() {
            return Err(LogError::Compacted(from));
        }
        Ok(LaterRead {
            from,
            to,
            max_bytes,
            source: Source::Files(reader),
        })
    }
    fn first_index(&self) -> EventIdx {
        DurableLog::first_index(self)
    }
    fn last_index(&self) -> EventIdx {
        DurableLog::last_index(self)
    }
    fn bytes_after(&self, idx: EventIdx) -> Option<u64> {
        DurableLog::bytes_after(self, idx)
    }
    fn hard_state(&self) -> HardState {
        DurableLog::hard_state(self)
    }
    fn membership(&self) -> MembershipRecord {
        DurableLog::membership(self).clone()
    }
    fn compact(&mut self, floor: EventIdx) -> Result<(), LogError> {
        DurableLog::compact(self, floor)
    }
    fn reset(&mut self, next: EventIdx) -> Result<(), LogError> {
        DurableLog::reset(self, next)
    }
}

/// An in-memory log. `crash` drops what was written since the last `sync`,
/// as a power cut would: entries past the synced length, and hard state or
/// membership newer than the last sync. While its disk is full
/// (`full_switch`), it fails as `DurableLog` does: what only buffers
/// succeeds, what must reach the disk first (a sync, a reset, an append
/// that replaces entries) fails and changes nothing. A sync started
/// off the loop (`start_sync`) covers what was written before it, once
/// `synced` says it succeeded.
#[derive(Clone, Debug, Default)]
pub struct MemLog {
    live: MemLogState,
    synced_len: usize,
    synced_hard_state: HardState,
    synced_membership: MembershipRecord,
    full: Arc<AtomicBool>,
    syncs: u64,
    /// The sync under way: its id and what it makes durable.
    started: Option<(u64, usize, HardState, MembershipRecord)>,
}

/// What a log record adds to an entry's data and context, about (index,
/// term, kind, lengths, checksum): `MemLog` counts its bytes so.
const RECORD_OVERHEAD: usize = 24;

#[derive(Clone, Debug)]
struct MemLogState {
    first: EventIdx,
    entries: Vec<LogEntry>,
    hard_state: HardState,
    membership: MembershipRecord,
}

impl Default for MemLogState {
    fn default() -> Self {
        MemLogState {
            first: EventIdx(1),
            entries: Vec::new(),
            hard_state: HardState::default(),
            membership: MembershipRecord::default(),
        }
    }
}

impl MemLogState {
    fn last(&self) -> EventIdx {
        EventIdx(self.first.0 + self.entries.len() as u64 - 1)
    }
}

impl MemLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loses unsynced writes.
    pub fn crash(&mut self) {
        self.live.entries.truncate(self.synced_len);
        self.live.hard_state = self.synced_hard_state;
        self.live.membership = self.synced_membership.clone();
        self.started = None;
    }

    /// Set it to fill this log's disk, clear it to give the room back.
    pub fn full_switch(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.full)
    }

    fn disk_works(&self) -> Result<(), LogError> {
        if self.full.load(Ordering::Relaxed) {
            return Err(LogError::Io {
                path: "mem".into(),
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            });
        }
        Ok(())
    }
}

impl LogStore for MemLog {
    fn append(&mut self, entries: &[LogEntry]) -> Result<(), LogError> {
        let Some(head) = entries.first() else {
            return Ok(());
        };
        let s = &mut self.live;
        if head.idx < s.first {
            return Err(LogError::Compacted(head.idx));
        }
        if head.idx > s.last().next() {
            return Err(LogError::NotContiguous {
                last: s.last(),
                got: head.idx,
            });
        }
        if head.idx <= s.last() {
            self.disk_works()?;
        }
        let s = &mut self.live;
        let keep = (head.idx.0 - s.first.0) as usize;
        s.entries.truncate(keep);
        s.entries.extend_from_slice(entries);
        self.synced_len = self.synced_len.min(keep);
        if let Some((_, len, ..)) = &mut self.started {
            *len = (*len).min(keep);
        }
        Ok(())
    }
    fn set_hard_state(&mut self, hs: HardState) -> Result<(), LogError> {
        self.live.hard_state = hs;
        Ok(())
    }
    fn set_membership(&mut self, m: MembershipRecord) -> Result<(), LogError> {
        self.live.membership = m;
        Ok(())
    }
    fn sync(&mut self) -> Result<(), LogError> {
        self.disk_works()?;
        // A sync under way covers less than this one.
        self.started = None;
        self.synced_len = self.live.entries.len();
        self.synced_hard_state = self.live.hard_state;
        self.synced_membership = self.live.membership.clone();
        Ok(())
    }
    fn start_sync(&mut self) -> Result<SyncJob, LogError> {
        self.disk_works()?;
        self.syncs += 1;
        let l = &self.live;
        self.started = Some((
            self.syncs,
            l.entries.len(),
            l.hard_state,
            l.membership.clone(),
        ));
        Ok(SyncJob::in_memory(self.syncs))
    }
    fn synced(&mut self, id: u64, result: std::io::Result<()>) -> Result<(), LogError> {
        let started = self.started.take_if(|s| s.0 == id);
        result.map_err(|source| LogError::Io {
            path: "mem".into(),
            source,
        })?;
        // A disk that filled while the fsync ran fails it.
        self.disk_works()?;
        if let Some((_, len, hs, m)) = started {
            self.synced_len = len;
            self.synced_hard_state = hs;
            self.synced_membership = m;
        }
        Ok(())
    }
    fn read(
        &mut self,
        from: EventIdx,
        to: EventIdx,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        let s = &self.live;
        if from < s.first {
            return Err(LogError::Compacted(from));
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = from;
        while i <= to.min(s.last()) {
            let e = &s.entries[(i.0 - s.first.0) as usize];
            bytes += e.size_hint();
            out.push(e.clone());
            if bytes >= max_bytes {
                break;
            }
            i = i.next();
        }
        Ok(out)
    }
    fn read_later(
        &mut self,
        from: EventIdx,
        to: EventIdx,
        max_bytes: usize,
    ) -> Result<LaterRead, LogError> {
        let entries = self.read(from, to, max_bytes)?;
        Ok(LaterRead {
            from,
            to,
            max_bytes,
            source: Source::InHand(entries),
        })
    }
    fn first_index(&self) -> EventIdx {
        self.live.first
    }
    fn last_index(&self) -> EventIdx {
        self.live.last()
    }
    fn bytes_after(&self, idx: EventIdx) -> Option<u64> {
        let s = &self.live;
        let skip = idx.next().0.checked_sub(s.first.0)?;
        let after = s.entries.iter().skip(skip as usize);
        Some(
            after
                .map(|e| (RECORD_OVERHEAD + e.data.len() + e.context.len()) as u64)
                .sum(),
        )
    }
    fn hard_state(&self) -> HardState {
        self.live.hard_state
    }
    fn membership(&self) -> MembershipRecord {
        self.live.membership.clone()
    }
    fn compact(&mut self, floor: EventIdx) -> Result<(), LogError> {
        let s = &mut self.live;
        let floor = floor.min(s.last().next());
        if floor > s.first {
            let n = (floor.0 - s.first.0) as usize;
            s.entries.drain(..n);
            s.first = floor;
            self.synced_len = self.synced_len.saturating_sub(n);
            if let Some((_, len, ..)) = &mut self.started {
                *len = len.saturating_sub(n);
            }
        }
        Ok(())
    }
    fn reset(&mut self, next: EventIdx) -> Result<(), LogError> {
        self.disk_works()?;
        self.live.entries.clear();
        self.live.first = next;
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::entry as e;

    #[test]
    fn a_crash_loses_only_unsynced_writes() {
        let mut log = MemLog::new();
        log.append(&[e(1), e(2)]).unwrap();
        log.set_hard_state(HardState {
            term: 1,
            vote: 1,
            commit: 2,
        })
        .unwrap();
        log.sync().unwrap();
        log.append(&[e(3)]).unwrap();
        log.set_hard_state(HardState {
            term: 2,
            vote: 2,
            commit: 3,
        })
        .unwrap();
        log.crash();
        assert_eq!(log.last_index(), EventIdx(2));
        assert_eq!(log.hard_state().term, 1);
        log.compact(EventIdx(2)).unwrap();
        log.append(&[e(3)]).unwrap();
        log.sync().unwrap();
        log.crash();
        assert_eq!(
            (log.first_index(), log.last_index()),
            (EventIdx(2), EventIdx(3))
        );
    }

    #[test]
    fn a_sync_off_the_loop_covers_what_came_before_it_once_it_ended() {
        let mut log = MemLog::new();
        log.append(&[e(1), e(2)]).unwrap();
        let job = log.start_sync().unwrap();
        log.append(&[e(3)]).unwrap();
        log.clone()
            .crash_then(|l| assert_eq!(l.last_index(), EventIdx(0)));
        log.synced(job.id(), Ok(())).unwrap();
        log.clone()
            .crash_then(|l| assert_eq!(l.last_index(), EventIdx(2)));
        // A failed one is an error and makes nothing durable.
        let job = log.start_sync().unwrap();
        let failed = log.synced(job.id(), Err(std::io::Error::other("EIO")));
        assert!(failed.is_err());
        log.clone()
            .crash_then(|l| assert_eq!(l.last_index(), EventIdx(2)));
        // One overtaken by a full sync changes nothing when it ends.
        let job = log.start_sync().unwrap();
        log.append(&[e(4)]).unwrap();
        log.sync().unwrap();
        log.synced(job.id(), Ok(())).unwrap();
        log.crash_then(|l| assert_eq!(l.last_index(), EventIdx(4)));
    }

    impl MemLog {
        fn crash_then(mut self, check: impl FnOnce(&MemLog)) {
            self.crash();
            check(&self);
        }
    }
}
