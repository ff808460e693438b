//! The master's side of tasks, without IO: which queued task goes to which
//! node, and which leases ran out.
//!
//! A queued task goes to an alive node that this master heard since its
//! election and lately (`HeardLately`), and that fits it: the node it
//! names if it names one, the labels it asks for, a node that runs user
//! commands if it is one, and the CPU and memory it requests, from the
//! nodes' latest metrics less what was granted since. Among those, the
//! node with the most free memory per run wins. A task queued again after
//! a transient failure waits an exponential backoff first.
//!
//! A deployment's missing replicas are placed the same way, spread first
//! (the node with the fewest replicas of that deployment wins), each with a
//! port of its node's replica range that no other replica on the same host
//! holds and no program on the host listens on; a replica on a node
//! declared dead or gone, or drained by an operator, is taken off it, and
//! placed again on the next tick. A drained node gets no new work, nor
//! does a node that reports it takes none (`--no-worker`).
//!
//! A lease runs on the master's monotonic clock from the grant, or from
//! the last renewal that reached the master; it restarts at each election
//! and never ends within one node timeout of it. It expires at its length
//! plus a margin, so a worker, which counts from when it asked, has
//! stopped its run before.

use shoal_model::{
    Event, FencingToken, Liveness, NodeId, NodeInfo, NodeMetrics, PortRange, Runner, State, Task,
    TaskId, TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct PlacementConfig {
    pub lease: Duration,
    /// Added to a lease before the master re-places its task.
    pub margin: Duration,
    /// Backoff before the second attempt; doubles per attempt.
    pub retry_backoff: Duration,
    pub max_backoff: Duration,
    /// Grants proposed per plan tick at most.
    pub grants_per_tick: usize,
    /// Metrics older than this are not trusted for placement.
    pub metrics_fresh: Duration,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            lease: Duration::from_secs(5),
            margin: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            grants_per_tick: 64,
            metrics_fresh: Duration::from_secs(5),
        }
    }
}

/// Whether the master heard a node since its election and lately (within
/// half the node timeout, before its failure detector would suspect it:
/// `master::liveness::heard_lately`). State records a node suspect only
/// once the master's proposal is applied, and a master elected a moment
/// ago counts a node's silence from its election: a node cut off with the
/// last master is alive in State until then, and work placed on it would
/// only wait for its lease to run out, an attempt lost. Every node that
/// can be reached is heard within a heartbeat of an election.
pub type HeardLately<'a> = &'a dyn Fn(&NodeId) -> bool;

/// What a node last said of its capacity.
#[derive(Clone, Debug)]
pub struct Capacity {
    pub metrics: NodeMetrics,
    pub at: Duration,
}

/// Every node's latest capacity, from the metrics each gossips. Every node
/// keeps it (it answers "can anyone run user commands?"); the master's
/// planner places by it.
#[derive(Debug, Default)]
pub struct Capacities {
    latest: BTreeMap<NodeId, Capacity>,
}

/// Bytes of a node's reported version or API address kept at most.
const MAX_TEXT: usize = 128;

/// Nodes whose capacity is kept at most (a LAN cluster is far smaller).
const MAX_NODES: usize = 4096;

impl Capacities {
    /// Members a node reports it does not hear, kept at most.
    pub const MAX_UNHEARD: usize = 256;

    /// A node's report, cut to bounds: a peer's list of taken ports is
    /// searched for every port placement tries, and its version, API
    /// address and the members it does not hear are shown.
    pub fn on_metrics(&mut self, mut m: NodeMetrics, now: Duration) {
        m.ports_taken.truncate(PortRange::MAX_TAKEN);
        m.unheard.truncate(Self::MAX_UNHEARD);
        cut_text(&mut m.version);
        cut_text(&mut m.api);
        if self.latest.len() < MAX_NODES || self.latest.contains_key(&m.node) {
            self.latest.insert(
                m.node.clone(),
                Capacity {
                    metrics: m,
                    at: now,
                },
            );
        }
    }

    pub fn get(&self, node: &NodeId) -> Option<&Capacity> {
        self.latest.get(node)
    }

    /// Every node's latest report, with when it came.
    pub fn reports(&self) -> impl Iterator<Item = &Capacity> {
        self.latest.values()
    }

    /// Whether any live node could ever run user commands.
    pub fn exec_available(&self, state: &State, now: Duration, fresh: Duration) -> bool {
        self.latest.values().any(|c| {
            let node = &c.metrics.node;
            c.metrics.exec
                && now.saturating_sub(c.at) < fresh
                && state
                    .nodes()
                    .get(node)
                    .is_some_and(|n| n.liveness == Liveness::Alive && !self.off_work(node, n))
        })
    }

    /// Whether `node` was taken off work: drained by an operator, or it
    /// reports that it takes none (`--no-worker`).
    fn off_work(&self, node: &NodeId, info: &NodeInfo) -> bool {
        info.drained || self.get(node).is_some_and(|c| !c.metrics.worker)
    }
}

/// The master's placement state: lease clocks and what it proposed. It
/// exists while the node is master, so every term starts it afresh.
#[derive(Debug, Default)]
pub struct Planner {
    /// Lease clock per token: the grant's first sighting or last renewal.
    renewed: BTreeMap<FencingToken, Duration>,
    /// Grants and expiries proposed, not yet applied.
    pending: BTreeMap<TaskId, Duration>,
    /// A requeued task is not granted before then.
    not_before: BTreeMap<(TaskId, u32), Duration>,
    /// Replica placements and removals proposed, not yet applied.
    pending_replicas: BTreeMap<(String, u32), Duration>,
}

/// Where a node's replica ports come from: the host it reported, or the
/// node itself until it reports one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PortSpace {
    Host(u64),
    Node(NodeId),
}

impl Capacities {
    fn port_space(&self, node: &NodeId) -> PortSpace {
        match self.get(node) {
            Some(c) => PortSpace::Host(c.metrics.host),
            None => PortSpace::Node(node.clone()),
        }
    }

    /// A port for a replica on `node` (`PORT` in its environment): in the
    /// node's range, not taken on its host, not in `used`.
    fn free_port(&self, node: &NodeId, used: &BTreeSet<u16>) -> Option<u16> {
        let (range, taken) = match self.get(node) {
            Some(c) => (c.metrics.replica_ports, c.metrics.ports_taken.as_slice()),
            None => (PortRange::DEFAULT, &[][..]),
        };
        range
            .ports()
            .find(|p| !used.contains(p) && !taken.contains(p))
    }
}

impl Planner {
    /// A worker asks to renew leases; returns the tokens renewed.
    pub fn renew(
        &mut self,
        from: &NodeId,
        leases: &[(TaskId, FencingToken)],
        state: &State,
        now: Duration,
    ) -> Vec<FencingToken> {
        let mut ok = Vec::new();
        for (task, token) in leases {
            let holds = state.tasks().get(task).is_some_and(|t| match &t.status {
                TaskStatus::Leased {
                    node, token: tk, ..
                }
                | TaskStatus::Running {
                    node, token: tk, ..
                } => node == from && tk == token,
                _ => false,
            });
            if holds {
                self.renewed.insert(*token, now);
                ok.push(*token);
            }
        }
        ok
    }

    /// The plan tick: lease expiries and grants to propose.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &mut self,
        cfg: &PlacementConfig,
        state: &State,
        caps: &Capacities,
        heard: HeardLately,
        now: Duration,
        leader_since: Duration,
        node_timeout: Duration,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let earliest = leader_since + node_timeout;
        self.pending
            .retain(|_, at| now.saturating_sub(*at) < Duration::from_secs(3));
        let mut live_tokens = std::collections::BTreeSet::new();
        let mut queued: Vec<(&TaskId, &Task)> = Vec::new();
        for (id, t) in state.tasks() {
            match &t.status {
                TaskStatus::Leased {
                    token, lease_ms, ..
                }
                | TaskStatus::Running {
                    token, lease_ms, ..
                } => {
                    live_tokens.insert(*token);
                    let from = *self.renewed.entry(*token).or_insert(now);
                    let deadline =
                        (from + Duration::from_millis(*lease_ms) + cfg.margin).max(earliest);
                    if now >= deadline && !self.pending.contains_key(id) {
                        self.pending.insert(id.clone(), now);
                        events.push(Event::TaskLeaseExpired {
                            task: id.clone(),
                            token: *token,
                        });
                    }
                }
                TaskStatus::Queued => queued.push((id, t)),
                _ => {}
            }
        }
        self.renewed.retain(|t, _| live_tokens.contains(t));
        let mut granted: BTreeMap<NodeId, (u32, u64, u32)> = BTreeMap::new();
        let mut grants = 0;
        for (id, t) in queued {
            if grants >= cfg.grants_per_tick {
                break;
            }
            if self.pending.contains_key(id) {
                continue;
            }
            if t.attempt > 0 {
                let wait = cfg
                    .retry_backoff
                    .saturating_mul(1 << (t.attempt - 1).min(16))
                    .min(cfg.max_backoff);
                let at = *self
                    .not_before
                    .entry((id.clone(), t.attempt))
                    .or_insert(now + wait);
                if now < at {
                    continue;
                }
            }
            let Some(node) = choose_for_task(cfg, state, caps, heard, t, now, &granted) else {
                continue;
            };
            let used = granted.entry(node.clone()).or_default();
            used.0 += t.spec.resources.cpu_milli;
            used.1 += t.spec.resources.mem_bytes;
            used.2 += 1;
            self.pending.insert(id.clone(), now);
            grants += 1;
            events.push(Event::TaskGranted {
                task: id.clone(),
                node,
                lease_ms: cfg.lease.as_millis() as u64,
            });
        }
        self.not_before.retain(|(id, _), _| {
            state
                .tasks()
                .get(id)
                .is_some_and(|t| t.status == TaskStatus::Queued)
        });
        events
    }

    /// Replica placements and removals to propose.
    pub fn plan_replicas(
        &mut self,
        cfg: &PlacementConfig,
        state: &State,
        caps: &Capacities,
        heard: HeardLately,
        now: Duration,
        settled: bool,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        self.pending_replicas
            .retain(|_, at| now.saturating_sub(*at) < Duration::from_secs(3));
        // Ports per host and replica counts per node, from State and this
        // tick.
        let mut ports: BTreeMap<PortSpace, BTreeSet<u16>> = BTreeMap::new();
        let mut per_node: BTreeMap<(&str, NodeId), u32> = BTreeMap::new();
        for (name, d) in state.deployments() {
            for p in d.placements.values() {
                let space = caps.port_space(&p.node);
                ports.entry(space).or_default().insert(p.port);
                *per_node.entry((name.as_str(), p.node.clone())).or_default() += 1;
            }
        }
        let mut granted: BTreeMap<NodeId, (u32, u64, u32)> = BTreeMap::new();
        for (name, d) in state.deployments() {
            for (r, p) in &d.placements {
                let gone = state.nodes().get(&p.node).is_none_or(|n| {
                    matches!(n.liveness, Liveness::Dead | Liveness::Left)
                        || caps.off_work(&p.node, n)
                });
                let key = (name.clone(), *r);
                if gone && settled && !self.pending_replicas.contains_key(&key) {
                    self.pending_replicas.insert(key, now);
                    events.push(Event::ReplicaUnplaced {
                        deployment: name.clone(),
                        replica: *r,
                        token: p.token,
                    });
                }
            }
            for r in 0..d.replicas {
                let key = (name.clone(), r);
                if d.placements.contains_key(&r) || self.pending_replicas.contains_key(&key) {
                    continue;
                }
                if events.len() >= cfg.grants_per_tick {
                    return events;
                }
                let Some(node) = choose_node(
                    cfg,
                    state,
                    caps,
                    heard,
                    now,
                    &d.spec.runner,
                    &d.spec.resources,
                    None,
                    &Default::default(),
                    &granted,
                    |n| {
                        per_node
                            .get(&(name.as_str(), n.clone()))
                            .copied()
                            .unwrap_or(0)
                    },
                ) else {
                    continue;
                };
                let used = ports.entry(caps.port_space(&node)).or_default();
                let Some(port) = caps.free_port(&node, used) else {
                    continue;
                };
                used.insert(port);
                *per_node.entry((name.as_str(), node.clone())).or_default() += 1;
                let g = granted.entry(node.clone()).or_default();
                g.0 += d.spec.resources.cpu_milli;
                g.1 += d.spec.resources.mem_bytes;
                g.2 += 1;
                self.pending_replicas.insert(key, now);
                events.push(Event::ReplicaPlaced {
                    deployment: name.clone(),
                    replica: r,
                    node,
                    port,
                });
            }
        }
        events
    }
}

fn choose_for_task(
    cfg: &PlacementConfig,
    state: &State,
    caps: &Capacities,
    heard: HeardLately,
    t: &Task,
    now: Duration,
    granted: &BTreeMap<NodeId, (u32, u64, u32)>,
) -> Option<NodeId> {
    let spec = &t.spec;
    choose_node(
        cfg,
        state,
        caps,
        heard,
        now,
        &spec.runner,
        &spec.resources,
        spec.node.as_ref(),
        &spec.labels,
        granted,
        |_| 0,
    )
}

/// The alive node heard lately that fits best: fewest `spread` first,
/// then the most free memory per run.
#[allow(clippy::too_many_arguments)]
fn choose_node(
    cfg: &PlacementConfig,
    state: &State,
    caps: &Capacities,
    heard: HeardLately,
    now: Duration,
    runner: &Runner,
    resources: &shoal_model::Resources,
    only: Option<&NodeId>,
    labels: &BTreeMap<String, String>,
    granted: &BTreeMap<NodeId, (u32, u64, u32)>,
    spread: impl Fn(&NodeId) -> u32,
) -> Option<NodeId> {
    let needs_exec = matches!(runner, Runner::Exec { .. });
    let mut best: Option<((std::cmp::Reverse<u32>, u64), &NodeId)> = None;
    for (node, info) in state.nodes() {
        if info.liveness != Liveness::Alive || !heard(node) || caps.off_work(node, info) {
            continue;
        }
        if only.is_some_and(|n| n != node) {
            continue;
        }
        let Some(c) = caps.get(node) else {
            continue;
        };
        if now.saturating_sub(c.at) >= cfg.metrics_fresh {
            continue;
        }
        let m = &c.metrics;
        if needs_exec && !m.exec {
            continue;
        }
        if labels.iter().any(|(k, v)| m.labels.get(k) != Some(v)) {
            continue;
        }
        let (cpu, mem, runs) = granted.get(node).copied().unwrap_or_default();
        let cpu_free = m.cpu_free_milli.saturating_sub(cpu);
        let mem_free = m.mem_free_bytes.saturating_sub(mem);
        if resources.cpu_milli > cpu_free || resources.mem_bytes > mem_free {
            continue;
        }
        let score = (
            std::cmp::Reverse(spread(node)),
            mem_free / (1 + m.running as u64 + runs as u64),
        );
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, node));
        }
    }
    best.map(|(_, n)| n.clone())
}

/// Cuts `s` to `MAX_TEXT` bytes, on a character boundary.
fn cut_text(s: &mut String) {
    if s.len() > MAX_TEXT {
        let cut = (0..=MAX_TEXT).rev().find(|i| s.is_char_boundary(*i));
        s.truncate(cut.unwrap_or(0));
    }
}

#[cfg(test)]
mod tests;
