//! Raft itself over a lossless in-memory network: elections, commits,
//! failover and the no-quorum refusal.

use super::*;
use crate::log_store::MemLog;
use raft::eraftpb::MessageType;
use shoal_log::SyncJob;
use shoal_model::{encode_event, Event, LogEntry};

struct Net {
    nodes: Vec<(RaftCore, MemLog)>,
    committed: Vec<Vec<LogEntry>>,
    /// Why each member last won an election.
    won: Vec<Option<Won>>,
    now: Duration,
    /// Each member's fsyncs handed out and not yet finished (only with
    /// `sync_off_loop`; otherwise `drive` waits for them).
    held: Vec<Vec<SyncJob>>,
    /// Raft frames delivered so far.
    sent: usize,
}

impl Net {
    fn new(n: u64) -> Net {
        Net::with(n, RaftConfig::default())
    }

    fn with(n: u64, cfg: RaftConfig) -> Net {
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
                    cfg,
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
            won: vec![None; n as usize],
            now: Duration::ZERO,
            held: vec![vec![]; n as usize],
            sent: 0,
        }
    }

    /// Finishes member `i`'s fsyncs under way, and delivers what they
    /// release.
    fn finish_syncs(&mut self, i: usize) {
        let mut queue = Vec::new();
        for job in std::mem::take(&mut self.held[i]) {
            let (core, log) = &mut self.nodes[i];
            log.synced(job.id(), job.wait()).unwrap();
            queue.extend(
                core.persisted(job.id(), log)
                    .unwrap()
                    .into_iter()
                    .map(|o| (i, o)),
            );
        }
        self.deliver(queue, &[]);
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
            self.deliver(std::mem::take(&mut queue), down);
        }
    }

    fn deliver(&mut self, queue: Vec<(usize, RaftOutput)>, down: &[usize]) {
        for (from, o) in queue {
            match o {
                RaftOutput::Send { to, msg } => {
                    let to = to.0 as usize - 1;
                    if !down.contains(&to) {
                        self.sent += 1;
                        let now = self.now;
                        self.nodes[to]
                            .0
                            .step(RaftId(from as u64 + 1), &msg, now)
                            .unwrap();
                    }
                }
                RaftOutput::Committed(es) => self.committed[from].extend(es),
                RaftOutput::LeaderChanged { won: Some(w), .. } => self.won[from] = Some(w),
                RaftOutput::Sync(job) => self.held[from].push(job),
                _ => {}
            }
        }
    }

    fn ticks(&mut self, n: usize, down: &[usize]) {
        for _ in 0..n {
            self.now += Duration::from_millis(100);
            for (i, (core, _)) in self.nodes.iter_mut().enumerate() {
                if !down.contains(&i) {
                    core.tick(self.now).unwrap();
                }
            }
            self.pump(down);
        }
    }

    /// Ticks until the leader's next heartbeat, which carries its commit
    /// index to the followers.
    fn heartbeat(&mut self, down: &[usize]) {
        self.ticks(RaftConfig::default().heartbeat_ticks, down);
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
    net.heartbeat(&[]);
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
fn a_commit_reaches_the_followers_with_the_next_heartbeat_not_a_round_of_its_own() {
    let mut net = Net::new(3);
    net.ticks(40, &[]);
    net.heartbeat(&[]);
    let l = net.leaders(&[])[0];
    let before: Vec<usize> = net.committed.iter().map(Vec::len).collect();
    let sent = net.sent;
    net.nodes[l].0.propose(encode_event(&Event::Noop)).unwrap();
    net.pump(&[]);
    // One append to each follower and one answer from each: the leader
    // commits; no second round of empty appends tells the followers so.
    assert_eq!(net.sent - sent, 4);
    assert_eq!(net.committed[l].len(), before[l] + 1);
    for f in (0..3).filter(|i| *i != l) {
        assert_eq!(net.committed[f].len(), before[f], "follower {f}");
    }
    // The next heartbeat carries the commit index.
    net.heartbeat(&[]);
    for (i, c) in net.committed.iter().enumerate() {
        assert_eq!(c.len(), before[i] + 1, "member {i}");
    }
}

#[test]
fn a_new_leader_says_whether_it_was_handed_over_or_elected() {
    let rid = |i: usize| RaftId(i as u64 + 1);
    let mut net = Net::new(3);
    net.ticks(40, &[]);
    let l = net.leaders(&[])[0];
    assert_eq!(net.won[l], Some(Won::Elected { previous: None }));
    // The leader hands over: the next one names it.
    let to = (l + 1) % 3;
    net.nodes[l].0.transfer_leader(rid(to));
    net.ticks(5, &[]);
    assert_eq!(net.leaders(&[]), vec![to]);
    assert_eq!(net.won[to], Some(Won::HandedOver { from: rid(l) }));
    // That leader goes down: the one elected next names it as unheard.
    net.ticks(60, &[to]);
    let next = net.leaders(&[to]);
    assert_eq!(next.len(), 1);
    assert_eq!(
        net.won[next[0]],
        Some(Won::Elected {
            previous: Some(rid(to))
        })
    );
}

#[test]
fn a_leader_without_quorum_refuses_writes() {
    let mut net = Net::new(3);
    net.ticks(40, &[]);
    let l = net.leaders(&[])[0];
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    // Isolate the leader: it keeps ticking, hears nobody, past the
    // longest election timeout.
    net.ticks(2 * RaftConfig::default().election_ticks + 1, &others);
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

fn crafted(
    kind: MessageType,
    from: u64,
    to: u64,
    term: u64,
    f: impl FnOnce(&mut Message),
) -> Vec<u8> {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = term;
    f(&mut m);
    m.write_to_bytes().unwrap()
}

fn raw_entry(index: u64, term: u64, data: &[u8]) -> Entry {
    let mut e = Entry {
        index,
        term,
        ..Default::default()
    };
    e.set_data(data.to_vec().into());
    e
}

#[test]
fn messages_a_correct_member_never_sends_are_refused_not_panicked_on() {
    use MessageType::*;
    let mut net = Net::new(3);
    net.ticks(40, &[]);
    let l = net.leaders(&[])[0];
    net.nodes[l].0.propose(encode_event(&Event::Noop)).unwrap();
    net.pump(&[]);
    let f = (l + 1) % 3;
    let (lid, fid) = (l as u64 + 1, f as u64 + 1);
    let term = net.nodes[f].0.term().0;
    let last = net.nodes[f].0.last_index().0;
    let snapshot_without_voters = |m: &mut Message| {
        let mut s = Snapshot::default();
        s.mut_metadata().index = last + 10;
        s.mut_metadata().term = term;
        m.set_snapshot(s);
    };
    let cases: Vec<(&str, usize, u64, Vec<u8>)> = vec![
        (
            "a heartbeat committing past the log",
            f,
            lid,
            crafted(MsgHeartbeat, lid, fid, term, |m| m.commit = last + 1000),
        ),
        (
            "an append skipping indices",
            f,
            lid,
            crafted(MsgAppend, lid, fid, term, |m| {
                m.index = last;
                m.log_term = term;
                m.set_entries(vec![raw_entry(last + 5, term, b"")].into());
            }),
        ),
        (
            "an append that jumps back onto a committed entry",
            f,
            lid,
            crafted(MsgAppend, lid, fid, term, |m| {
                m.index = last;
                m.log_term = term;
                m.set_entries(vec![raw_entry(1, term, b"")].into());
            }),
        ),
        (
            "a snapshot whose membership has no voters",
            f,
            lid,
            crafted(MsgSnapshot, lid, fid, term, snapshot_without_voters),
        ),
        (
            "a proposal of garbage to the leader",
            l,
            fid,
            crafted(MsgPropose, fid, lid, term, |m| {
                m.set_entries(vec![raw_entry(0, 0, b"garbage")].into());
            }),
        ),
        (
            "a message from a stranger",
            f,
            9,
            crafted(MsgHeartbeat, 9, fid, term, |_| {}),
        ),
    ];
    let now = net.now;
    for (what, to, from, bytes) in cases {
        let r = net.nodes[to].0.step(RaftId(from), &bytes, now);
        assert!(
            matches!(r, Err(RaftError::Refused(_) | RaftError::NotMember(_))),
            "{what}: {r:?}"
        );
    }
    // Nothing of it reached the log, and the cluster goes on.
    net.pump(&[]);
    assert_eq!(net.leaders(&[]), vec![l]);
    net.nodes[l].0.propose(encode_event(&Event::Noop)).unwrap();
    net.pump(&[]);
    net.heartbeat(&[]);
    for c in &net.committed {
        assert_eq!(c.len(), 3);
        assert!(c.iter().all(|e| e.data != b"garbage"));
    }
}

#[test]
fn a_panic_inside_raft_is_contained() {
    let r = contained(|| -> u32 { panic!("to_commit 9 is out of range") });
    assert!(matches!(r, Err(RaftError::Poisoned(why)) if why.contains("out of range")));
    assert_eq!(contained(|| 7).unwrap(), 7);
}

fn off_loop() -> RaftConfig {
    RaftConfig {
        sync_off_loop: true,
        ..RaftConfig::default()
    }
}

/// Ticks and pumps with every fsync finishing at once, until one leads.
fn elect(net: &mut Net) -> usize {
    for _ in 0..60 {
        net.ticks(1, &[]);
        for _ in 0..10 {
            for i in 0..net.nodes.len() {
                net.finish_syncs(i);
            }
            net.pump(&[]);
        }
        if let [l] = net.leaders(&[])[..] {
            return l;
        }
    }
    panic!("no leader elected");
}

#[test]
fn with_fsyncs_off_the_loop_an_entry_commits_once_a_majority_made_it_durable() {
    let mut net = Net::with(3, off_loop());
    let l = elect(&mut net);
    let before: Vec<usize> = net.committed.iter().map(Vec::len).collect();
    let followers: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    net.nodes[l].0.propose(encode_event(&Event::Noop)).unwrap();
    net.pump(&[]);
    // Every member holds the entry; no fsync has ended: no answer left
    // a follower and the leader does not count itself.
    assert!(net.held.iter().all(|h| h.len() == 1), "{:?}", net.held);
    assert_eq!(
        net.nodes[l].0.commit_index(),
        net.nodes[l].0.last_index().prev()
    );
    // The leader's own fsync alone is not a majority.
    net.finish_syncs(l);
    net.pump(&[]);
    assert!(net.nodes[l].0.commit_index() < net.nodes[l].0.last_index());
    // One follower's answer, sent once its fsync ended, is.
    net.finish_syncs(followers[0]);
    net.pump(&[]);
    assert_eq!(net.nodes[l].0.commit_index(), net.nodes[l].0.last_index());
    assert_eq!(net.committed[l].len(), before[l] + 1);
}

#[test]
fn with_fsyncs_off_the_loop_a_leader_with_a_stalled_disk_commits_on_its_followers() {
    let mut net = Net::with(3, off_loop());
    let l = elect(&mut net);
    let before = net.committed[l].len();
    for round in 0..3 {
        net.nodes[l].0.propose(encode_event(&Event::Noop)).unwrap();
        net.pump(&[]);
        for i in (0..3).filter(|i| *i != l) {
            net.finish_syncs(i);
        }
        net.pump(&[]);
        // The leader's first fsync has not ended: the followers' commit
        // the entries; it starts no second fsync while one is under way.
        assert_eq!(net.held[l].len(), 1, "round {round}");
        assert_eq!(net.nodes[l].0.commit_index(), net.nodes[l].0.last_index());
    }
    // It hands out only what its own disk holds too.
    assert_eq!(net.committed[l].len(), before);
    net.finish_syncs(l);
    net.pump(&[]);
    assert_eq!(
        net.committed[l].len(),
        before + 1,
        "the first fsync covered the first entry"
    );
    net.finish_syncs(l);
    net.pump(&[]);
    assert_eq!(net.committed[l].len(), before + 3);
    assert!(net.held[l].is_empty());
}

#[test]
fn with_fsyncs_off_the_loop_a_crash_before_the_fsync_loses_nothing_acknowledged() {
    let mut net = Net::with(3, off_loop());
    let l = elect(&mut net);
    let f = (l + 1) % 3;
    net.nodes[l].0.propose(encode_event(&Event::Noop)).unwrap();
    net.pump(&[]);
    let last = net.nodes[f].1.last_index();
    // The follower's disk lost the entry before its fsync: it had not
    // answered for it, so the leader had not counted it.
    net.nodes[f].1.crash();
    assert!(net.nodes[f].1.last_index() < last);
    assert!(net.nodes[l].0.matched(RaftId(f as u64 + 1)).unwrap() < last);
}
