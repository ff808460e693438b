//! Syncs that run off the caller's thread. `start_sync` writes what is
//! buffered and hands out a job holding the active segment's file; the
//! job's `wait` (an fsync) runs elsewhere, and `synced` takes its outcome.
//! Until then the bytes stay in the buffer, so a failed fsync writes them
//! again, as a failed `sync` does.

use super::{io_err, DurableLog, LogError};
use std::fmt;
use std::fs::File;
use std::io;
use std::sync::Arc;

/// A sync under way: what was written to the log before `start_sync`
/// returned it is durable once `wait` returns `Ok`.
#[derive(Clone)]
pub struct SyncJob {
    id: u64,
    file: Option<Arc<File>>,
}

impl SyncJob {
    /// A job with nothing to wait for (a log kept in memory).
    pub fn in_memory(id: u64) -> Self {
        SyncJob { id, file: None }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Blocks until the bytes the job covers are on the disk.
    pub fn wait(&self) -> io::Result<()> {
        match &self.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for SyncJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncJob").field("id", &self.id).finish()
    }
}

impl PartialEq for SyncJob {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for SyncJob {}

/// The sync `start_sync` handed out last, until `synced` takes it.
#[derive(Debug)]
pub(super) struct Started {
    id: u64,
    file: Arc<File>,
    /// Length of the active segment the job makes durable.
    upto: u64,
}

impl DurableLog {
    /// Writes what is buffered and returns the fsync that makes it durable,
    /// to run on another thread; `synced` takes its outcome.
    pub fn start_sync(&mut self) -> Result<SyncJob, LogError> {
        self.flush()?;
        self.syncs += 1;
        let file = self.file.clone();
        self.started = file.clone().map(|file| Started {
            id: self.syncs,
            file,
            upto: self.file_len + self.buf.len() as u64,
        });
        Ok(SyncJob {
            id: self.syncs,
            file,
        })
    }

    /// The job `id` from `start_sync` ended with `result`. On success what
    /// it covers leaves the buffer; a job overtaken by a `sync` or by a new
    /// segment has nothing left to do. On failure every buffered byte is
    /// written again by the next sync, and the error is returned.
    pub fn synced(&mut self, id: u64, result: io::Result<()>) -> Result<(), LogError> {
        let started = self.started.take_if(|s| s.id == id);
        if let Err(e) = result {
            self.buf_written = 0;
            return Err(io_err(&self.active_path())(e));
        }
        let Some(s) = started else {
            return Ok(());
        };
        let same_file = self.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, &s.file));
        if same_file && s.upto > self.file_len {
            let n = (s.upto - self.file_len) as usize;
            self.buf.drain(..n);
            self.buf_written = self.buf_written.saturating_sub(n);
            self.file_len = s.upto;
        }
        Ok(())
    }
}
