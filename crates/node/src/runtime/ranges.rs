//! Range replies (a peer's NACK, a joiner's tail) read from the log's
//! files and encoded off the event loop (`Output::SendRange`). In a join
//! storm a member's loop spent 4-7 ms reading a 2 MiB range and as long
//! again encoding it, several to a turn, and every write waited behind
//! them. Here at most `READ_SLOTS` run at once, at most `QUEUED` wait, and
//! a request past those is answered "not yet" at once (the asker asks
//! again, or another replica), counted.

use shoal_proto::node::RangeRead;
use shoal_proto::wire::{self, Direct, Frame};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::error;

/// Range reads (and encodes) under way at once, at most: each keeps a
/// core busy while it lasts.
const READ_SLOTS: usize = 2;
/// Range requests read or waiting to be, at most: past this a peer that
/// asks for ranges faster than they can be read hears "not yet" instead
/// of queueing work without bound.
const QUEUED: usize = 16;

#[derive(Clone, Debug)]
pub(super) struct RangeServer {
    slots: Arc<Semaphore>,
    tickets: Arc<Semaphore>,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    deferred: AtomicU64,
    overflow: AtomicU64,
}

impl Default for RangeServer {
    fn default() -> Self {
        RangeServer {
            slots: Arc::new(Semaphore::new(READ_SLOTS)),
            tickets: Arc::new(Semaphore::new(QUEUED)),
            counts: Arc::default(),
        }
    }
}

impl RangeServer {
    /// Reads the range, encodes the reply and hands its bytes to `send`
    /// (false: the network's queue was full), off the loop. Returns at
    /// once; must be called on the runtime.
    pub fn serve<S>(&self, frame: Frame<RangeRead>, send: S)
    where
        S: FnOnce(Vec<u8>) -> bool + Send + 'static,
    {
        let Ok(ticket) = self.tickets.clone().try_acquire_owned() else {
            self.counts.deferred.fetch_add(1, Ordering::Relaxed);
            self.reply(&frame.map(RangeRead::deferred), send);
            return;
        };
        let (slots, this) = (self.slots.clone(), self.clone());
        tokio::spawn(async move {
            let _ticket = ticket;
            // Never closed.
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let read = tokio::task::spawn_blocking(move || {
                this.reply(&frame.map(RangeRead::reply), send);
            });
            // Err: the blocking pool is shutting down, the node stops.
            let _ = read.await;
        });
    }

    fn reply<S: FnOnce(Vec<u8>) -> bool>(&self, frame: &Frame<Direct>, send: S) {
        match wire::encode(frame) {
            Ok(bytes) => {
                if !send(bytes) {
                    self.counts.overflow.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => error!(error = %e, "could not encode a range reply"),
        }
    }

    /// Range requests answered "not yet" because too many were queued.
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

    #[tokio::test]
    async fn ranges_are_read_off_the_loop_and_those_past_the_queue_hear_not_yet() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = DurableLog::open(dir.path(), LogConfig::default()).unwrap();
        log.append(&(1..=10).map(entry).collect::<Vec<_>>())
            .unwrap();
        let server = RangeServer::default();
        // Every read slot taken: requests queue and none is read yet.
        let held = server
            .slots
            .clone()
            .acquire_many_owned(READ_SLOTS as u32)
            .await
            .unwrap();
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
            server.serve(frame, move |bytes| tx.send(bytes).is_ok());
        }
        // The one past the queue is answered at once.
        let first = rx.try_recv().expect("answered without a read");
        assert_eq!(
            reply(&first),
            RangeReply::NotYet {
                from: EventIdx(3),
                last: EventIdx(8)
            }
        );
        assert_eq!(server.deferred(), 1);
        tokio::task::yield_now().await;
        assert!(
            rx.try_recv().is_err(),
            "nothing read while the slots are held"
        );
        drop(held);
        for _ in 0..QUEUED {
            let bytes = tokio::time::timeout(Duration::from_secs(10), rx.recv())
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
        }
        assert_eq!(server.deferred(), 1);
        assert_eq!(server.overflow(), 0);
    }
}
