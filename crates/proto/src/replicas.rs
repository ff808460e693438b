//! The worker side of instances, without IO: which replicas this node
//! runs, restarting a crashed one after a backoff that doubles with each
//! crash, and stopping one State no longer places here.
//!
//! A replica is placed on a node by a committed event whose index is its
//! token; the node runs it as long as State keeps that placement, whoever
//! the master is. A restarted node starts its placed replicas afresh (the
//! shell first kills what its previous process left). Reports carry the
//! token, so a report about a replica placed elsewhere since is refused.

use shoal_model::{
    Command, CommandId, FencingToken, InstanceSpec, NodeId, Op, ReplicaStatus, State,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// A replica to start (or restart, after a crash), with `PORT` in its
/// environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRun {
    pub deployment: String,
    pub replica: u32,
    pub token: FencingToken,
    pub port: u16,
    /// Starts of this placement so far (0 for the first).
    pub restarts: u32,
    pub spec: InstanceSpec,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaAction {
    Start(ReplicaRun),
    Stop { token: FencingToken },
    Report(Command),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Crashed; starts again at this time.
    Backoff(Duration),
    Stopping,
}

#[derive(Clone, Debug)]
struct Replica {
    deployment: String,
    replica: u32,
    port: u16,
    spec: InstanceSpec,
    phase: Phase,
    crashes: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct ReplicaConfig {
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default)]
pub struct Replicas {
    cfg: ReplicaConfig,
    runs: BTreeMap<FencingToken, Replica>,
}

fn report(
    deployment: &str,
    replica: u32,
    token: FencingToken,
    n: u32,
    status: ReplicaStatus,
) -> Command {
    let kind = match status {
        ReplicaStatus::Starting => "starting",
        ReplicaStatus::Running => "running",
        ReplicaStatus::Crashed { .. } => "crashed",
    };
    Command {
        id: CommandId(format!("replica-{}-{n}-{kind}", token.0)),
        op: Op::ReplicaReport {
            deployment: deployment.to_owned(),
            replica,
            token,
            status,
        },
    }
}

impl Replicas {
    pub fn new(cfg: ReplicaConfig) -> Self {
        Replicas {
            cfg,
            runs: BTreeMap::new(),
        }
    }

    pub fn running(&self) -> usize {
        self.runs.len()
    }

    pub fn holds(&self, token: FencingToken) -> bool {
        self.runs.contains_key(&token)
    }

    /// Starts what State places here, stops what it no longer does.
    /// While draining it starts nothing.
    pub fn sync(&mut self, me: &NodeId, state: &State, draining: bool) -> Vec<ReplicaAction> {
        let mut out = Vec::new();
        let mut placed = BTreeMap::new();
        for (name, d) in state.deployments() {
            for (r, p) in &d.placements {
                if &p.node == me {
                    placed.insert(p.token, (name, *r, p.port, &d.spec));
                }
            }
        }
        for (token, (name, r, port, spec)) in &placed {
            if draining || self.runs.contains_key(token) {
                continue;
            }
            self.runs.insert(
                *token,
                Replica {
                    deployment: (*name).clone(),
                    replica: *r,
                    port: *port,
                    spec: (*spec).clone(),
                    phase: Phase::Running,
                    crashes: 0,
                },
            );
            out.push(ReplicaAction::Start(ReplicaRun {
                deployment: (*name).clone(),
                replica: *r,
                token: *token,
                port: *port,
                restarts: 0,
                spec: (*spec).clone(),
            }));
            out.push(ReplicaAction::Report(report(
                name,
                *r,
                *token,
                0,
                ReplicaStatus::Running,
            )));
        }
        for (token, rep) in self.runs.iter_mut() {
            if !placed.contains_key(token) && rep.phase != Phase::Stopping {
                let was_running = rep.phase == Phase::Running;
                rep.phase = Phase::Stopping;
                if was_running {
                    out.push(ReplicaAction::Stop { token: *token });
                }
            }
        }
        // Stopped ones that were not running are gone at once.
        self.runs.retain(|token, rep| {
            placed.contains_key(token) && !draining || matches!(rep.phase, Phase::Stopping)
        });
        out
    }

    /// Stops every replica (the node is leaving); they are placed again
    /// elsewhere once the master records the leave.
    pub fn drain(&mut self) -> Vec<ReplicaAction> {
        let mut out = Vec::new();
        self.runs.retain(|token, rep| {
            let running = rep.phase == Phase::Running;
            rep.phase = Phase::Stopping;
            if running {
                out.push(ReplicaAction::Stop { token: *token });
            }
            running
        });
        out
    }

    /// A replica's process ended: report the crash, restart after a
    /// backoff (or forget it, if it was being stopped).
    pub fn on_exit(
        &mut self,
        token: FencingToken,
        exit_code: i32,
        now: Duration,
    ) -> Vec<ReplicaAction> {
        let Some(rep) = self.runs.get_mut(&token) else {
            return vec![];
        };
        if rep.phase == Phase::Stopping {
            self.runs.remove(&token);
            return vec![];
        }
        rep.crashes += 1;
        let wait = self
            .cfg
            .backoff
            .saturating_mul(1 << (rep.crashes - 1).min(16))
            .min(self.cfg.max_backoff);
        rep.phase = Phase::Backoff(now + wait);
        vec![ReplicaAction::Report(report(
            &rep.deployment,
            rep.replica,
            token,
            rep.crashes,
            ReplicaStatus::Crashed { exit_code },
        ))]
    }

    /// When the next crashed replica's backoff is over.
    pub fn next_wake(&self) -> Option<Duration> {
        self.runs
            .values()
            .filter_map(|r| match r.phase {
                Phase::Backoff(at) => Some(at),
                _ => None,
            })
            .min()
    }

    /// Restarts whose backoff is over.
    pub fn tick(&mut self, now: Duration) -> Vec<ReplicaAction> {
        let mut out = Vec::new();
        for (token, rep) in self.runs.iter_mut() {
            if let Phase::Backoff(at) = rep.phase {
                if now >= at {
                    rep.phase = Phase::Running;
                    out.push(ReplicaAction::Start(ReplicaRun {
                        deployment: rep.deployment.clone(),
                        replica: rep.replica,
                        token: *token,
                        port: rep.port,
                        restarts: rep.crashes,
                        spec: rep.spec.clone(),
                    }));
                    out.push(ReplicaAction::Report(report(
                        &rep.deployment,
                        rep.replica,
                        *token,
                        rep.crashes,
                        ReplicaStatus::Running,
                    )));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{apply, cluster_state, command};
    use shoal_model::{Event, Resources, Runner};

    const ME: &str = "me";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A deployment "web" of one replica, placed on this node; its token.
    fn placed_here() -> (State, FencingToken) {
        let mut s = cluster_state(&["m", ME]);
        let spec = InstanceSpec {
            runner: Runner::Synthetic {
                chunks: 1,
                interval_ms: 10,
                exit_code: 0,
            },
            resources: Resources::default(),
        };
        command(
            &mut s,
            "d",
            Op::Deploy {
                name: "web".into(),
                spec,
                replicas: 1,
            },
        );
        apply(
            &mut s,
            Event::ReplicaPlaced {
                deployment: "web".into(),
                replica: 0,
                node: NodeId::from(ME),
                port: 20000,
            },
        );
        let token = FencingToken(s.index().0);
        (s, token)
    }

    fn starts(acts: &[ReplicaAction]) -> Vec<u32> {
        acts.iter()
            .filter_map(|a| match a {
                ReplicaAction::Start(r) => Some(r.restarts),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_crashed_replica_restarts_after_a_doubling_backoff() {
        let (s, token) = placed_here();
        let mut r = Replicas::new(ReplicaConfig::default());
        let acts = r.sync(&NodeId::from(ME), &s, false);
        assert_eq!(starts(&acts), [0]);
        assert_eq!(r.next_wake(), None);
        let acts = r.on_exit(token, 1, ms(0));
        assert!(matches!(
            &acts[..],
            [ReplicaAction::Report(Command {
                op: Op::ReplicaReport {
                    status: ReplicaStatus::Crashed { exit_code: 1 },
                    ..
                },
                ..
            })]
        ));
        assert_eq!(r.next_wake(), Some(ms(500)));
        assert!(r.tick(ms(499)).is_empty());
        assert_eq!(starts(&r.tick(ms(500))), [1]);
        r.on_exit(token, 1, ms(600));
        assert_eq!(r.next_wake(), Some(ms(1600)), "twice the wait");
    }

    #[test]
    fn a_replica_no_longer_placed_here_is_stopped_and_a_draining_node_starts_none() {
        let (mut s, token) = placed_here();
        let me = NodeId::from(ME);
        let mut r = Replicas::new(ReplicaConfig::default());
        assert_eq!(r.sync(&me, &s, true), vec![], "draining: nothing starts");
        r.sync(&me, &s, false);
        apply(
            &mut s,
            Event::ReplicaUnplaced {
                deployment: "web".into(),
                replica: 0,
                token,
            },
        );
        assert_eq!(r.sync(&me, &s, false), vec![ReplicaAction::Stop { token }]);
        assert_eq!(
            r.on_exit(token, 143, ms(10)),
            vec![],
            "a stopped one is not restarted"
        );
        assert_eq!(r.running(), 0);
    }
}
