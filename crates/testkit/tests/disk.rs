//! A single node on a real disk: the durable log and the snapshot store.
//! Restart = load the newest local snapshot, replay the local tail.

use shoal_log::{DurableLog, LogConfig, SnapshotStore};
use shoal_model::{ClusterId, Command, CommandId, NodeId, Op, Outcome, State};
use shoal_proto::node::{Input, Node, NodeConfig, Output, Saved};
use std::path::Path;
use std::time::Duration;

struct Disk<'a> {
    dir: &'a Path,
    node: Node<DurableLog>,
    cluster: Option<ClusterId>,
    now: Duration,
    /// The wake-up the node asked for.
    wake: Option<Duration>,
    replies: Vec<(u64, Outcome)>,
    /// The indexes of the local snapshots saved.
    saved: Vec<u64>,
}

fn config(every: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(NodeId::from("solo"), "mem://solo".into(), 42);
    cfg.discovery_window = Duration::from_millis(100);
    cfg.local_snapshot_every = every;
    cfg.log_retain = 10;
    cfg
}

impl<'a> Disk<'a> {
    fn open(dir: &'a Path, cluster: Option<ClusterId>, every: u64) -> Disk<'a> {
        Self::open_with(dir, cluster, config(every))
    }

    fn open_with(dir: &'a Path, cluster: Option<ClusterId>, cfg: NodeConfig) -> Disk<'a> {
        let (log, recovery) = DurableLog::open(
            &dir.join("log"),
            LogConfig {
                segment_bytes: 4096,
            },
        )
        .unwrap();
        assert!(recovery.cut.is_none());
        let snapshot = SnapshotStore::open(&dir.join("snapshots"))
            .unwrap()
            .load_latest()
            .unwrap();
        let node = Node::new(cfg, log, snapshot, cluster.clone(), Duration::ZERO).unwrap();
        Disk {
            dir,
            node,
            cluster,
            now: Duration::ZERO,
            wake: Some(Duration::ZERO),
            replies: vec![],
            saved: vec![],
        }
    }

    fn feed(&mut self, input: Input) {
        let mut queue = vec![input];
        while let Some(input) = queue.pop() {
            for o in self
                .node
                .handle(input, self.now, 1_000 + self.now.as_millis() as u64)
            {
                match o {
                    Output::BuildSnapshot {
                        state,
                        save,
                        chunk_bytes,
                    } => {
                        let snap = shoal_testkit::encoded_snapshot(&state, chunk_bytes);
                        if save {
                            self.saved.push(state.index().0);
                            SnapshotStore::open(&self.dir.join("snapshots"))
                                .unwrap()
                                .save(state.index(), &snap.bytes.read_all().unwrap(), &snap.sha256)
                                .unwrap();
                        }
                        let save = if save { Saved::Saved } else { Saved::NotAsked };
                        queue.push(Input::SnapshotBuilt { snap, save });
                    }
                    Output::ClusterAdopted(c) => self.cluster = Some(c),
                    Output::Wake { at } => self.wake = Some(at),
                    Output::Reply { to, reply } => self.replies.push((to, reply.unwrap().1)),
                    Output::Fatal(why) => panic!("{why}"),
                    _ => {}
                }
            }
        }
    }

    /// Lets time pass, waking the node when it asked to be.
    fn run(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(at) = self.wake.filter(|at| *at <= until) {
            self.now = self.now.max(at);
            self.wake = None;
            self.feed(Input::Wake);
        }
        self.now = until;
    }

    fn state(&self) -> &State {
        self.node.state()
    }
}

#[test]
fn a_node_restarts_from_its_snapshot_and_log_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let (hash, index, cluster) = {
        let mut d = Disk::open(tmp.path(), None, 50);
        d.run(Duration::from_secs(3));
        assert!(d.node.is_master(), "a lone node founds its cluster");
        for i in 0..230u64 {
            let cmd = Command {
                id: CommandId(format!("c{i}")),
                op: Op::KvIncrBy {
                    key: format!("k{}", i % 7),
                    by: 1,
                },
            };
            d.feed(Input::Submit { cmd, reply: i });
            d.run(Duration::from_millis(20));
        }
        assert_eq!(d.replies.len(), 230);
        assert!(
            d.node.log().first_index().0 > 1,
            "the log was compacted below a saved snapshot"
        );
        (d.state().hash(), d.state().index(), d.cluster.clone())
    };
    let mut d = Disk::open(tmp.path(), cluster.clone(), 50);
    assert_eq!(
        d.state().index(),
        index,
        "snapshot plus tail reach the same index"
    );
    assert_eq!(d.state().hash(), hash);
    // Same identity, same cluster, and it goes on committing.
    d.run(Duration::from_secs(3));
    assert!(d.node.is_master());
    assert_eq!(d.node.cluster(), cluster.as_ref());
    let cmd = Command {
        id: CommandId::from("after"),
        op: Op::KvIncrBy {
            key: "k0".into(),
            by: 1,
        },
    };
    d.feed(Input::Submit { cmd, reply: 999 });
    d.run(Duration::from_millis(200));
    assert_eq!(d.replies, vec![(999, Outcome::Int(34))]);
    // A retried command from before the restart returns its first outcome.
    let cmd = Command {
        id: CommandId::from("c0"),
        op: Op::KvIncrBy {
            key: "k0".into(),
            by: 1,
        },
    };
    d.feed(Input::Submit { cmd, reply: 1000 });
    assert_eq!(d.replies[1], (1000, Outcome::Int(1)));
}

/// Local snapshots fall on the multiples of the interval rounded up to a
/// snapshot point: the same indexes on every replica, so the snapshots
/// members hold, and offer, are the same bytes.
#[test]
fn local_snapshots_fall_on_multiples_of_the_interval_rounded_up_to_a_point() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(40);
    cfg.catch_up.snapshot_point_every = 16;
    let mut d = Disk::open_with(tmp.path(), None, cfg);
    d.run(Duration::from_secs(3));
    assert!(d.node.is_master());
    for i in 0..150u64 {
        let cmd = Command {
            id: CommandId(format!("c{i}")),
            op: Op::KvIncrBy {
                key: "k".into(),
                by: 1,
            },
        };
        d.feed(Input::Submit { cmd, reply: i });
        d.run(Duration::from_millis(20));
    }
    assert_eq!(d.replies.len(), 150);
    let last = d.state().index().0;
    let steps: Vec<u64> = (1..).map(|k| k * 48).take_while(|i| *i <= last).collect();
    assert!(steps.len() >= 3, "{last}");
    assert_eq!(d.saved, steps);
}
