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

    /// Writes all of it to `w`, at most `IO_STEP` bytes a call.
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        each_chunk(self, |chunk| w.write_all(chunk))
    }
}

/// The most a snapshot's bytes are written (or read) in one system call.
/// The kernel copies a call's bytes in one go, and on a kernel built
/// without preemption nothing else runs on that core meanwhile, however
/// low the thread's priority: a member spilling a 1M-key snapshot (76 MB)
/// in one `write` held its core for up to 23 ms at a time; in calls of
/// this size, 7 ms.
pub(crate) const IO_STEP: usize = 256 << 10;

/// Writes all of `bytes` to `w`, at most `IO_STEP` a call.
pub(crate) fn write_in_steps(w: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
    bytes
        .chunks(IO_STEP)
        .try_for_each(|piece| w.write_all(piece))
}

/// Hands all of `bytes` to `f` in order, `IO_STEP` at a time.
pub(crate) fn each_chunk<B, E>(
    bytes: &B,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E>
where
    B: SnapshotBytes + ?Sized,
    E: From<io::Error>,
{
    let mut offset = 0;
    while offset < bytes.len() {
        let chunk = bytes.read_at(offset, IO_STEP)?;
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
        write_in_steps(w, self)
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
    pub fn read_trailer(&self) -> io::Result<[u8; 32]> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the size of each write it is handed.
    #[derive(Default)]
    struct Calls {
        sizes: Vec<usize>,
        bytes: Vec<u8>,
    }

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sizes.push(buf.len());
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_snapshot_is_written_in_steps_not_in_one_call() {
        let snap: Vec<u8> = (0..4 * IO_STEP + 7).map(|i| i as u8).collect();
        let mut w = Calls::default();
        snap.write_to(&mut w).unwrap();
        assert_eq!(w.bytes, snap);
        assert_eq!(w.sizes.len(), 5);
        assert!(w.sizes.iter().all(|&n| n <= IO_STEP), "{:?}", w.sizes);
    }
}
