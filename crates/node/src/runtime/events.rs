//! Applied events for external subscribers (`GET /v1/events`), read from
//! the log's files on a blocking thread through a `LogReader`: however
//! many subscribers read, and however far back, the node's loop does not
//! wait for them. Nor does it share the cores with all of them: at most
//! `READ_SLOTS` reads run at once, and the rest wait their turn.

use shoal_log::{LogError, LogReader};
use shoal_model::{Envelope, EventIdx, LogEntry};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Subscribers' log reads (and decodes) under way at once, at most. Each
/// keeps a core busy while it lasts: a hundred subscribers replaying a
/// long log at once, each on its own blocking thread, left the node's
/// loop a hundredth of the CPU, late enough with Raft's heartbeats that
/// the voters elected another master.
const READ_SLOTS: usize = 2;

#[derive(Clone, Debug)]
pub(crate) struct EventReader {
    log: LogReader,
    slots: Arc<Semaphore>,
}

impl EventReader {
    pub(crate) fn new(log: LogReader) -> Self {
        EventReader {
            log,
            slots: Arc::new(Semaphore::new(READ_SLOTS)),
        }
    }

    /// Events `from..=applied`, about `max_bytes` of them; `Err(floor)`
    /// when the log does not hold `from` (the subscriber needs State).
    pub(crate) async fn read(
        &self,
        from: EventIdx,
        applied: EventIdx,
        max_bytes: usize,
    ) -> Result<Vec<Envelope>, EventIdx> {
        let from = from.max(EventIdx(1));
        if from > applied {
            return Ok(vec![]);
        }
        // Never closed: a permit, held until the read is done.
        let _slot = self.slots.acquire().await;
        let log = self.log.clone();
        let read = tokio::task::spawn_blocking(move || {
            let read = log.read(from, applied, max_bytes);
            envelopes(from, applied, log.first_index(), read)
        })
        .await;
        // Err: the blocking pool is shutting down, the node stops.
        read.unwrap_or(Ok(vec![]))
    }
}

/// What a read of the log gives a subscriber: the events from `from` on,
/// or where to start over from State.
fn envelopes(
    from: EventIdx,
    applied: EventIdx,
    floor: EventIdx,
    read: Result<Vec<LogEntry>, LogError>,
) -> Result<Vec<Envelope>, EventIdx> {
    let entries = match read {
        Ok(entries) => entries,
        Err(_) => return Err(floor.max(from.next())),
    };
    // Written a moment after it was applied: nothing to send yet.
    let Some(head) = entries.first() else {
        return Ok(vec![]);
    };
    // A log that does not start at `from` (a gap) is treated as compacted.
    if head.idx != from {
        return Err(applied.next().max(floor));
    }
    entries
        .iter()
        .map(|e| e.envelope())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| floor.max(from.next()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::{EntryKind, Term};

    fn entry(idx: u64, data: Vec<u8>) -> LogEntry {
        LogEntry {
            idx: EventIdx(idx),
            term: Term(1),
            kind: EntryKind::Normal,
            data,
            context: vec![],
        }
    }

    #[test]
    fn events_start_where_asked_or_send_the_subscriber_to_state() {
        let ok = envelopes(
            EventIdx(5),
            EventIdx(6),
            EventIdx(1),
            Ok(vec![entry(5, vec![]), entry(6, vec![])]),
        )
        .unwrap();
        assert_eq!(ok.iter().map(|e| e.idx.0).collect::<Vec<_>>(), [5, 6]);
        // Nothing written yet: wait, do not restart.
        assert_eq!(
            envelopes(EventIdx(5), EventIdx(6), EventIdx(1), Ok(vec![])),
            Ok(vec![])
        );
        // A gap: State, then go on after what is applied.
        assert_eq!(
            envelopes(
                EventIdx(5),
                EventIdx(9),
                EventIdx(1),
                Ok(vec![entry(7, vec![])])
            ),
            Err(EventIdx(10))
        );
        // Compacted under the reader.
        assert_eq!(
            envelopes(
                EventIdx(5),
                EventIdx(9),
                EventIdx(8),
                Err(LogError::Compacted(EventIdx(5)))
            ),
            Err(EventIdx(8))
        );
        // An entry that does not decode is never sent as an event.
        assert!(envelopes(
            EventIdx(5),
            EventIdx(5),
            EventIdx(1),
            Ok(vec![entry(5, vec![0xff; 9])])
        )
        .is_err());
    }
}
