//! The event loop: one task owns the node core and moves bytes and time
//! between it and the network actor, the API, the runner and the snapshot
//! builder. It sleeps until an input arrives or the core's wake-up is due;
//! everything the core decides comes back as outputs performed here.

use super::address_book::AddressBook;
use super::handle::{Call, CatchUpProgress, View, MAX_CALLS};
use super::host;
use super::inbound::{inbound, Inbound};
use super::pacer::Pacer;
use super::ranges::ReadServer;
use super::snapshot_builder::SnapshotBuilder;
use super::start::{wall_ms, NodeError};
use super::timings::thread_cpu;
use crate::data_dir::DataDir;
use crate::runner::{RunMsg, Runs};
use shoal_log::DurableLog;
use shoal_model::{OutputChunk, TaskId};
use shoal_net::{NetCommand, NetEvent, NetHandle};
use shoal_proto::node::{HostMeasure, Input, Node, Output, Saved};
use shoal_proto::snapshot_transfer::EncodedSnapshot;
use shoal_proto::wire::CommandReply;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

mod outbound;

/// How long a stopping node waits for its runs to be handed back.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// Events taken from one source per turn before the loop looks at the
/// others, so a flood cannot starve the API or the core's timers.
const BATCH: usize = 256;
/// The view readers see is refreshed at most this often.
const VIEW_EVERY: Duration = Duration::from_millis(50);
/// Catch-up progress is logged at most this often.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(1);

pub(super) struct EventLoop {
    node: Node<DurableLog>,
    dir: DataDir,
    net: NetHandle,
    started: Instant,
    replies: HashMap<u64, oneshot::Sender<CommandReply>>,
    next_reply: u64,
    book: AddressBook,
    view_tx: watch::Sender<Arc<View>>,
    listen: Vec<String>,
    rate: Rate,
    builder: SnapshotBuilder,
    catch_up: Option<CatchUpProgress>,
    last_progress_log: Option<Instant>,
    bad_frames: u64,
    send_overflow: u64,
    ranges: ReadServer,
    /// Snapshot chunks, read and encoded off the loop as ranges are.
    chunks: ReadServer,
    /// Snapshot chunks and range replies go out through it.
    bulk: Pacer<NetCommand>,
    /// Set by a network event the node cannot go on after.
    fatal: Option<String>,
    runs: Runs,
    output_tx: broadcast::Sender<OutputChunk>,
    /// When the core asked to be woken.
    wake: Option<tokio::time::Instant>,
    /// When the view is due to be refreshed.
    view_due: Option<tokio::time::Instant>,
    last_view: Instant,
    timings: super::Timings,
    /// When the snapshot transfer under way first reported progress.
    catch_up_since: Option<Instant>,
    meter: host::MeterThread,
    /// Where the meter's results arrive.
    measured_rx: mpsc::Receiver<HostMeasure>,
    /// Where log fsyncs run off the loop (`Output::SyncLog`) end; the
    /// core has at most one under way.
    synced_tx: mpsc::Sender<(u64, std::io::Result<()>)>,
    synced_rx: mpsc::Receiver<(u64, std::io::Result<()>)>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("node", &self.node)
            .finish()
    }
}

/// Sleeps until `at`, or forever without one.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl EventLoop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: Node<DurableLog>,
        dir: DataDir,
        net: NetHandle,
        started: Instant,
        view_tx: watch::Sender<Arc<View>>,
        listen: Vec<String>,
        builder: SnapshotBuilder,
        runs: Runs,
        output_tx: broadcast::Sender<OutputChunk>,
        bulk: Pacer<NetCommand>,
    ) -> Self {
        // The histograms the first view holds, shared from here on.
        let timings = view_tx.borrow().timings.clone();
        let (measured_tx, measured_rx) = mpsc::channel(1);
        let meter = host::MeterThread::spawn(dir.root().to_owned(), measured_tx);
        let (synced_tx, synced_rx) = mpsc::channel(4);
        EventLoop {
            synced_tx,
            synced_rx,
            meter,
            measured_rx,
            node,
            dir,
            net,
            started,
            replies: HashMap::new(),
            next_reply: 1,
            book: AddressBook::default(),
            view_tx,
            listen,
            rate: Rate::default(),
            builder,
            catch_up: None,
            last_progress_log: None,
            bad_frames: 0,
            send_overflow: 0,
            ranges: ReadServer::default(),
            chunks: ReadServer::new("shoal-chunk"),
            bulk,
            fatal: None,
            runs,
            output_tx,
            // The core is woken at once; it asks for what follows.
            wake: Some(tokio::time::Instant::now()),
            view_due: None,
            last_view: Instant::now(),
            timings,
            catch_up_since: None,
        }
    }

    pub async fn run(
        mut self,
        mut net_rx: mpsc::Receiver<NetEvent>,
        mut call_rx: mpsc::Receiver<Call>,
        mut built_rx: mpsc::Receiver<(EncodedSnapshot, Saved)>,
        mut stop_rx: mpsc::Receiver<()>,
        mut run_rx: mpsc::Receiver<RunMsg>,
    ) -> Result<(), NodeError> {
        let mut draining: Option<Instant> = None;
        loop {
            let mut inputs = Vec::new();
            tokio::select! {
                _ = stop_rx.recv(), if draining.is_none() => {
                    if self.node.cluster().is_none() {
                        info!("stopping");
                        return Ok(());
                    }
                    info!(runs = self.node.runs(), "stopping: handing back runs and leadership, announcing the leave");
                    draining = Some(Instant::now() + DRAIN_LIMIT);
                    inputs.push(Input::Drain);
                }
                Some(msg) = run_rx.recv() => inputs.push(on_run(msg)),
                ev = net_rx.recv() => {
                    let Some(ev) = ev else { return Err(NodeError::NetStopped) };
                    inputs.extend(self.on_net(ev));
                }
                Some(call) = call_rx.recv() => inputs.extend(self.on_call(call)),
                Some((snap, save)) = built_rx.recv() => inputs.push(Input::SnapshotBuilt { snap, save }),
                Some(m) = self.measured_rx.recv() => inputs.push(Input::HostCapacity(m)),
                Some((id, result)) = self.synced_rx.recv() => inputs.push(Input::LogSynced { id, result }),
                _ = until(self.wake) => {
                    self.wake = None;
                    inputs.push(Input::Wake);
                }
                _ = until(self.view_due) => self.view_due = None,
            };
            // Take whatever else is already waiting, so that it is handled
            // as one batch (one Raft round, one fsync).
            for _ in 0..BATCH {
                match net_rx.try_recv() {
                    Ok(ev) => inputs.extend(self.on_net(ev)),
                    Err(_) => break,
                }
            }
            for _ in 0..BATCH {
                match call_rx.try_recv() {
                    Ok(call) => inputs.extend(self.on_call(call)),
                    Err(_) => break,
                }
            }
            for _ in 0..BATCH {
                match run_rx.try_recv() {
                    Ok(msg) => inputs.push(on_run(msg)),
                    Err(_) => break,
                }
            }
            if !inputs.is_empty() {
                let (applied, started) = (self.node.metrics().events_applied, Instant::now());
                let cpu = thread_cpu();
                let outputs = self.node.handle_all(inputs, self.now(), wall_ms());
                self.outputs(outputs)?;
                let took = started.elapsed().as_secs_f64();
                self.timings.turn.observe(took);
                self.timings
                    .turn_cpu
                    .observe(thread_cpu().saturating_sub(cpu).as_secs_f64());
                if self.node.metrics().events_applied > applied {
                    self.timings.apply.observe(took);
                }
            }
            if let Some(why) = self.fatal.take() {
                error!(reason = %why, "stopping");
                return Err(NodeError::Fatal(why));
            }
            self.maybe_publish_view();
            if let Some(limit) = draining {
                if self.node.drained() {
                    info!("drained; stopping");
                    return Ok(());
                }
                if Instant::now() >= limit {
                    warn!(
                        runs = self.node.runs(),
                        "stopping before the drain finished; leases expire and the master notices"
                    );
                    return Ok(());
                }
            }
        }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn on_net(&mut self, ev: NetEvent) -> Option<Input> {
        match inbound(ev) {
            Inbound::Input(input) => Some(*input),
            Inbound::Bad(why) => {
                self.bad_frames += 1;
                warn!(reason = %why, "frame dropped");
                None
            }
            Inbound::Listening(a) => {
                self.listen.push(a.to_string());
                None
            }
            Inbound::IdentityConflict { reporter, other } => {
                debug!(
                    other_nonce = other.nonce,
                    other_started_ms = other.started_ms,
                    "identity conflict"
                );
                self.fatal = Some(format!(
                    "another live process uses this node's identity ({}) and started before this one \
                     (reported by peer {reporter}); refusing to go on. \
                     Was the data directory copied? Give each host its own.",
                    self.node.node_id()
                ));
                None
            }
            Inbound::Nothing => None,
        }
    }

    fn on_call(&mut self, call: Call) -> Option<Input> {
        match call {
            Call::Submit { cmd, reply } => {
                let id = self.next_reply;
                self.next_reply += 1;
                self.replies.insert(id, reply);
                Some(Input::Submit {
                    cmd: *cmd,
                    reply: id,
                })
            }
            Call::ReadIndex(reply) => {
                let id = self.next_reply;
                self.next_reply += 1;
                self.replies.insert(id, reply);
                Some(Input::ReadIndex { reply: id })
            }
            Call::State(tx) => {
                let _ = tx.send(self.node.state().clone());
                None
            }
            Call::WatchOutput(task) => Some(Input::WatchOutput(task)),
            Call::WantReports => Some(Input::WantReports),
            Call::ReadOutput(task, tx) => {
                let _ = tx.send(self.node.task_output(&task));
                None
            }
            Call::ExecAvailable(tx) => {
                let _ = tx.send(self.node.exec_available());
                None
            }
            Call::FaultDelay(d) => {
                let _ = self.net.try_send(NetCommand::SetDelay(d));
                None
            }
        }
    }

    fn outputs(&mut self, outputs: Vec<Output>) -> Result<(), NodeError> {
        for o in outputs {
            match o {
                Output::SyncLog(job) => {
                    let (done, timing) = (self.synced_tx.clone(), self.timings.log_sync.clone());
                    tokio::task::spawn_blocking(move || {
                        let started = Instant::now();
                        let result = job.wait();
                        timing.observe(started.elapsed().as_secs_f64());
                        let _ = done.blocking_send((job.id(), result));
                    });
                }
                Output::Send { to, frame } => self.send(&to, &frame),
                Output::SendRange { to, frame } => {
                    if let Some(send) = self.bulk_sender(&to) {
                        self.ranges.serve(frame, send);
                    }
                }
                Output::SendChunk { to, frame } => {
                    if let Some(send) = self.bulk_sender(&to) {
                        self.chunks.serve(frame, send);
                    }
                }
                Output::Broadcast(frame) => self.broadcast(&frame),
                Output::Reply { to, reply } => {
                    if let Some(tx) = self.replies.remove(&to) {
                        let _ = tx.send(reply);
                    }
                }
                Output::Wake { at } => {
                    self.wake = Some(tokio::time::Instant::from_std(wake_at(self.started, at)));
                }
                Output::BuildSnapshot {
                    state,
                    save,
                    chunk_bytes,
                } => self.builder.build(*state, save, chunk_bytes),
                Output::SaveSnapshot { snap } => self.builder.save(snap),
                Output::ClusterAdopted(c) => {
                    info!(cluster = %c, "cluster id recorded");
                    self.dir.set_cluster(&c)?;
                }
                Output::ClusterGivenUp(c) => {
                    info!(cluster = %c, "cluster id forgotten");
                    self.dir.forget_cluster()?;
                }
                Output::FollowCommitted(on) => {
                    let topic = shoal_net::Topic::Committed;
                    if !self.net.try_send(NetCommand::Subscribe { topic, on }) {
                        warn!(on, "network busy: committed gossip not switched");
                    }
                }
                Output::Keep(addrs) => self.keep(&addrs),
                Output::Reconnect(node) => {
                    if let Some(peer) = self.book.peer(&node) {
                        let _ = self.net.try_send(NetCommand::Reconnect(peer));
                    }
                }
                Output::MeasureHost { replica_ports } => {
                    // Asked again while one is under way: that one answers.
                    let _ = self.meter.ask(replica_ports);
                }
                Output::CatchUp(p) => self.progress(p),
                Output::SnapshotInstalled { index } => {
                    self.catch_up = None;
                    if let Some(since) = self.catch_up_since.take() {
                        let took = since.elapsed().as_secs_f64();
                        self.timings.snapshot_catch_up.observe(took);
                    }
                    self.last_progress_log = None;
                    info!(index = %index, "state loaded from snapshot; fetching the tail");
                }
                Output::StartRun(run) => {
                    info!(task = %run.task, token = run.token.0, attempt = run.attempt, "starting a run");
                    self.runs
                        .start(run.task, run.token, run.attempt, run.spec.runner, vec![]);
                }
                Output::StartReplica(r) => {
                    info!(deployment = %r.deployment, replica = r.replica, port = r.port, restarts = r.restarts, "starting a replica");
                    let env = vec![
                        ("PORT".to_owned(), r.port.to_string()),
                        ("SHOAL_DEPLOYMENT".to_owned(), r.deployment.clone()),
                        ("SHOAL_REPLICA".to_owned(), r.replica.to_string()),
                    ];
                    let name = TaskId(format!("deploy:{}/{}", r.deployment, r.replica));
                    self.runs
                        .start(name, r.token, r.restarts + 1, r.spec.runner, env);
                }
                Output::StopRun { token, reason } => {
                    info!(token = token.0, ?reason, "stopping a run");
                    self.runs.stop(token, reason);
                }
                Output::TaskOutput(chunk) => {
                    let _ = self.output_tx.send(chunk);
                }
                Output::Fatal(why) => {
                    error!(reason = %why, "stopping");
                    return Err(NodeError::Fatal(why));
                }
            }
        }
        // Replies whose client went away are dropped; the map stays small.
        if self.replies.len() > MAX_CALLS * 4 {
            self.replies.retain(|_, tx| !tx.is_closed());
        }
        Ok(())
    }

    /// Snapshot download progress: in the view, and a log line a second.
    fn progress(&mut self, p: CatchUpProgress) {
        self.catch_up = Some(p);
        self.catch_up_since.get_or_insert_with(Instant::now);
        let now = Instant::now();
        if self
            .last_progress_log
            .is_none_or(|t| now.duration_since(t) >= PROGRESS_LOG_EVERY)
        {
            self.last_progress_log = Some(now);
            info!(
                received_bytes = p.received,
                total_bytes = p.total,
                entries = p.entries,
                "catching up by snapshot"
            );
        }
    }

    /// Refreshes the view now, or once `VIEW_EVERY` has passed since the
    /// last refresh (a wake-up is set for it).
    fn maybe_publish_view(&mut self) {
        if self.last_view.elapsed() < VIEW_EVERY {
            if self.view_due.is_none() {
                let at = self.last_view + VIEW_EVERY;
                self.view_due = Some(tokio::time::Instant::from_std(at));
            }
            return;
        }
        self.last_view = Instant::now();
        self.view_due = None;
        let status = self.node.status();
        // Events applied one by one: a snapshot installed moves the
        // applied index by millions at once, and is no rate.
        let applied = self.node.metrics().events_applied;
        let eps = self.rate.update(Instant::now(), applied);
        let view = View {
            status,
            metrics: self.node.metrics().clone(),
            peers: self.node.peer_summaries(),
            events_per_sec: eps,
            listen: self.listen.clone(),
            started: self.started,
            bad_frames: self.bad_frames,
            send_overflow: self.send_overflow
                + self.ranges.overflow()
                + self.chunks.overflow()
                + self.bulk.dropped(),
            ranges_deferred: self.ranges.deferred(),
            bulk_held: self.bulk.held(),
            catch_up: self.catch_up,
            net: self.net.stats(),
            timings: self.timings.clone(),
            capacities: self.node.capacities(),
        };
        self.view_tx.send_replace(Arc::new(view));
    }
}

/// A run's output or end, as an input of the core.
fn on_run(msg: RunMsg) -> Input {
    match msg {
        RunMsg::Chunk(chunk) => Input::RunOutput(chunk),
        RunMsg::Exited {
            token,
            exit_code,
            class,
        } => Input::RunExited {
            token,
            exit_code,
            class,
        },
    }
}

/// Events applied per second over the last second or more, smoothed
/// (half the last figure, half the new one).
#[derive(Debug, Default)]
struct Rate {
    last: Option<(Instant, u64)>,
    value: f64,
}

impl Rate {
    fn update(&mut self, now: Instant, applied: u64) -> f64 {
        match self.last {
            None => self.last = Some((now, applied)),
            Some((t, a)) => {
                let dt = now.duration_since(t).as_secs_f64();
                if dt >= 1.0 {
                    let r = applied.saturating_sub(a) as f64 / dt;
                    self.value = if self.value == 0.0 {
                        r
                    } else {
                        0.5 * self.value + 0.5 * r
                    };
                    self.last = Some((now, applied));
                }
            }
        }
        self.value
    }
}

/// The instant of a wake-up the core asks for, `at` after `started`. A
/// deadline past what an `Instant` holds (a client may ask for a timeout
/// of `u64::MAX` ms) wakes an hour from now instead: waking early only
/// re-evaluates, and adding would panic.
fn wake_at(started: Instant, at: Duration) -> Instant {
    started
        .checked_add(at)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_past_any_instant_wakes_within_the_hour() {
        let started = Instant::now();
        let at = Duration::from_millis(1500);
        assert_eq!(wake_at(started, at), started + at);
        let far = wake_at(started, Duration::MAX);
        assert!(far > started && far <= Instant::now() + Duration::from_secs(3600));
    }
}
