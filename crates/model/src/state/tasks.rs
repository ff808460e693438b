//! Tasks: one-off runs, queued until the master grants one to a node. A
//! grant's index is its fencing token; a report or a lease expiry under
//! another token is stale and changes nothing. A transient failure queues
//! the task again until its attempts run out.

use super::validate::{full, Limits};
use super::{invalid, rejected, State};
use crate::event::{ExitClass, Outcome, Rejection, TaskReport, TaskSpec};
use crate::ids::{CommandId, EventIdx, FencingToken, NodeId, TaskId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskStatus {
    Queued,
    Leased {
        node: NodeId,
        token: FencingToken,
        lease_ms: u64,
    },
    Running {
        node: NodeId,
        token: FencingToken,
        lease_ms: u64,
    },
    Finished {
        exit_code: i32,
        class: ExitClass,
    },
    Failed {
        reason: String,
    },
    Cancelled,
}

impl TaskStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskStatus::Finished { .. } | TaskStatus::Failed { .. } | TaskStatus::Cancelled
        )
    }

    /// The lease token if the task is held by a node.
    pub fn token(&self) -> Option<FencingToken> {
        match self {
            TaskStatus::Leased { token, .. } | TaskStatus::Running { token, .. } => Some(*token),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Task {
    pub spec: TaskSpec,
    pub status: TaskStatus,
    /// Runs started so far (1 after the first grant).
    pub attempt: u32,
    /// The node of the latest grant: where its output was produced.
    pub node: Option<NodeId>,
    pub submitted_at_ms: u64,
    /// Master clock of the last status change that came with a command.
    pub updated_at_ms: u64,
}

impl Task {
    /// Another attempt is allowed after this one.
    fn may_retry(&self) -> bool {
        self.attempt < self.spec.max_attempts.max(1)
    }
}

impl State {
    /// A submitted task's id is its command's id.
    pub(super) fn task_submit(&mut self, id: &CommandId, spec: &TaskSpec, at_ms: u64) -> Outcome {
        let task_id = TaskId(id.0.clone());
        if self.tasks.contains_key(&task_id) {
            return invalid("task exists");
        }
        if self.tasks.len() >= Limits::MAX_TASKS {
            return rejected(full("tasks"));
        }
        let task = Task {
            spec: spec.clone(),
            status: TaskStatus::Queued,
            attempt: 0,
            node: None,
            submitted_at_ms: at_ms,
            updated_at_ms: at_ms,
        };
        self.tasks.insert(task_id.clone(), task);
        Outcome::Task(task_id)
    }

    pub(super) fn task_cancel(&mut self, task: &TaskId, at_ms: u64) -> Outcome {
        match self.tasks.get(task) {
            None => rejected(Rejection::NotFound),
            Some(t) if t.status.is_terminal() => Outcome::Applied(false),
            Some(_) => {
                self.tasks.update(task, |t| {
                    t.status = TaskStatus::Cancelled;
                    t.updated_at_ms = at_ms;
                });
                Outcome::Applied(true)
            }
        }
    }

    pub(super) fn task_delete(&mut self, task: &TaskId) -> Outcome {
        match self.tasks.get(task) {
            None => rejected(Rejection::NotFound),
            Some(t) if !t.status.is_terminal() => rejected(Rejection::NotFinished),
            Some(_) => {
                self.tasks.remove(task);
                Outcome::Done
            }
        }
    }

    /// A worker's report on the run it holds under `token`.
    pub(super) fn task_report(
        &mut self,
        task: &TaskId,
        token: FencingToken,
        report: &TaskReport,
        at_ms: u64,
    ) -> Outcome {
        let Some(t) = self.tasks.get(task) else {
            return rejected(Rejection::NotFound);
        };
        let (node, lease_ms) = match &t.status {
            TaskStatus::Leased {
                node,
                token: tk,
                lease_ms,
            }
            | TaskStatus::Running {
                node,
                token: tk,
                lease_ms,
            } if *tk == token => (node.clone(), *lease_ms),
            _ => return rejected(Rejection::StaleToken),
        };
        self.tasks.update(task, |t| {
            t.updated_at_ms = at_ms;
            t.status = match report {
                TaskReport::Running => TaskStatus::Running {
                    node,
                    token,
                    lease_ms,
                },
                TaskReport::Finished {
                    class: ExitClass::Transient,
                    ..
                } if t.may_retry() => TaskStatus::Queued,
                TaskReport::Finished { exit_code, class } => TaskStatus::Finished {
                    exit_code: *exit_code,
                    class: *class,
                },
            };
        });
        Outcome::Done
    }

    /// The master granted a queued task to `node`; the grant's index is the
    /// lease's fencing token.
    pub(super) fn task_granted(
        &mut self,
        idx: EventIdx,
        task: &TaskId,
        node: &NodeId,
        lease_ms: u64,
    ) {
        self.tasks.update(task, |t| {
            if t.status == TaskStatus::Queued {
                t.attempt += 1;
                t.node = Some(node.clone());
                t.status = TaskStatus::Leased {
                    node: node.clone(),
                    token: FencingToken(idx.0),
                    lease_ms,
                };
            }
        });
    }

    pub(super) fn task_lease_expired(&mut self, task: &TaskId, token: FencingToken) {
        self.tasks.update(task, |t| {
            if t.status.token() == Some(token) {
                t.status = if t.may_retry() {
                    TaskStatus::Queued
                } else {
                    TaskStatus::Failed {
                        reason: "lease expired".to_owned(),
                    }
                };
            }
        });
    }

    /// Finished tasks past their retention (a logged clean-up).
    pub(super) fn tasks_forgotten(&mut self, tasks: &[TaskId]) {
        for id in tasks {
            if self.tasks.get(id).is_some_and(|t| t.status.is_terminal()) {
                self.tasks.remove(id);
            }
        }
    }
}
