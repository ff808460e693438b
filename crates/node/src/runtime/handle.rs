//! The handle API clients (the HTTP API, the binary, tests) hold: bounded
//! calls into the event loop with oneshot replies, and a `watch` of the
//! node's view for reads that need no round trip.

use crate::runtime::events::EventReader;
use shoal_model::{
    Command, CommandId, Envelope, EventIdx, Op, OutputChunk, State, StateHash, TaskId,
};
use shoal_proto::node::{Metrics, PeerSummary, Status};
use shoal_proto::wire::{CommandReply, Refusal};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// What the API reads without asking the loop: refreshed as the node runs.
#[derive(Clone, Debug)]
pub struct View {
    pub status: Status,
    pub metrics: Metrics,
    pub peers: Vec<PeerSummary>,
    pub events_per_sec: f64,
    pub listen: Vec<String>,
    pub started: Instant,
    /// Frames from the network that did not decode or lied about their
    /// sender, dropped.
    pub bad_frames: u64,
    /// Messages dropped because the network actor's queue was full.
    pub send_overflow: u64,
    /// Range requests answered "not yet" because too many range reads
    /// were under way or waiting.
    pub ranges_deferred: u64,
    /// Snapshot chunks and range replies held back by `--bulk-rate`.
    pub bulk_held: u64,
    /// A snapshot download under way.
    pub catch_up: Option<CatchUpProgress>,
    /// What the network actor counted.
    pub net: shoal_net::NetStats,
    /// The node's latency histograms (shared handles).
    pub timings: super::Timings,
    /// What each node last reported of its capacity, build and hearing,
    /// and how long ago.
    pub capacities: Vec<(shoal_model::NodeMetrics, Duration)>,
}

/// A snapshot of State taken for a backup.
#[derive(Debug)]
pub struct Backup {
    pub index: EventIdx,
    pub state_hash: StateHash,
    /// The encoded snapshot, then its SHA-256: a snapshot file's bytes.
    pub file: Vec<u8>,
}

/// How far a snapshot download has come.
pub type CatchUpProgress = shoal_proto::snapshot_transfer::Progress;

/// A call from a handle into the event loop.
#[derive(Debug)]
pub(super) enum Call {
    Submit {
        cmd: Box<Command>,
        reply: oneshot::Sender<CommandReply>,
    },
    State(oneshot::Sender<State>),
    /// A consistent read asks for the index to read at.
    ReadIndex(oneshot::Sender<CommandReply>),
    /// A client follows a task's output: subscribe at the node running it.
    WatchOutput(TaskId),
    /// The nodes' reports are read here: a follower asks a member.
    WantReports,
    /// What this node keeps of a task's output.
    ReadOutput(TaskId, oneshot::Sender<Vec<OutputChunk>>),
    /// Whether some live node runs user commands.
    ExecAvailable(oneshot::Sender<bool>),
    /// Test-only: delay every outgoing message.
    FaultDelay(Duration),
}

/// Calls from clients waiting at once; more are refused as busy.
pub(super) const MAX_CALLS: usize = 1024;

/// A cloneable handle to a running node.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    pub(super) tx: mpsc::Sender<Call>,
    pub(super) view: watch::Receiver<Arc<View>>,
    pub(super) stop: mpsc::Sender<()>,
    pub(super) output: broadcast::Sender<OutputChunk>,
    pub(super) events: EventReader,
}

impl NodeHandle {
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    pub fn view_receiver(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// Submits a command; `id` makes retries idempotent (a fresh one is
    /// minted if none is given).
    pub async fn submit(&self, op: Op, id: Option<CommandId>) -> CommandReply {
        let id = id.unwrap_or_else(|| CommandId(format!("{:032x}", rand::random::<u128>())));
        let (tx, rx) = oneshot::channel();
        let call = Call::Submit {
            cmd: Box::new(Command { id, op }),
            reply: tx,
        };
        if self.tx.try_send(call).is_err() {
            return Err(Refusal::Busy);
        }
        rx.await.unwrap_or(Err(Refusal::Timeout))
    }

    /// An index at or past every write committed before this call, for a
    /// consistent read (Raft's ReadIndex: no log entry is written).
    pub async fn read_index(&self) -> Result<EventIdx, Refusal> {
        let (tx, rx) = oneshot::channel();
        if self.tx.try_send(Call::ReadIndex(tx)).is_err() {
            return Err(Refusal::Busy);
        }
        rx.await
            .unwrap_or(Err(Refusal::Timeout))
            .map(|(idx, _)| idx)
    }

    /// A copy of State (O(1): persistent maps).
    pub async fn state(&self) -> Option<State> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Call::State(tx)).await.ok()?;
        rx.await.ok()
    }

    /// State once it has applied `idx`, or None if that takes longer than
    /// `within` (or the node stops).
    pub async fn state_at(&self, idx: EventIdx, within: Duration) -> Option<State> {
        let mut rx = self.view.clone();
        // The guard `wait_for` returns is not Send: drop it before awaiting.
        let reached = matches!(
            tokio::time::timeout(within, rx.wait_for(|v| v.status.applied_index >= idx)).await,
            Ok(Ok(_))
        );
        if !reached {
            return None;
        }
        self.state().await.filter(|s| s.index() >= idx)
    }

    /// State as a snapshot file for a backup (`shoal snapshot save`), as of
    /// a read index: every write acknowledged before the call is in it.
    /// Encoded on a blocking thread.
    pub async fn backup(&self) -> Result<Backup, Refusal> {
        const WITHIN: Duration = Duration::from_secs(10);
        let idx = self.read_index().await?;
        let state = self.state_at(idx, WITHIN).await.ok_or(Refusal::Timeout)?;
        let (index, state_hash) = (state.index(), state.hash());
        let file = tokio::task::spawn_blocking(move || {
            let (mut bytes, sha) =
                shoal_log::encode_snapshot(&state, super::snapshot_builder::LEVEL);
            bytes.extend_from_slice(&sha);
            bytes
        })
        .await
        .map_err(|_| Refusal::Timeout)?;
        Ok(Backup {
            index,
            state_hash,
            file,
        })
    }

    /// Live output chunks of every task this node hears of; call
    /// `watch_output` (again every second or so) to hear a task's.
    pub fn output(&self) -> broadcast::Receiver<OutputChunk> {
        self.output.subscribe()
    }

    /// Asks for a task's output to be sent here for a few seconds.
    pub fn watch_output(&self, task: &TaskId) {
        let _ = self.tx.try_send(Call::WatchOutput(task.clone()));
    }

    /// The nodes' reports are being read here (`/v1/nodes`, the
    /// dashboard): on a follower, ask a member for those it does not hear
    /// (`View::capacities` holds them a moment later). Call it on every
    /// read; a follower asks at most once a metrics interval.
    pub fn want_reports(&self) {
        let _ = self.tx.try_send(Call::WantReports);
    }

    /// What this node keeps of a task's output (bounded ring).
    pub async fn read_output(&self, task: &TaskId) -> Vec<OutputChunk> {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Call::ReadOutput(task.clone(), tx))
            .await
            .is_err()
        {
            return vec![];
        }
        rx.await.unwrap_or_default()
    }

    /// Applied events from `from` on (about `max_bytes` of them), or
    /// `Err(floor)` when the log no longer holds `from`. Read from the log's
    /// files on a blocking thread: the node's loop never waits for it.
    pub async fn read_events(
        &self,
        from: EventIdx,
        max_bytes: usize,
    ) -> Result<Vec<Envelope>, EventIdx> {
        let applied = self.view.borrow().status.applied_index;
        self.events.read(from, applied, max_bytes).await
    }

    /// Test-only fault injection: hold every outgoing message for `d`.
    pub fn set_fault_delay(&self, d: Duration) {
        let _ = self.tx.try_send(Call::FaultDelay(d));
    }

    /// Whether some live node of the cluster runs user commands.
    pub async fn exec_available(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Call::ExecAvailable(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Asks the node to stop.
    pub fn shutdown(&self) {
        let _ = self.stop.try_send(());
    }
}
