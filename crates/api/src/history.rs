//! The dashboard's history: what this node saw each second for the last
//! fifteen minutes, in memory (a bounded ring), with markers for what an
//! operator looks back for: leader changes, members turning suspect, dead
//! or left (or alive again), and peers this node stopped (or started again)
//! hearing. Pure: `record` takes a sample and the time; the sampler that
//! feeds it once a second lives in `sampler`.

use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Samples kept: fifteen minutes at one a second.
pub(crate) const KEEP: usize = 900;
/// Markers kept at most (a flapping node could make many).
const MARKERS: usize = 1000;

/// What this node saw at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Sample {
    /// Wall clock, milliseconds since the Unix epoch.
    pub t_ms: u64,
    pub events_per_sec: f64,
    pub applied: u64,
    pub commit: u64,
    pub term: u64,
    pub master: Option<String>,
    /// Why the master leads, once this node heard it say so.
    pub master_reason: Option<String>,
    /// Mean latency of the writes this API answered since the last
    /// sample, and of the batches this node applied (None: there were
    /// none).
    pub write_ms: Option<f64>,
    pub apply_ms: Option<f64>,
    /// Each peer this node hears of: how far behind the commit it is, and
    /// whether it was heard within the node timeout.
    pub peers: BTreeMap<String, PeerSample>,
    /// Each member's liveness in State.
    pub members: BTreeMap<String, String>,
    /// What each node last reported of its host, if within a few seconds
    /// (at most `MAX_HOSTS` nodes).
    pub hosts: BTreeMap<String, HostSample>,
}

/// A node's host as it reported it: free CPU (millicores) and memory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct HostSample {
    pub cpu_free_milli: u32,
    pub mem_free_bytes: u64,
}

/// Nodes whose host figures a sample keeps at most.
const MAX_HOSTS: usize = 64;
/// A host report older than this is left out of a sample.
const HOST_FRESH: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct PeerSample {
    pub lag: u64,
    pub heard: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Marker {
    /// When it happened.
    pub t_ms: u64,
    /// When it was marked: a leader change waits for its reason.
    #[serde(skip)]
    pub marked_ms: u64,
    /// `leader`, `liveness` or `hearing`.
    pub kind: &'static str,
    pub node: Option<String>,
    pub text: String,
}

#[derive(Debug, Default)]
pub(crate) struct History {
    samples: VecDeque<Sample>,
    markers: VecDeque<Marker>,
    /// A leader change whose reason the new master has not yet given,
    /// and how many samples it has waited for it.
    unexplained: Option<(Marker, usize)>,
}

/// Samples a leader change waits for the new master's reason (its
/// heartbeats come several times a second) before it is marked without.
const REASON_WAIT: usize = 3;

impl History {
    /// Adds a sample, and markers for what changed since the one before.
    pub(crate) fn record(&mut self, s: Sample) {
        self.explain(&s);
        // Before the first sample, no master was known: the first one
        // that names one marks it.
        let mut marks = match self.samples.back() {
            Some(last) => changes(last, &s),
            None => changes(&Sample::default(), &s),
        };
        if let Some(i) = marks.iter().position(|m| m.kind == "leader") {
            if s.master.is_some() && s.master_reason.is_none() {
                self.unexplained = Some((marks.remove(i), 0));
            }
        }
        self.markers.extend(marks);
        self.samples.push_back(s);
        while self.samples.len() > KEEP {
            self.samples.pop_front();
        }
        let from = self.samples.front().map_or(0, |s| s.t_ms);
        while self
            .markers
            .front()
            .is_some_and(|m| m.t_ms < from || self.markers.len() > MARKERS)
        {
            self.markers.pop_front();
        }
    }

    /// Marks a waiting leader change once `s` gives its reason, or
    /// without one after `REASON_WAIT` samples or once the master changed
    /// again.
    fn explain(&mut self, s: &Sample) {
        let Some((mut m, waited)) = self.unexplained.take() else {
            return;
        };
        let same = s.master == m.node;
        match &s.master_reason {
            Some(why) if same => m.text = format!("{}: {why}", m.text),
            _ if same && waited + 1 < REASON_WAIT => {
                self.unexplained = Some((m, waited + 1));
                return;
            }
            _ => {}
        }
        m.marked_ms = s.t_ms;
        self.markers.push_back(m);
    }

    /// Samples and markers after `since_ms` (all of them for 0): a page
    /// loads the whole history once, then asks for what is new.
    pub(crate) fn json(&self, since_ms: u64) -> Value {
        let samples: Vec<&Sample> = self.samples.iter().filter(|s| s.t_ms > since_ms).collect();
        let markers: Vec<&Marker> = self
            .markers
            .iter()
            .filter(|m| m.marked_ms > since_ms)
            .collect();
        json!({"samples": samples, "markers": markers})
    }
}

/// Markers for what differs between two consecutive samples.
fn changes(a: &Sample, b: &Sample) -> Vec<Marker> {
    let mut out = Vec::new();
    let at = |kind, node: Option<&String>, text: String| Marker {
        t_ms: b.t_ms,
        marked_ms: b.t_ms,
        kind,
        node: node.cloned(),
        text,
    };
    if a.master != b.master {
        let text = match (&b.master, &b.master_reason) {
            (Some(m), Some(why)) => format!("master {} (term {}): {why}", short(m), b.term),
            (Some(m), None) => format!("master {} (term {})", short(m), b.term),
            (None, _) => format!("no master (term {})", b.term),
        };
        out.push(at("leader", b.master.as_ref(), text));
    }
    for (node, now) in &b.members {
        let before = a.members.get(node);
        if before.is_some_and(|was| was != now) {
            let text = format!("{} {}", short(node), now);
            out.push(at("liveness", Some(node), text));
        }
    }
    for (node, p) in &b.peers {
        let before = a.peers.get(node).map(|q| q.heard);
        if before.is_some_and(|was| was != p.heard) {
            let text = if p.heard {
                format!("{} heard again", short(node))
            } else {
                format!("{} not heard", short(node))
            };
            out.push(at("hearing", Some(node), text));
        }
    }
    out
}

/// A node id's last twelve characters, as the page shows it.
fn short(id: &str) -> &str {
    let cut = id.len().saturating_sub(12);
    id.get(cut..).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: u64) -> Sample {
        Sample {
            t_ms: t * 1000,
            master: Some("node-a".into()),
            master_reason: Some("founded the cluster".into()),
            term: 1,
            members: [("node-a", "alive"), ("node-b", "alive")]
                .map(|(n, l)| (n.to_owned(), l.to_owned()))
                .into(),
            peers: [(
                "node-b".to_owned(),
                PeerSample {
                    lag: 0,
                    heard: true,
                },
            )]
            .into(),
            ..Sample::default()
        }
    }

    #[test]
    fn the_ring_keeps_fifteen_minutes_and_drops_markers_older_than_it() {
        let mut h = History::default();
        for t in 0..KEEP as u64 + 10 {
            let mut s = sample(t);
            if t == 5 {
                s.master = Some("node-b".into());
            }
            h.record(s);
        }
        let v = h.json(0);
        assert_eq!(v["samples"].as_array().unwrap().len(), KEEP);
        let newer = h.json((KEEP as u64 + 7) * 1000);
        assert_eq!(newer["samples"].as_array().unwrap().len(), 2);
        assert_eq!(v["samples"][0]["t_ms"], 10_000);
        // The leader changes at 5 s and back at 6 s are older than the
        // oldest sample now.
        assert!(
            v["markers"].as_array().unwrap().is_empty(),
            "{}",
            v["markers"]
        );
        assert_eq!(h.samples.back().unwrap().t_ms, (KEEP as u64 + 9) * 1000);
    }

    #[test]
    fn leader_changes_liveness_and_hearing_are_marked_when_they_change() {
        let mut h = History::default();
        h.record(sample(1));
        h.record(sample(2));
        let mut s = sample(3);
        s.peers.get_mut("node-b").unwrap().heard = false;
        s.members.insert("node-b".into(), "suspect".into());
        h.record(s);
        let mut s = sample(4);
        s.master = None;
        s.term = 2;
        s.members.insert("node-b".into(), "dead".into());
        s.peers.get_mut("node-b").unwrap().heard = false;
        h.record(s);
        let mut s = sample(5);
        s.master = Some("node-a".into());
        s.master_reason = Some("elected: node-c not heard".into());
        s.term = 2;
        h.record(s);
        let marks: Vec<(u64, &str, String)> = h
            .markers
            .iter()
            .map(|m| (m.t_ms / 1000, m.kind, m.text.clone()))
            .collect();
        assert_eq!(
            marks,
            [
                (
                    1,
                    "leader",
                    "master node-a (term 1): founded the cluster".to_owned()
                ),
                (3, "liveness", "node-b suspect".to_owned()),
                (3, "hearing", "node-b not heard".to_owned()),
                (4, "leader", "no master (term 2)".to_owned()),
                (4, "liveness", "node-b dead".to_owned()),
                (
                    5,
                    "leader",
                    "master node-a (term 2): elected: node-c not heard".to_owned()
                ),
                (5, "liveness", "node-b alive".to_owned()),
                (5, "hearing", "node-b heard again".to_owned()),
            ]
        );
    }

    #[test]
    fn a_leader_change_waits_a_few_samples_for_its_reason() {
        let leaders = |h: &History| -> Vec<(u64, u64, String)> {
            h.markers
                .iter()
                .filter(|m| m.kind == "leader")
                .map(|m| (m.t_ms / 1000, m.marked_ms / 1000, m.text.clone()))
                .collect()
        };
        let mut h = History::default();
        h.record(sample(1));
        // node-b leads; its reason arrives two samples later.
        let mut s = sample(2);
        s.master = Some("node-b".into());
        s.master_reason = None;
        h.record(s.clone());
        s.t_ms = 3000;
        h.record(s.clone());
        assert_eq!(leaders(&h).len(), 1, "waits for the reason");
        s.t_ms = 4000;
        s.master_reason = Some("node-a handed over as it left".into());
        h.record(s);
        let want = (
            2,
            4,
            "master node-b (term 1): node-a handed over as it left".to_owned(),
        );
        let founded = (
            1,
            1,
            "master node-a (term 1): founded the cluster".to_owned(),
        );
        assert_eq!(leaders(&h), [founded.clone(), want.clone()]);
        // Drawn at the change, sent with what was marked after a page's
        // last look.
        assert_eq!(h.json(3000)["markers"][0]["t_ms"], 2000);
        assert!(h.json(4000)["markers"].as_array().unwrap().is_empty());
        // node-a leads again and never says why: marked without a reason.
        for t in 5..=9 {
            h.record(Sample {
                master_reason: None,
                ..sample(t)
            });
        }
        let unexplained = (5, 8, "master node-a (term 1)".to_owned());
        assert_eq!(leaders(&h), [founded, want, unexplained]);
    }

    #[test]
    fn a_long_id_is_cut_to_its_last_twelve_characters() {
        assert_eq!(short("12D3KooWAbCdEfGhIjKlMn"), "CdEfGhIjKlMn");
        assert_eq!(short("n1"), "n1");
    }
}

/// Samples the node once a second into a shared `History`, until the node
/// stops. Returns the history the dashboard reads.
pub(crate) mod sampler {
    use super::{History, HostSample, PeerSample, Sample, HOST_FRESH, MAX_HOSTS};
    use crate::metrics::Metrics;
    use shoal_node::{NodeHandle, Timed};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    pub(crate) type Shared = Arc<Mutex<History>>;

    fn wall_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// Mean of what a histogram observed since the last call: (sum, count)
    /// then, the mean now (None if nothing was observed).
    fn mean_since(h: &Timed, last: &mut (f64, u64)) -> Option<f64> {
        let now = h.sum_count();
        let (sum, count) = (now.0 - last.0, now.1.saturating_sub(last.1));
        *last = now;
        (count > 0).then(|| sum / count as f64 * 1000.0)
    }

    pub(crate) fn start(node: NodeHandle, metrics: Arc<Metrics>) -> Shared {
        let history: Shared = Arc::default();
        let shared = history.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let (mut writes, mut applies) = ((0.0, 0), (0.0, 0));
            loop {
                tick.tick().await;
                let Some(state) = node.state().await else {
                    return;
                };
                let v = node.view();
                let s = &v.status;
                let commit = s.commit_index.0;
                let sample = Sample {
                    t_ms: wall_ms(),
                    events_per_sec: v.events_per_sec,
                    applied: s.applied_index.0,
                    commit,
                    term: s.term.0,
                    master: s.master_id.as_ref().map(|m| m.to_string()),
                    master_reason: s.master_reason.as_ref().map(|r| {
                        let name = |n: &shoal_model::NodeId| super::short(n.as_str()).to_owned();
                        r.describe_for(s.master_id.as_ref(), name)
                    }),
                    write_ms: mean_since(metrics.writes(), &mut writes),
                    apply_ms: mean_since(&v.timings.apply, &mut applies),
                    peers: v
                        .peers
                        .iter()
                        .map(|p| {
                            let heard = s.peers.contains(&p.node);
                            let lag = commit.saturating_sub(p.applied.0);
                            (p.node.to_string(), PeerSample { lag, heard })
                        })
                        .collect(),
                    members: state
                        .nodes()
                        .iter()
                        .map(|(n, i)| {
                            let liveness = serde_json::to_value(i.liveness)
                                .ok()
                                .and_then(|l| l.as_str().map(str::to_owned))
                                .unwrap_or_default();
                            (n.to_string(), liveness)
                        })
                        .collect(),
                    hosts: v
                        .capacities
                        .iter()
                        .filter(|(_, age)| *age < HOST_FRESH)
                        .take(MAX_HOSTS)
                        .map(|(c, _)| {
                            let h = HostSample {
                                cpu_free_milli: c.cpu_free_milli,
                                mem_free_bytes: c.mem_free_bytes,
                            };
                            (c.node.to_string(), h)
                        })
                        .collect(),
                };
                shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(sample);
            }
        });
        history
    }
}
