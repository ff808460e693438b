//! Where an encoded snapshot's bytes are held while it is served: in
//! memory just after it was built or received, in its file once saved, so
//! that a node keeps no second copy of its State in memory.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

/// An encoded snapshot's bytes, read in chunks.
pub trait SnapshotBytes: Send + Sync + fmt::Debug {
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes from `offset`, at most `max` of them (fewer only at the
    /// end).
    fn read_at(&self, offset: u64, max: usize) -> io::Result<Vec<u8>>;

    /// All of it, for tests.
    fn read_all(&self) -> io::Result<Vec<u8>> {
        self.read_at(0, self.len() as usize)
    }

    /// Writes all of it to `w`, a few MiB at a time.
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        each_chunk(self, |chunk| w.write_all(chunk))
    }
}

/// Hands all of `bytes` to `f` in order, a few MiB at a time.
pub(crate) fn each_chunk<B, E>(
    bytes: &B,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E>
where
    B: SnapshotBytes + ?Sized,
    E: From<io::Error>,
{
    const STEP: usize = 4 << 20;
    let mut offset = 0;
    while offset < bytes.len() {
        let chunk = bytes.read_at(offset, STEP)?;
        f(&chunk)?;
        offset += chunk.len() as u64;
    }
    Ok(())
}

impl SnapshotBytes for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.as_slice().len());
        let end = start.saturating_add(max).min(self.as_slice().len());
        Ok(self[start..end].to_vec())
    }

    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(self)
    }
}

/// A saved snapshot read from its file (without the checksum trailer).
/// The file stays readable through its open handle after the store
/// deletes it for a newer one, so transfers under way finish.
#[derive(Debug)]
pub struct SnapshotFile {
    file: File,
    len: u64,
}

impl SnapshotFile {
    pub(crate) fn new(file: File, len: u64) -> Self {
        SnapshotFile { file, len }
    }

    /// The SHA-256 a saved snapshot's file ends with.
    pub(crate) fn read_trailer(&self) -> io::Result<[u8; 32]> {
        let mut sha = [0; 32];
        self.file.read_exact_at(&mut sha, self.len)?;
        Ok(sha)
    }
}

impl SnapshotBytes for SnapshotFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let n = self.len.saturating_sub(offset).min(max as u64) as usize;
        let mut buf = vec![0; n];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}
