//! shoal's log entries and memberships as raft-rs spells them, and back.

use raft::eraftpb::{ConfState, Entry, EntryType};
use shoal_log::MembershipRecord;
use shoal_model::{EntryKind, EventIdx, LogEntry, Term};

pub(super) fn to_log_entry(e: &Entry) -> LogEntry {
    LogEntry {
        idx: EventIdx(e.index),
        term: Term(e.term),
        kind: match e.get_entry_type() {
            EntryType::EntryNormal => EntryKind::Normal,
            _ => EntryKind::ConfChange,
        },
        data: e.get_data().to_vec(),
        context: e.get_context().to_vec(),
    }
}

pub(super) fn to_raft_entry(e: &LogEntry) -> Entry {
    let mut r = Entry {
        index: e.idx.0,
        term: e.term.0,
        ..Default::default()
    };
    r.set_entry_type(match e.kind {
        EntryKind::Normal => EntryType::EntryNormal,
        EntryKind::ConfChange => EntryType::EntryConfChange,
    });
    r.set_data(e.data.clone().into());
    r.set_context(e.context.clone().into());
    r
}

pub(super) fn membership_of(cs: &ConfState) -> MembershipRecord {
    MembershipRecord {
        voters: cs.voters.clone(),
        learners: cs.learners.clone(),
    }
}
