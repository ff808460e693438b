//! Raft itself over a lossless in-memory network: elections, commits,
//! failover and the no-quorum refusal.

use super::*;
use crate::log_store::MemLog;
use shoal_model::{encode_event, Event};

struct Net {
    nodes: Vec<(RaftCore, MemLog)>,
    committed: Vec<Vec<LogEntry>>,
    now: Duration,
}

impl Net {
    fn new(n: u64) -> Net {
        let voters: Vec<RaftId> = (1..=n).map(RaftId).collect();
        let nodes = (1..=n)
            .map(|i| {
                let mut log = MemLog::new();
                let base = RaftBase {
                    voters: voters.clone(),
                    ..Default::default()
                };
                let core = RaftCore::start(
                    RaftId(i),
                    RaftConfig::default(),
                    base,
                    &mut log,
                    i,
                    Duration::from_millis(100),
                )
                .unwrap();
                (core, log)
            })
            .collect();
        Net {
            nodes,
            committed: vec![vec![]; n as usize],
            now: Duration::ZERO,
        }
    }

    fn pump(&mut self, down: &[usize]) {
        let mut queue: Vec<(usize, RaftOutput)> = Vec::new();
        for _ in 0..100 {
            for (i, (core, log)) in self.nodes.iter_mut().enumerate() {
                if down.contains(&i) {
                    continue;
                }
                for o in core.drive(log).unwrap() {
                    queue.push((i, o));
                }
            }
            if queue.is_empty() {
                return;
            }
            for (from, o) in queue.drain(..) {
                match o {
                    RaftOutput::Send { to, msg } => {
                        let to = to.0 as usize - 1;
                        if !down.contains(&to) {
                            let now = self.now;
                            self.nodes[to]
                                .0
                                .step(RaftId(from as u64 + 1), &msg, now)
                                .unwrap();
                        }
                    }
                    RaftOutput::Committed(es) => self.committed[from].extend(es),
                    _ => {}
                }
            }
        }
    }

    fn ticks(&mut self, n: usize, down: &[usize]) {
        for _ in 0..n {
            self.now += Duration::from_millis(100);
            for (i, (core, _)) in self.nodes.iter_mut().enumerate() {
                if !down.contains(&i) {
                    core.tick(self.now);
                }
            }
            self.pump(down);
        }
    }

    fn leaders(&self, down: &[usize]) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| !down.contains(i) && self.nodes[*i].0.is_leader())
            .collect()
    }
}

#[test]
fn three_voters_elect_one_leader_and_commit_with_a_majority() {
    let mut net = Net::new(3);
    net.ticks(40, &[]);
    let leaders = net.leaders(&[]);
    assert_eq!(leaders.len(), 1);
    let l = leaders[0];
    net.nodes[l].0.propose(encode_event(&Event::Noop)).unwrap();
    net.pump(&[]);
    for c in &net.committed {
        assert_eq!(c.len(), 2, "the leader's no-op and the proposal");
    }
    // The leader goes down: the other two elect a new one and go on.
    let down = [l];
    net.ticks(60, &down);
    let leaders = net.leaders(&down);
    assert_eq!(leaders.len(), 1);
    let l2 = leaders[0];
    assert!(net.nodes[l2].0.term() > net.nodes[l].0.term());
    net.nodes[l2].0.propose(encode_event(&Event::Noop)).unwrap();
    net.pump(&down);
    let a = &net.committed[l2];
    assert_eq!(a.len(), 4);
    assert_eq!(a[..2], net.committed[l][..2], "no committed entry changed");
}

#[test]
fn a_leader_without_quorum_refuses_writes() {
    let mut net = Net::new(3);
    net.ticks(40, &[]);
    let l = net.leaders(&[])[0];
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    // Isolate the leader: it keeps ticking, hears nobody.
    net.ticks(11, &others);
    let r = net.nodes[l].0.propose(vec![]);
    assert!(
        matches!(r, Err(Refusal::NoQuorum) | Err(Refusal::NotMaster)),
        "{r:?}"
    );
    // Before check-quorum steps it down, the refusal is `no quorum`.
    let mut net = Net::new(3);
    net.ticks(40, &[]);
    let l = net.leaders(&[])[0];
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    net.now += Duration::from_secs(5);
    net.nodes[l].0.now = net.now;
    assert!(net.nodes[l].0.is_leader());
    assert_eq!(net.nodes[l].0.propose(vec![]), Err(Refusal::NoQuorum));
    let _ = others;
}
