//! Simulated runs, as a node's shell would see its processes: the
//! synthetic runner prints its chunks at its interval and exits with its
//! code; a command exits after a moment (a task) or never (a replica); a
//! stopped run exits a moment after the stop; a crash ends its node's
//! runs. Only the process that started a run hears of it.

use super::network::Payload;
use super::Sim;
use shoal_model::{ExitClass, FencingToken, NodeId, OutputChunk, Runner, Stream, TaskId};
use shoal_proto::node::Input;
use shoal_proto::worker::StopReason;
use std::time::Duration;

/// A simulated run, as the shell would see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRun {
    pub node: NodeId,
    pub task: TaskId,
    pub token: FencingToken,
    pub attempt: u32,
    pub started: Duration,
    /// When its process ended (or its node crashed).
    pub ended: Option<Duration>,
}

/// What a run's process does, addressed to the process that started it.
#[derive(Debug)]
pub(crate) struct RunEvent {
    /// Which start of the node the run belongs to.
    start: u64,
    token: FencingToken,
    kind: RunEventKind,
}

#[derive(Debug)]
enum RunEventKind {
    /// The synthetic runner's chunk `seq` (of `chunks`, one per interval).
    Chunk {
        chunk: OutputChunk,
        chunks: u32,
        interval: Duration,
        exit_code: i32,
    },
    Exited {
        exit_code: i32,
        class: ExitClass,
    },
}

fn synthetic_chunk(task: &TaskId, attempt: u32, seq: u64, chunks: u32) -> OutputChunk {
    let i = seq + 1;
    OutputChunk {
        task: task.clone(),
        attempt,
        stream: Stream::Stdout,
        seq,
        data: format!("chunk {i}/{chunks} of task {task} (attempt {attempt})\n").into_bytes(),
    }
}

/// A stopped run's process ends this long after the stop.
const STOP_TAKES: Duration = Duration::from_millis(10);

impl Sim {
    /// Runs of `task` that were under way at once (should be none unless
    /// a node crashed, which the simulator counts as ending its runs).
    pub fn overlapping_runs(&self, task: &TaskId) -> Vec<(SimRun, SimRun)> {
        let runs: Vec<&SimRun> = self.runs.iter().filter(|r| &r.task == task).collect();
        let mut out = Vec::new();
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                if a.ended.is_none_or(|e| e > b.started) {
                    out.push(((*a).clone(), (*b).clone()));
                }
            }
        }
        out
    }

    fn run_event(&mut self, node: &NodeId, at: Duration, token: FencingToken, kind: RunEventKind) {
        let start = self.nodes[node].starts;
        let ev = RunEvent { start, token, kind };
        self.deliver_to_self(node, at, Payload::Run(ev));
    }

    /// Records a run and schedules what its process does.
    pub(crate) fn start_run(
        &mut self,
        node: &NodeId,
        task: TaskId,
        token: FencingToken,
        attempt: u32,
        runner: &Runner,
    ) {
        let replica = task.as_str().starts_with("deploy:");
        self.runs.push(SimRun {
            node: node.clone(),
            task: task.clone(),
            token,
            attempt,
            started: self.now,
            ended: None,
        });
        let (after, exit_code) = match runner {
            Runner::Synthetic {
                chunks,
                interval_ms,
                exit_code,
            } if *chunks > 0 => {
                // One chunk at a time, the next when it lands; the exit
                // follows the last chunk.
                let interval = Duration::from_millis(*interval_ms);
                let ev = RunEventKind::Chunk {
                    chunk: synthetic_chunk(&task, attempt, 0, *chunks),
                    chunks: *chunks,
                    interval,
                    exit_code: *exit_code,
                };
                self.run_event(node, self.now + interval, token, ev);
                return;
            }
            Runner::Synthetic { exit_code, .. } => (Duration::ZERO, *exit_code),
            Runner::Exec { .. } if replica => (Duration::from_secs(3600), 0),
            Runner::Exec { .. } => (Duration::from_millis(100), 0),
        };
        let class = ExitClass::of_exit_code(exit_code);
        let at = self.now + after;
        self.run_event(node, at, token, RunEventKind::Exited { exit_code, class });
    }

    /// SIGTERM: the process ends a moment later.
    pub(crate) fn stop_run(&mut self, node: &NodeId, token: FencingToken, reason: StopReason) {
        let at = self.now + STOP_TAKES;
        let exited = RunEventKind::Exited {
            exit_code: 143,
            class: reason.class(),
        };
        self.run_event(node, at, token, exited);
    }

    /// A crash ends every run of the node.
    pub(crate) fn end_runs_of(&mut self, node: &NodeId, now: Duration) {
        for r in self.runs.iter_mut() {
            if &r.node == node && r.ended.is_none() {
                r.ended = Some(now);
            }
        }
    }

    /// The input a run event becomes, if its process is still there.
    pub(crate) fn run_input(&mut self, node: &NodeId, ev: RunEvent) -> Option<Input> {
        let live = self
            .runs
            .iter()
            .any(|r| &r.node == node && r.token == ev.token && r.ended.is_none());
        if ev.start != self.nodes[node].starts || !live {
            return None;
        }
        let token = ev.token;
        match ev.kind {
            RunEventKind::Chunk {
                chunk,
                chunks,
                interval,
                exit_code,
            } => {
                let next = if chunk.seq + 1 < u64::from(chunks) {
                    let next = synthetic_chunk(&chunk.task, chunk.attempt, chunk.seq + 1, chunks);
                    let ev = RunEventKind::Chunk {
                        chunk: next,
                        chunks,
                        interval,
                        exit_code,
                    };
                    (self.now + interval, ev)
                } else {
                    let class = ExitClass::of_exit_code(exit_code);
                    (self.now, RunEventKind::Exited { exit_code, class })
                };
                self.run_event(node, next.0, token, next.1);
                Some(Input::RunOutput(chunk))
            }
            RunEventKind::Exited { exit_code, class } => {
                let now = self.now;
                if let Some(r) = self
                    .runs
                    .iter_mut()
                    .rev()
                    .find(|r| &r.node == node && r.token == token && r.ended.is_none())
                {
                    r.ended = Some(now);
                }
                Some(Input::RunExited {
                    token,
                    exit_code,
                    class,
                })
            }
        }
    }
}
