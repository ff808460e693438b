//! The worker side of tasks, without IO: which runs to start and stop,
//! when to renew their leases, and what to report.
//!
//! A run is started when State shows a task leased to this node with a
//! token it has not run. Its lease is renewed by asking the master every
//! quarter lease; an answer echoes the time the request left, so the
//! worker's deadline (that time plus the lease) is never later than the
//! master's (when the request arrived, plus the lease, plus a margin). A
//! run whose lease could not be renewed before its deadline is stopped.
//! A run is also stopped when State says the task was cancelled or is no
//! longer this node's, and when its timeout passes. Its end is reported
//! as a command whose id is derived from the token, resent until State
//! shows it, so a report is applied once however often it is sent.

use shoal_model::{
    Command, CommandId, EventIdx, ExitClass, FencingToken, NodeId, Op, State, TaskId, TaskReport,
    TaskSpec, TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Why a run is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    LeaseLost,
    Timeout,
    /// This node is leaving; the task goes back to the queue.
    Draining,
}

impl StopReason {
    /// How a run stopped for this reason is classed.
    pub fn class(self) -> ExitClass {
        match self {
            StopReason::Cancelled => ExitClass::Cancelled,
            StopReason::Timeout => ExitClass::Timeout,
            StopReason::LeaseLost | StopReason::Draining => ExitClass::Transient,
        }
    }
}

/// A task's run to start: its process group gets the token and attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRun {
    pub task: TaskId,
    pub token: FencingToken,
    pub attempt: u32,
    pub spec: TaskSpec,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerAction {
    Start(TaskRun),
    Stop {
        token: FencingToken,
        reason: StopReason,
    },
    /// Ask the master to renew these leases; `at` is echoed back.
    Renew {
        leases: Vec<(TaskId, FencingToken)>,
        at: Duration,
    },
    /// A report to commit (routed to the master).
    Report(Command),
}

#[derive(Clone, Debug)]
struct Run {
    task: TaskId,
    /// The lease is valid until then, on this node's clock.
    deadline: Duration,
    timeout_at: Option<Duration>,
    stopping: Option<StopReason>,
    /// The report to resend until State shows it.
    report: Option<Command>,
    next_report: Duration,
    running_reported: bool,
}

/// Lease length and renewal cadence.
#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    pub lease: Duration,
    pub report_every: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            lease: Duration::from_secs(5),
            report_every: Duration::from_secs(1),
        }
    }
}

#[derive(Debug)]
pub struct Worker {
    cfg: WorkerConfig,
    runs: BTreeMap<FencingToken, Run>,
    next_renew: Duration,
    /// Tasks to look at on the next sync (granted to this node lately).
    to_check: BTreeSet<TaskId>,
    /// Look at every task on the next sync (after a start or a snapshot).
    rescan: bool,
    /// Grants up to this index were made to an earlier process of this
    /// node: they are handed back, not run.
    started_at_index: EventIdx,
    /// Handed-back grants, with when their report was last sent.
    orphans: BTreeMap<FencingToken, (TaskId, Duration)>,
    draining: bool,
}

/// The id of a run's final report: one per token, so resends dedupe.
pub fn report_id(token: FencingToken) -> CommandId {
    CommandId(format!("report-{}", token.0))
}

fn running_id(token: FencingToken) -> CommandId {
    CommandId(format!("running-{}", token.0))
}

impl Worker {
    /// `applied` is the State index this process started from.
    pub fn new(cfg: WorkerConfig, applied: EventIdx) -> Self {
        Worker {
            cfg,
            runs: BTreeMap::new(),
            next_renew: Duration::ZERO,
            to_check: BTreeSet::new(),
            rescan: true,
            started_at_index: applied,
            orphans: BTreeMap::new(),
            draining: false,
        }
    }

    pub fn running(&self) -> usize {
        self.runs.len()
    }

    /// A task was granted to this node (seen in an applied event).
    pub fn note_granted(&mut self, task: TaskId) {
        if self.to_check.len() < 4096 {
            self.to_check.insert(task);
        } else {
            self.rescan = true;
        }
    }

    /// State was replaced wholesale: look at every task again.
    pub fn note_state_replaced(&mut self) {
        self.rescan = true;
    }

    /// Stops taking runs and hands the current ones back.
    pub fn drain(&mut self) -> Vec<WorkerAction> {
        self.draining = true;
        let mut out = Vec::new();
        for (token, run) in self.runs.iter_mut() {
            if run.stopping.is_none() {
                run.stopping = Some(StopReason::Draining);
                out.push(WorkerAction::Stop {
                    token: *token,
                    reason: StopReason::Draining,
                });
            }
        }
        out
    }

    /// True once every run has ended and State shows its report.
    pub fn drained(&self) -> bool {
        self.runs.is_empty() && self.orphans.is_empty()
    }

    /// Compares the runs with State: starts new grants, stops what State
    /// took away, forgets runs whose report State shows.
    pub fn sync(&mut self, me: &NodeId, state: &State, now: Duration) -> Vec<WorkerAction> {
        let mut out = Vec::new();
        let candidates: Vec<TaskId> = if std::mem::take(&mut self.rescan) {
            self.to_check.clear();
            state.tasks().keys().cloned().collect()
        } else {
            std::mem::take(&mut self.to_check).into_iter().collect()
        };
        for id in candidates {
            let Some(t) = state.tasks().get(&id) else {
                continue;
            };
            let Some(token) = held_by(&t.status, me) else {
                continue;
            };
            if self.runs.contains_key(&token) || self.orphans.contains_key(&token) {
                continue;
            }
            if self.draining || token.0 <= self.started_at_index.0 {
                // Granted to an earlier process of this node, or while
                // draining: hand it back as a transient failure.
                self.orphans.insert(token, (id, Duration::ZERO));
                continue;
            }
            self.runs.insert(
                token,
                Run {
                    task: id.clone(),
                    deadline: now + self.cfg.lease,
                    timeout_at: t.spec.timeout_ms.map(|ms| now + Duration::from_millis(ms)),
                    stopping: None,
                    report: None,
                    next_report: now,
                    running_reported: false,
                },
            );
            out.push(WorkerAction::Start(TaskRun {
                task: id,
                token,
                attempt: t.attempt,
                spec: t.spec.clone(),
            }));
        }
        self.orphans
            .retain(|token, (task, _)| still_held(state, me, task, *token));
        let mut done = Vec::new();
        for (token, run) in self.runs.iter_mut() {
            if still_held(state, me, &run.task, *token) {
                continue;
            }
            if run.report.is_some() {
                done.push(*token);
            } else if run.stopping.is_none() {
                let cancelled = state
                    .tasks()
                    .get(&run.task)
                    .is_some_and(|t| t.status == TaskStatus::Cancelled);
                let reason = if cancelled {
                    StopReason::Cancelled
                } else {
                    StopReason::LeaseLost
                };
                run.stopping = Some(reason);
                out.push(WorkerAction::Stop {
                    token: *token,
                    reason,
                });
            }
        }
        for t in done {
            self.runs.remove(&t);
        }
        out
    }

    /// The master renewed these leases for a request sent at `at`.
    pub fn on_renewed(&mut self, tokens: &[FencingToken], at: Duration) {
        for t in tokens {
            if let Some(run) = self.runs.get_mut(t) {
                run.deadline = run.deadline.max(at + self.cfg.lease);
            }
        }
    }

    /// The run's process ended. `class` is how its exit is classed, unless
    /// the run was being stopped, which decides.
    pub fn on_exit(
        &mut self,
        token: FencingToken,
        exit_code: i32,
        class: ExitClass,
        state: &State,
        me: &NodeId,
    ) -> Vec<WorkerAction> {
        let Some(run) = self.runs.get_mut(&token) else {
            return vec![];
        };
        let class = run.stopping.map_or(class, StopReason::class);
        if !still_held(state, me, &run.task, token) {
            // Cancelled or taken away: nothing of ours to report.
            self.runs.remove(&token);
            return vec![];
        }
        let cmd = final_report(run.task.clone(), token, exit_code, class);
        run.report = Some(cmd.clone());
        vec![WorkerAction::Report(cmd)]
    }

    /// When `tick` next has something to do: a report to (re)send, a lease
    /// to renew, a deadline or time-out to enforce. After `tick(now)`,
    /// every time this returns is later than `now`.
    pub fn next_wake(&self) -> Option<Duration> {
        let mut times = Vec::new();
        for (_, sent) in self.orphans.values() {
            times.push(if sent.is_zero() {
                Duration::ZERO
            } else {
                *sent + self.cfg.report_every
            });
        }
        let mut renewing = false;
        for run in self.runs.values() {
            if run.report.is_some() {
                times.push(run.next_report);
                continue;
            }
            if !run.running_reported {
                times.push(Duration::ZERO);
            }
            if run.stopping.is_some() {
                continue;
            }
            times.push(run.deadline);
            times.extend(run.timeout_at);
            renewing = true;
        }
        if renewing {
            times.push(self.next_renew);
        }
        times.into_iter().min()
    }

    /// Renewals, lost leases, timeouts, report resends.
    pub fn tick(&mut self, now: Duration) -> Vec<WorkerAction> {
        let mut out = Vec::new();
        let mut renew = Vec::new();
        for (token, (task, sent)) in self.orphans.iter_mut() {
            if *sent == Duration::ZERO || now >= *sent + self.cfg.report_every {
                *sent = now.max(Duration::from_nanos(1));
                out.push(WorkerAction::Report(final_report(
                    task.clone(),
                    *token,
                    -1,
                    ExitClass::Transient,
                )));
            }
        }
        for (token, run) in self.runs.iter_mut() {
            if let Some(cmd) = &run.report {
                if now >= run.next_report {
                    run.next_report = now + self.cfg.report_every;
                    out.push(WorkerAction::Report(cmd.clone()));
                }
                continue;
            }
            if !run.running_reported {
                run.running_reported = true;
                out.push(WorkerAction::Report(Command {
                    id: running_id(*token),
                    op: Op::TaskReport {
                        task: run.task.clone(),
                        token: *token,
                        report: TaskReport::Running,
                    },
                }));
            }
            if run.stopping.is_some() {
                continue;
            }
            let reason = if now >= run.deadline {
                Some(StopReason::LeaseLost)
            } else if run.timeout_at.is_some_and(|t| now >= t) {
                Some(StopReason::Timeout)
            } else {
                None
            };
            if let Some(reason) = reason {
                run.stopping = Some(reason);
                out.push(WorkerAction::Stop {
                    token: *token,
                    reason,
                });
                continue;
            }
            renew.push((run.task.clone(), *token));
        }
        if !renew.is_empty() && now >= self.next_renew {
            self.next_renew = now + self.cfg.lease / 4;
            out.push(WorkerAction::Renew {
                leases: renew,
                at: now,
            });
        }
        out
    }
}

fn final_report(task: TaskId, token: FencingToken, exit_code: i32, class: ExitClass) -> Command {
    Command {
        id: report_id(token),
        op: Op::TaskReport {
            task,
            token,
            report: TaskReport::Finished { exit_code, class },
        },
    }
}

/// The token of a lease this node holds in `status`.
fn held_by(status: &TaskStatus, me: &NodeId) -> Option<FencingToken> {
    match status {
        TaskStatus::Leased { node, token, .. } | TaskStatus::Running { node, token, .. }
            if node == me =>
        {
            Some(*token)
        }
        _ => None,
    }
}

/// Whether State still has this node holding `task`'s lease with `token`.
fn still_held(state: &State, me: &NodeId, task: &TaskId, token: FencingToken) -> bool {
    state.tasks().get(task).and_then(|t| held_by(&t.status, me)) == Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cluster_state, leased_task};
    use proptest::prelude::*;

    const ME: &str = "me";

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn me() -> NodeId {
        NodeId::from(ME)
    }

    fn kinds(acts: &[WorkerAction]) -> Vec<&'static str> {
        acts.iter()
            .map(|a| match a {
                WorkerAction::Start(_) => "start",
                WorkerAction::Stop { .. } => "stop",
                WorkerAction::Renew { .. } => "renew",
                WorkerAction::Report(_) => "report",
            })
            .collect()
    }

    #[test]
    fn a_grant_starts_a_run_that_reports_and_renews_every_quarter_lease() {
        let mut s = cluster_state(&["m", ME]);
        let token = leased_task(&mut s, "t", ME, None);
        let mut w = Worker::new(WorkerConfig::default(), EventIdx(0));
        let acts = w.sync(&me(), &s, ms(0));
        assert!(
            matches!(&acts[..], [WorkerAction::Start(r)] if r.token == token && r.attempt == 1)
        );
        assert_eq!(
            w.next_wake(),
            Some(Duration::ZERO),
            "its running report is due"
        );
        let acts = w.tick(ms(0));
        assert_eq!(kinds(&acts), ["report", "renew"]);
        assert!(
            matches!(&acts[1], WorkerAction::Renew { leases, at } if leases.len() == 1 && *at == ms(0))
        );
        assert_eq!(w.next_wake(), Some(ms(1250)), "the next renewal");
        assert!(w.tick(ms(1249)).is_empty());
        assert_eq!(kinds(&w.tick(ms(1250))), ["renew"]);
    }

    #[test]
    fn a_run_whose_lease_is_not_renewed_in_time_is_stopped() {
        let mut s = cluster_state(&["m", ME]);
        let token = leased_task(&mut s, "t", ME, None);
        let mut w = Worker::new(WorkerConfig::default(), EventIdx(0));
        w.sync(&me(), &s, ms(0));
        w.tick(ms(0));
        // Renewed by an answer to a request sent at 4 s: the deadline is 9 s.
        w.on_renewed(&[token], secs(4));
        let stops = |acts: Vec<WorkerAction>| {
            acts.into_iter()
                .filter(|a| {
                    matches!(
                        a,
                        WorkerAction::Stop {
                            reason: StopReason::LeaseLost,
                            ..
                        }
                    )
                })
                .count()
        };
        assert_eq!(stops(w.tick(ms(8999))), 0);
        assert_eq!(stops(w.tick(secs(9))), 1);
        assert_eq!(stops(w.tick(secs(10))), 0, "stopped once");
    }

    #[test]
    fn a_task_with_a_time_out_is_stopped_at_it() {
        let mut s = cluster_state(&["m", ME]);
        let token = leased_task(&mut s, "t", ME, Some(2000));
        let mut w = Worker::new(WorkerConfig::default(), EventIdx(0));
        w.sync(&me(), &s, ms(0));
        w.tick(ms(0));
        w.on_renewed(&[token], ms(1900));
        let acts = w.tick(secs(2));
        assert!(acts.contains(&WorkerAction::Stop {
            token,
            reason: StopReason::Timeout
        }));
    }

    #[test]
    fn a_grant_to_an_earlier_process_of_this_node_is_handed_back() {
        let mut s = cluster_state(&["m", ME]);
        let token = leased_task(&mut s, "t", ME, None);
        // This process started from a State that already held the grant.
        let mut w = Worker::new(WorkerConfig::default(), s.index());
        assert!(w.sync(&me(), &s, ms(0)).is_empty(), "not run");
        let acts = w.tick(ms(100));
        assert_eq!(acts.len(), 1);
        let WorkerAction::Report(cmd) = &acts[0] else {
            panic!("{acts:?}")
        };
        assert_eq!(cmd.id, report_id(token));
        assert!(matches!(
            cmd.op,
            Op::TaskReport {
                report: TaskReport::Finished {
                    class: ExitClass::Transient,
                    ..
                },
                ..
            }
        ));
        assert_eq!(w.next_wake(), Some(ms(1100)), "resent until State shows it");
    }

    proptest! {
        /// Whatever happens, after `tick(now)` nothing the worker waits for
        /// is due at or before `now`: the core never spins on it.
        #[test]
        fn after_a_tick_the_next_wake_is_later(
            steps in prop::collection::vec((1u64..3000, 0u8..4), 1..60),
        ) {
            let mut s = cluster_state(&["m", ME]);
            let t1 = leased_task(&mut s, "a", ME, Some(7000));
            let t2 = leased_task(&mut s, "b", ME, None);
            let mut w = Worker::new(WorkerConfig::default(), EventIdx(0));
            let mut now = Duration::ZERO;
            w.sync(&me(), &s, now);
            for (dt, what) in steps {
                now += Duration::from_millis(dt);
                match what {
                    0 => w.on_renewed(&[t1, t2], now),
                    1 => {
                        w.on_exit(t1, 0, ExitClass::Success, &s, &me());
                    }
                    2 => {
                        w.drain();
                    }
                    _ => {}
                }
                w.tick(now);
                if let Some(next) = w.next_wake() {
                    prop_assert!(next > now, "{next:?} <= {now:?}");
                }
            }
        }
    }
}
