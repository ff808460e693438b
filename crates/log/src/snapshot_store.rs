//! Snapshots on local disk: one file per snapshot, written atomically, with
//! a SHA-256 trailer; the newest readable one is loaded on restart.

use crate::snapshot::{decode_snapshot, SnapshotError};
use sha2::{Digest, Sha256};
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
    pub fn save(&self, index: EventIdx, bytes: &[u8], sha: &[u8; 32]) -> io::Result<()> {
        let tmp = self.dir.join(format!("{:020}.snap.tmp", index.0));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
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

    /// The newest snapshot that verifies; unreadable ones are skipped with a
    /// warning.
    pub fn load_latest(&self) -> io::Result<Option<State>> {
        for idx in self.indices()?.into_iter().rev() {
            let path = self.path(idx);
            let bytes = fs::read(&path)?;
            match split_and_decode(&bytes) {
                Ok(state) => return Ok(Some(state)),
                Err(e) => warn!(path = %path.display(), error = %e, "skipping unreadable snapshot"),
            }
        }
        Ok(None)
    }
}

fn split_and_decode(bytes: &[u8]) -> Result<State, SnapshotError> {
    if bytes.len() < 32 {
        return Err(SnapshotError::Truncated);
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    let sha: [u8; 32] = trailer.try_into().expect("32 bytes");
    debug_assert_eq!(sha.len(), Sha256::output_size());
    decode_snapshot(body, &sha)
}
