//! When the disk stops taking writes (full, read-only, failing): the node
//! stops acknowledging anything it cannot persist, tells clients why, and
//! takes part again by itself once the disk works.
//!
//! A failed write loses nothing and tears nothing (see `DurableLog`): what
//! was not yet durable stays buffered. On the fault the node leaves Raft
//! (a voter that cannot persist must not vote or acknowledge), fails the
//! commands waiting here with `Refusal::Storage`, and refuses new ones with
//! it. Every `STORAGE_RETRY` it tries to make the buffered writes durable;
//! once that succeeds it starts Raft again from its log, as after a
//! restart. State applies nothing more meanwhile: the one batch it applied
//! that the log could not take is written first, so that the log (what a
//! restart replays) and State never tell two histories; consistent reads,
//! which would wait for more, are refused with `Refusal::Storage` too. A
//! write refused this way may still have been recorded (it can commit once
//! the disk works): a client retries it under the same
//! idempotency key, as after a time-out.

use super::apply::Applied;
use super::io::Output;
use super::timers::Timer;
use super::Node;
use crate::log_store::LogStore;
use crate::wire::Refusal;
use shoal_log::LogError;
use shoal_model::LogEntry;
use std::time::Duration;

/// How often a node whose disk failed tries it again.
pub(super) const STORAGE_RETRY: Duration = Duration::from_secs(1);
/// How often it says it is still failing.
const SAY_EVERY: Duration = Duration::from_secs(10);

/// The disk failed under this node.
#[derive(Debug)]
pub(super) struct StorageFault {
    /// What the last failure said.
    pub reason: String,
    /// When it was last logged.
    said: Duration,
    /// Raft was running when it failed: start it again on recovery.
    was_member: bool,
    /// The batch applied to State that the log could not take, with where
    /// State stood before it: written first once the disk works.
    pub unwritten: Option<(Applied, Vec<LogEntry>)>,
}

/// A client's words for a storage error.
fn describe(e: &LogError) -> String {
    let full = matches!(e, LogError::Io { source, .. }
        if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(28));
    if full {
        format!("disk full: {e}")
    } else {
        e.to_string()
    }
}

impl<L: LogStore> Node<L> {
    /// A write to the log failed.
    pub(super) fn storage_failed(&mut self, e: &LogError, out: &mut Vec<Output>) {
        let reason = describe(e);
        let was_member = self.raft.is_some() || self.storage.as_ref().is_some_and(|f| f.was_member);
        if self.storage.is_none() {
            tracing::error!(error = %reason, "the disk failed: leaving Raft and refusing writes until it works again");
        }
        self.storage = Some(StorageFault {
            reason: reason.clone(),
            said: self.now,
            was_member,
            unwritten: self.storage.take().and_then(|f| f.unwritten),
        });
        if self.raft.is_some() {
            self.stop_raft();
        }
        let acts = self.pending.fail_all(Refusal::Storage(reason));
        self.run_pending(acts, out);
        self.timers.set(Timer::Storage, self.now + STORAGE_RETRY);
    }

    /// Tries the disk again: once the buffered writes are durable and the
    /// log holds what State applied, Raft starts again from the log.
    pub(super) fn retry_storage(&mut self, out: &mut Vec<Output>) {
        let Some(fault) = self.storage.as_mut() else {
            return;
        };
        let unwritten = fault.unwritten.take();
        let written = self.log.sync().and_then(|()| match &unwritten {
            Some((before, batch)) => self.persist_applied(*before, batch, false),
            None => Ok(()),
        });
        let fault = self.storage.as_mut().expect("checked above");
        match written {
            Ok(()) => {
                let was_member = fault.was_member;
                self.storage = None;
                tracing::info!("the disk takes writes again");
                if was_member {
                    if let Err(e) = self.start_raft_from_disk() {
                        self.fail(format!("could not start raft again: {e}"), out);
                    }
                }
            }
            Err(e) => {
                fault.unwritten = unwritten;
                fault.reason = describe(&e);
                if self.now >= fault.said + SAY_EVERY {
                    fault.said = self.now;
                    tracing::warn!(error = %fault.reason, "the disk still fails; writes are refused");
                }
                self.timers.set(Timer::Storage, self.now + STORAGE_RETRY);
            }
        }
    }

    /// Why this node refuses writes now, if its disk failed.
    pub fn storage_fault(&self) -> Option<&str> {
        self.storage.as_ref().map(|f| f.reason.as_str())
    }
}
