//! Range replies (a peer's NACK, a joiner's tail) read from the log's
//! files and encoded off the event loop (`Output::SendRange`). In a join
//! storm a member's loop spent 4-7 ms reading a 2 MiB range and as long
//! again encoding it, several to a turn, and every write waited behind
//! them. Here `READ_SLOTS` bulk threads read them, below the node in CPU
//! priority (`bulk`), so that a short core runs the commit path first (in
//! a join storm on a core that was not short it changed nothing measurable:
//! bench/README.md, 2026-12-06). At most `QUEUED` requests are read or
//! wait to be; one past those is answered "not yet" at once (the asker
//! asks again, or another replica), counted.
//!
//! Snapshot chunks (`Output::SendChunk`) are read and encoded the same
//! way, by a server of their own: a megabyte read from the snapshot's
//! file and encoded held a member's loop for most of a millisecond. A
//! chunk request past the queue is read at once, on the loop, as before:
//! a joiner's transfer is never turned away for it.

use super::bulk::Pool;
use shoal_proto::node::RangeRead;
use shoal_proto::snapshot_transfer::ChunkRead;
use shoal_proto::wire::{self, Direct, Frame};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::error;

/// Range reads (and encodes) under way at once, at most, each on a bulk
/// thread of its own: each keeps a core busy while it lasts.
const READ_SLOTS: usize = 2;
/// Range requests read or waiting to be, at most: past this a peer that
/// asks for ranges faster than they can be read hears "not yet" instead
/// of queueing work without bound.
const QUEUED: usize = 16;

/// A reply read where blocking is allowed.
pub(super) trait Later: Send + 'static {
    /// The reply, read: blocks on files.
    fn reply(self) -> Direct;
    /// The reply when too many reads are under way.
    fn deferred(self) -> Direct;
}

impl Later for RangeRead {
    fn reply(self) -> Direct {
        RangeRead::reply(self)
    }

    /// Not yet: ask again, or ask another replica.
    fn deferred(self) -> Direct {
        RangeRead::deferred(self)
    }
}

impl Later for ChunkRead {
    fn reply(self) -> Direct {
        ChunkRead::reply(self)
    }

    /// Read now, on the caller.
    fn deferred(self) -> Direct {
        ChunkRead::reply(self)
    }
}

#[derive(Clone, Debug)]
pub(super) struct ReadServer {
    readers: Pool,
    tickets: Arc<Semaphore>,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    deferred: AtomicU64,
    overflow: AtomicU64,
}

impl Default for ReadServer {
    fn default() -> Self {
        ReadServer::new("shoal-range")
    }
}

impl ReadServer {
    /// A server whose `READ_SLOTS` threads are named `name`.
    pub fn new(name: &str) -> ReadServer {
        ReadServer {
            readers: Pool::new(name, READ_SLOTS),
            tickets: Arc::new(Semaphore::new(QUEUED)),
            counts: Arc::default(),
        }
    }

    /// Reads the reply, encodes it and hands its bytes to `send` (false:
    /// the network's queue was full), off the loop. Returns at once; must
    /// be called on the runtime (`Pool::run`).
    pub fn serve<R: Later, S>(&self, frame: Frame<R>, send: S)
    where
        S: FnOnce(Vec<u8>) -> bool + Send + 'static,
    {
        let Ok(ticket) = self.tickets.clone().try_acquire_owned() else {
            self.counts.deferred.fetch_add(1, Ordering::Relaxed);
            self.reply(&frame.map(R::deferred), send);
            return;
        };
        let this = self.clone();
        self.readers.run(move || {
            let _ticket = ticket;
            this.reply(&frame.map(R::reply), send);
        });
    }

    fn reply<S: FnOnce(Vec<u8>) -> bool>(&self, frame: &Frame<Direct>, send: S) {
        match wire::encode(frame) {
            Ok(bytes) => {
                if !send(bytes) {
                    self.counts.overflow.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => error!(error = %e, "could not encode a reply read off the loop"),
        }
    }

    /// Requests answered at once because too many were queued (ranges:
    /// "not yet").
    pub fn deferred(&self) -> u64 {
        self.counts.deferred.load(Ordering::Relaxed)
    }

    /// Range replies dropped at a full network queue.
    pub fn overflow(&self) -> u64 {
        self.counts.overflow.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bulk::BULK_NICE;
    use shoal_log::{DurableLog, LogConfig};
    use shoal_model::{EntryKind, EventIdx, LogEntry, NodeId, Term};
    use shoal_proto::log_store::LogStore;
    use shoal_proto::wire::{RangeReply, PROTOCOL_VERSION};
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn entry(i: u64) -> LogEntry {
        LogEntry {
            idx: EventIdx(i),
            term: Term(1),
            kind: EntryKind::Normal,
            data: vec![i as u8; 100],
            context: vec![],
        }
    }

    fn reply(bytes: &[u8]) -> RangeReply {
        match wire::decode::<Direct>(bytes).unwrap().msg {
            Direct::Range(r) => r,
            other => panic!("{other:?}"),
        }
    }

    /// Keeps every reader of `server` busy until the sender returned is
    /// dropped: requests queue and none is read yet.
    fn occupy(server: &ReadServer) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = std::sync::Arc::new(std::sync::Mutex::new(held));
        for _ in 0..READ_SLOTS {
            let held = held.clone();
            server.readers.run(move || {
                let _ = held.lock().unwrap().recv();
            });
        }
        release
    }

    fn nice_here() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[tokio::test]
    async fn ranges_are_read_off_the_loop_below_its_priority_and_those_past_the_queue_hear_not_yet()
    {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = DurableLog::open(dir.path(), LogConfig::default()).unwrap();
        log.append(&(1..=10).map(entry).collect::<Vec<_>>())
            .unwrap();
        let loop_nice = nice_here();
        let server = ReadServer::default();
        // Every reader busy with work of the test's: requests queue and
        // none is read yet.
        let release = occupy(&server);
        let (tx, mut rx) = mpsc::unbounded_channel();
        for _ in 0..=QUEUED {
            let read = log.read_later(EventIdx(3), EventIdx(8), 1 << 20).unwrap();
            let frame = Frame {
                version: PROTOCOL_VERSION,
                cluster: None,
                from: NodeId::from("m"),
                msg: RangeRead::new(read, EventIdx(8)),
            };
            let tx = tx.clone();
            server.serve(frame, move |bytes| tx.send((bytes, nice_here())).is_ok());
        }
        // The one past the queue is answered at once, on the loop.
        let (first, nice) = rx.try_recv().expect("answered without a read");
        assert_eq!(
            reply(&first),
            RangeReply::NotYet {
                from: EventIdx(3),
                last: EventIdx(8)
            }
        );
        assert_eq!(nice, loop_nice);
        assert_eq!(server.deferred(), 1);
        tokio::task::yield_now().await;
        assert!(
            rx.try_recv().is_err(),
            "nothing read while the readers are busy"
        );
        drop(release);
        for _ in 0..QUEUED {
            let (bytes, nice) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("read within 10 s")
                .expect("sender alive");
            match reply(&bytes) {
                RangeReply::Entries { from, entries } => {
                    assert_eq!(from, EventIdx(3));
                    assert_eq!(entries, (3..=8).map(entry).collect::<Vec<_>>());
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(nice, (loop_nice + BULK_NICE).min(19));
        }
        assert_eq!(server.deferred(), 1);
        assert_eq!(server.overflow(), 0);
    }

    #[tokio::test]
    async fn chunks_are_read_off_the_loop_below_its_priority_and_those_past_the_queue_on_the_caller(
    ) {
        use shoal_proto::snapshot_transfer::{EncodedSnapshot, ServeAction, SnapshotServer};
        use shoal_proto::wire::SnapshotRequest;
        let bytes: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let mut snapshots = SnapshotServer::default();
        let snap = EncodedSnapshot::new(EventIdx(7), bytes.clone(), [0; 32], 100);
        snapshots.on_built(snap, Duration::ZERO);
        let mut ask = |chunk| {
            let req = SnapshotRequest {
                session: 9,
                index: EventIdx(7),
                chunk,
            };
            match snapshots.on_request(NodeId::from("j"), req, Duration::ZERO) {
                ServeAction::Send { read, .. } => Frame {
                    version: PROTOCOL_VERSION,
                    cluster: None,
                    from: NodeId::from("m"),
                    msg: read,
                },
                other => panic!("{other:?}"),
            }
        };
        let loop_nice = nice_here();
        let server = ReadServer::new("chunk-test");
        let release = occupy(&server);
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..=QUEUED {
            let tx = tx.clone();
            let frame = ask(i as u32 % 3);
            server.serve(frame, move |bytes| tx.send((bytes, nice_here())).is_ok());
        }
        // A chunk as sent: its span of the snapshot's bytes; its number.
        let chunk = |sent: &[u8]| match wire::decode::<Direct>(sent).unwrap().msg {
            Direct::SnapshotChunk(c) => {
                assert_eq!((c.session, c.index), (9, EventIdx(7)));
                let start = c.chunk as usize * 100;
                assert_eq!(c.data, bytes[start..(start + 100).min(250)]);
                c.chunk
            }
            other => panic!("{other:?}"),
        };
        // The one past the queue is read at once, on the caller.
        let (first, nice) = rx.try_recv().expect("read on the caller");
        assert_eq!(chunk(&first), QUEUED as u32 % 3);
        assert_eq!(nice, loop_nice);
        drop(release);
        let mut read = Vec::new();
        for _ in 0..QUEUED {
            let (sent, nice) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("read within 10 s")
                .expect("sender alive");
            read.push(chunk(&sent));
            assert_eq!(nice, (loop_nice + BULK_NICE).min(19));
        }
        // Two readers: in any order.
        let mut asked: Vec<u32> = (0..QUEUED as u32).map(|i| i % 3).collect();
        asked.sort();
        read.sort();
        assert_eq!(read, asked);
        assert_eq!(server.deferred(), 1);
    }
}
