//! What the cores' unit tests share: States built from events, and log
//! entries.

use shoal_model::{ClusterId, EntryKind, Envelope, Event, EventIdx, LogEntry, NodeId, State, Term};

/// Applies `event` as the next entry of `state`.
pub fn apply(state: &mut State, event: Event) {
    let idx = state.index().next();
    state
        .apply(&Envelope {
            idx,
            term: Term(1),
            event,
        })
        .expect("the next index applies");
}

/// A State of cluster "c", founded by `nodes[0]`, the others joined as
/// followers; each at address `mem://NAME`.
pub fn cluster_state(nodes: &[&str]) -> State {
    let mut s = State::new();
    apply(
        &mut s,
        Event::ClusterFounded {
            cluster_id: ClusterId::from("c"),
            founder: NodeId::from(nodes[0]),
            addr: format!("mem://{}", nodes[0]),
            at_ms: 0,
        },
    );
    for n in &nodes[1..] {
        apply(
            &mut s,
            Event::NodeJoined {
                node: NodeId::from(*n),
                addr: format!("mem://{n}"),
                at_ms: 0,
            },
        );
    }
    s
}

/// An empty normal entry at `i`.
pub fn entry(i: u64) -> LogEntry {
    LogEntry {
        idx: EventIdx(i),
        term: Term(1),
        kind: EntryKind::Normal,
        data: vec![],
        context: vec![],
    }
}
