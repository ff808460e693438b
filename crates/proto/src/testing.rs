//! What the cores' unit tests share: States built from events, log
//! entries, and nodes' reports.

use shoal_model::{
    ClusterId, Command, CommandId, EntryKind, Envelope, Event, EventIdx, FencingToken, LogEntry,
    NodeId, NodeMetrics, Op, PortRange, Resources, Runner, State, TaskId, TaskSpec, Term,
};

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

/// Applies a client command with id `id`.
pub fn command(state: &mut State, id: &str, op: Op) {
    let cmd = Command {
        id: CommandId::from(id),
        op,
    };
    apply(state, Event::Command { cmd, at_ms: 0 });
}

/// A synthetic task asking for `cpu_milli`.
pub fn task_spec(cpu_milli: u32, timeout_ms: Option<u64>) -> TaskSpec {
    TaskSpec {
        runner: Runner::Synthetic {
            chunks: 1,
            interval_ms: 10,
            exit_code: 0,
        },
        timeout_ms,
        node: None,
        labels: Default::default(),
        resources: Resources {
            cpu_milli,
            mem_bytes: 0,
        },
        max_attempts: 3,
    }
}

/// Submits task `task` and grants it to `node` with a 5 s lease; returns
/// the grant's token.
pub fn leased_task(
    state: &mut State,
    task: &str,
    node: &str,
    timeout_ms: Option<u64>,
) -> FencingToken {
    let spec = task_spec(0, timeout_ms);
    command(state, task, Op::TaskSubmit { spec });
    apply(
        state,
        Event::TaskGranted {
            task: TaskId::from(task),
            node: NodeId::from(node),
            lease_ms: 5000,
        },
    );
    FencingToken(state.index().0)
}

/// A node's metrics: `cpu` free, 1 GiB, on a host of its own.
pub fn metrics(node: &str, cpu: u32) -> NodeMetrics {
    NodeMetrics {
        node: NodeId::from(node),
        cpu_free_milli: cpu,
        mem_free_bytes: 1 << 30,
        disk_free_bytes: 1 << 40,
        running: 0,
        labels: Default::default(),
        exec: false,
        host: node.bytes().fold(0, |h, b| h * 131 + u64::from(b)),
        replica_ports: PortRange::DEFAULT,
        ports_taken: vec![],
        version: String::new(),
        started_ms: 0,
        unheard: vec![],
        api: String::new(),
        worker: true,
        voter: true,
    }
}
