//! The work a node runs: tasks leased to it (`Worker`), replicas State
//! places on it (`Replicas`), their leases with the master, the capacity
//! it gossips for placement, and the output of its runs.
//!
//! Task output never enters the log (invariant 5). The node running a task
//! keeps a bounded ring per task and sends chunks one-to-one to the nodes
//! whose clients follow the task; such a node subscribes at the runner for
//! a few seconds at a time (`Input::WatchOutput`, renewed by its client)
//! and keeps what it receives in its own ring.

use super::io::{HostMeasure, Output};
use super::timers::Timer;
use super::Node;
use crate::log_store::LogStore;
use crate::replicas::ReplicaAction;
use crate::wire::Direct;
use crate::worker::{StopReason, WorkerAction};
use shoal_model::{
    ExitClass, FencingToken, NodeId, NodeMetrics, OutputChunk, PortRange, TaskId, TransientEvent,
};
use std::time::Duration;

/// Output chunks sent in one message, by size.
const OUTPUT_BATCH_BYTES: usize = 1 << 20;
/// Output chunks taken from one message at most.
const OUTPUT_CHUNKS_PER_MESSAGE: usize = 4096;

impl<L: LogStore> Node<L> {
    /// Runs under way on this node.
    pub fn runs(&self) -> usize {
        self.worker.running()
    }

    /// Whether some live node runs user commands.
    pub fn exec_available(&self) -> bool {
        self.cfg.exec
            || self
                .capacities
                .exec_available(&self.state, self.now, self.cfg.node_timeout * 3)
    }

    /// What this node keeps of a task's output, oldest first.
    pub fn task_output(&self, task: &TaskId) -> Vec<OutputChunk> {
        self.output.chunks(task)
    }

    /// Worker and replicas compared with State, and their own timers.
    pub(super) fn sync_work(&mut self, out: &mut Vec<Output>) {
        let acts = self.worker.sync(&self.cfg.node, &self.state, self.now);
        self.run_worker(acts, out);
        if self.worker.next_wake().is_some_and(|t| t <= self.now) {
            let acts = self.worker.tick(self.now);
            self.run_worker(acts, out);
        }
        if std::mem::take(&mut self.replicas_dirty) && self.state.cluster_id().is_some() {
            let draining = self.leaving.is_some();
            let acts = self.replicas.sync(&self.cfg.node, &self.state, draining);
            self.run_replicas(acts, out);
        }
        if self.replicas.next_wake().is_some_and(|t| t <= self.now) {
            let acts = self.replicas.tick(self.now);
            self.run_replicas(acts, out);
        }
    }

    pub(super) fn on_run_exited(
        &mut self,
        token: FencingToken,
        exit_code: i32,
        class: ExitClass,
        out: &mut Vec<Output>,
    ) {
        if self.replicas.holds(token) {
            let acts = self.replicas.on_exit(token, exit_code, self.now);
            self.run_replicas(acts, out);
        } else {
            let acts = self
                .worker
                .on_exit(token, exit_code, class, &self.state, &self.cfg.node);
            self.run_worker(acts, out);
        }
    }

    pub(super) fn run_worker(&mut self, acts: Vec<WorkerAction>, out: &mut Vec<Output>) {
        for a in acts {
            match a {
                WorkerAction::Start(run) => out.push(Output::StartRun(run)),
                WorkerAction::Stop { token, reason } => out.push(Output::StopRun { token, reason }),
                WorkerAction::Renew { leases, at } => self.renew_leases(leases, at, out),
                WorkerAction::Report(cmd) => self.sequence(cmd, None, out),
            }
        }
    }

    pub(super) fn run_replicas(&mut self, acts: Vec<ReplicaAction>, out: &mut Vec<Output>) {
        for a in acts {
            match a {
                ReplicaAction::Start(run) => out.push(Output::StartReplica(run)),
                ReplicaAction::Stop { token } => out.push(Output::StopRun {
                    token,
                    reason: StopReason::Cancelled,
                }),
                ReplicaAction::Report(cmd) => self.sequence(cmd, None, out),
            }
        }
    }

    /// The worker asks the master to renew its leases (itself, if master).
    fn renew_leases(
        &mut self,
        leases: Vec<(TaskId, FencingToken)>,
        at: Duration,
        out: &mut Vec<Output>,
    ) {
        match self.master_view.id.clone() {
            Some(l) if l == self.cfg.node => {
                let me = self.cfg.node.clone();
                let tokens = self.grant_renewals(&me, &leases);
                self.worker.on_renewed(&tokens, at);
            }
            Some(l) => {
                let at_ms = at.as_millis() as u64;
                self.send(l, Direct::LeaseRenew { leases, at_ms }, out)
            }
            None => {}
        }
    }

    /// As master: the leases `from` still holds, renewed on this clock. A
    /// master cut off from its quorum may be replaced at any moment: it
    /// renews nothing.
    fn grant_renewals(
        &mut self,
        from: &NodeId,
        leases: &[(TaskId, FencingToken)],
    ) -> Vec<FencingToken> {
        if !self.leads_with_quorum() {
            return vec![];
        }
        match self.master.as_mut() {
            Some(m) => m.planner.renew(from, leases, &self.state, self.now),
            None => vec![],
        }
    }

    pub(super) fn on_lease_renew(
        &mut self,
        from: NodeId,
        leases: Vec<(TaskId, FencingToken)>,
        at_ms: u64,
        out: &mut Vec<Output>,
    ) {
        if !self.leads_with_quorum() {
            return;
        }
        let tokens = self.grant_renewals(&from, &leases);
        self.send(from, Direct::LeaseRenewed { tokens, at_ms }, out);
    }

    pub(super) fn on_lease_renewed(&mut self, from: &NodeId, tokens: &[FencingToken], at_ms: u64) {
        if self.master_view.id.as_ref() == Some(from) {
            self.worker.on_renewed(tokens, Duration::from_millis(at_ms));
        }
    }

    /// What each node last reported of its capacity (this one included),
    /// and how long ago.
    pub fn capacities(&self) -> Vec<(NodeMetrics, Duration)> {
        self.capacities
            .reports()
            .map(|c| (c.metrics.clone(), self.now.saturating_sub(c.at)))
            .collect()
    }

    /// The shell measured this host (`Output::MeasureHost`).
    pub(super) fn on_host_capacity(&mut self, mut m: HostMeasure) {
        m.ports_taken.truncate(PortRange::MAX_TAKEN);
        self.host = m;
    }

    /// On the metrics timer: gossip this node's capacity (as last
    /// measured) and ask the shell for a new measurement.
    pub(super) fn publish_metrics(&mut self, out: &mut Vec<Output>) {
        self.timers
            .set(Timer::Metrics, self.now + self.cfg.metrics_every);
        let m = NodeMetrics {
            node: self.cfg.node.clone(),
            cpu_free_milli: self.host.cpu_free_milli,
            mem_free_bytes: self.host.mem_free_bytes,
            disk_free_bytes: self.host.disk_free_bytes,
            running: (self.worker.running() + self.replicas.running()) as u32,
            labels: self.cfg.labels.clone(),
            exec: self.cfg.exec,
            host: self.cfg.host,
            replica_ports: self.cfg.replica_ports,
            ports_taken: self.host.ports_taken.clone(),
            version: self.cfg.version.clone(),
            started_ms: self.cfg.started_ms,
            unheard: self.unheard(),
            api: self.cfg.api_url.clone(),
            worker: self.cfg.takes_work,
            voter: self.cfg.voter,
        };
        self.capacities.on_metrics(m.clone(), self.now);
        self.announce(TransientEvent::Metrics(m), out);
        out.push(Output::MeasureHost {
            replica_ports: self.cfg.replica_ports,
        });
    }

    pub(super) fn on_metrics(&mut self, from: &NodeId, m: NodeMetrics) {
        if m.node == *from {
            self.capacities.on_metrics(m, self.now);
        } else {
            self.metrics.bad_messages += 1;
        }
    }

    /// A chunk this node recorded: for its own clients, and for the nodes
    /// subscribed to the task.
    pub(super) fn record_output(&mut self, chunk: OutputChunk, out: &mut Vec<Output>) {
        let Some(subscribers) = self.output.record(chunk.clone(), self.now) else {
            return;
        };
        for node in subscribers {
            self.send(node, Direct::Output(vec![chunk.clone()]), out);
        }
        out.push(Output::TaskOutput(chunk));
    }

    /// A client here follows a task: subscribe at the node that runs (or
    /// ran) it, from what this node does not have yet.
    pub(super) fn watch_output(&mut self, task: &TaskId, out: &mut Vec<Output>) {
        let Some(t) = self.state.tasks().get(task) else {
            return;
        };
        let Some(node) = t.node.clone() else {
            return;
        };
        if node == self.cfg.node {
            return;
        }
        let latest = t.attempt;
        // Earlier attempts' output: ask from the start of the first one
        // this node has nothing of.
        let (attempt, from_seq) = (1..=latest)
            .find(|a| self.output.next_seq(task, *a) == 0)
            .map_or((latest, self.output.next_seq(task, latest)), |a| (a, 0));
        let msg = Direct::OutputSubscribe {
            task: task.clone(),
            attempt,
            from_seq,
        };
        self.send(node, msg, out);
    }

    /// A node subscribes to a task's output here: what it has not seen,
    /// then the chunks that follow while the subscription lasts.
    pub(super) fn on_output_subscribe(
        &mut self,
        from: NodeId,
        task: &TaskId,
        attempt: u32,
        from_seq: u64,
        out: &mut Vec<Output>,
    ) {
        let backlog = self
            .output
            .subscribe(task, from.clone(), attempt, from_seq, self.now);
        let mut batch = Vec::new();
        let mut bytes = 0;
        for c in backlog {
            bytes += c.data.len() + 64;
            batch.push(c);
            if bytes >= OUTPUT_BATCH_BYTES {
                self.send(
                    from.clone(),
                    Direct::Output(std::mem::take(&mut batch)),
                    out,
                );
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.send(from, Direct::Output(batch), out);
        }
    }

    /// Output sent to this node: kept only from the node State says runs
    /// (or ran) the task; anything else is dropped and counted.
    pub(super) fn on_output(
        &mut self,
        from: &NodeId,
        chunks: Vec<OutputChunk>,
        out: &mut Vec<Output>,
    ) {
        for c in chunks.into_iter().take(OUTPUT_CHUNKS_PER_MESSAGE) {
            let runner = self
                .state
                .tasks()
                .get(&c.task)
                .and_then(|t| t.node.as_ref());
            if runner == Some(from) {
                self.record_output(c, out);
            } else {
                self.metrics.bad_messages += 1;
            }
        }
    }
}
