//! Snapshots on local disk: one file per snapshot, written atomically, with
//! a SHA-256 trailer; the newest readable one is loaded on restart.

use crate::snapshot::{SnapshotDecoder, SnapshotError};
use crate::snapshot_bytes::{each_chunk, write_in_steps, SnapshotBytes, SnapshotFile};
use shoal_model::{EventIdx, State};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tracing::warn;

/// Snapshots kept on disk; older ones are deleted.
const KEEP: usize = 2;

#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(SnapshotStore {
            dir: dir.to_owned(),
        })
    }

    fn indices(&self) -> io::Result<Vec<u64>> {
        let mut v: Vec<u64> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".snap")?.parse().ok()
            })
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    fn path(&self, idx: u64) -> PathBuf {
        self.dir.join(format!("{idx:020}.snap"))
    }

    /// Writes a snapshot (bytes as `encode_snapshot` made them) durably.
    pub fn save(
        &self,
        index: EventIdx,
        bytes: &dyn SnapshotBytes,
        sha: &[u8; 32],
    ) -> io::Result<()> {
        let tmp = self.dir.join(format!("{:020}.snap.tmp", index.0));
        let mut f = File::create(&tmp)?;
        bytes.write_to(&mut f)?;
        f.write_all(sha)?;
        f.sync_all()?;
        fs::rename(&tmp, self.path(index.0))?;
        File::open(&self.dir)?.sync_all()?;
        let all = self.indices()?;
        for old in all.iter().take(all.len().saturating_sub(KEEP)) {
            fs::remove_file(self.path(*old))?;
        }
        Ok(())
    }

    /// The saved snapshot at `index`, to serve from its file.
    pub fn open_file(&self, index: EventIdx) -> io::Result<SnapshotFile> {
        open_snapshot_file(&self.path(index.0))
    }

    /// An unnamed file in the store's directory holding `bytes`, gone once
    /// its last handle closes: a snapshot built to serve, not to keep, is
    /// served from it instead of from memory. Not synced: nothing reads it
    /// after a crash.
    pub fn spill(&self, bytes: &[u8]) -> io::Result<SnapshotFile> {
        let mut file = tempfile::tempfile_in(&self.dir)?;
        write_in_steps(&mut file, bytes)?;
        Ok(SnapshotFile::new(file, bytes.len() as u64))
    }

    /// The newest snapshot that verifies; unreadable ones are skipped with a
    /// warning.
    pub fn load_latest(&self) -> io::Result<Option<State>> {
        for idx in self.indices()?.into_iter().rev() {
            let path = self.path(idx);
            let loaded = self
                .open_file(EventIdx(idx))
                .map_err(SnapshotError::from)
                .and_then(|f| read_and_decode(&f));
            match loaded {
                Ok(state) => return Ok(Some(state)),
                Err(e) => warn!(path = %path.display(), error = %e, "skipping unreadable snapshot"),
            }
        }
        Ok(None)
    }
}

/// A snapshot file (the encoded snapshot, then its SHA-256), opened.
fn open_snapshot_file(path: &Path) -> io::Result<SnapshotFile> {
    let file = File::open(path)?;
    let len = file.metadata()?.len().checked_sub(32).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot file shorter than its checksum",
        )
    })?;
    Ok(SnapshotFile::new(file, len))
}

/// The State a snapshot file holds (one the store saved, or a backup:
/// `shoal snapshot save`), checked against the checksum it ends with.
pub fn read_snapshot_file(path: &Path) -> Result<State, SnapshotError> {
    read_and_decode(&open_snapshot_file(path)?)
}

/// Decodes a saved snapshot as it is read, a few MiB at a time, and checks
/// it against the checksum in the file's trailer.
fn read_and_decode(file: &SnapshotFile) -> Result<State, SnapshotError> {
    let trailer = file.read_trailer()?;
    let mut d = SnapshotDecoder::new();
    each_chunk(file, |chunk| d.push(chunk))?;
    d.finish(&trailer)
}
