//! What a follower's API shows of the nodes it does not hear. A follower
//! sends its reports (capacity, build, hearing) to the members and hears
//! only theirs (`peers::fan_in`); the members hear every node. While its
//! API is read (`Input::WantReports`: `/v1/nodes`, the dashboard), a
//! follower asks one member for the reports it holds, at most once a
//! metrics interval, and keeps each beside those it heard itself, by age.
//! Nobody asks while nobody looks: the relay costs a cluster nothing
//! unless a follower's page is open.

use super::io::Output;
use super::Node;
use crate::log_store::LogStore;
use crate::wire::{Direct, RelayedReport, MAX_RELAYED};
use shoal_model::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;

/// A member answers each asker at most this often.
const SERVE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub(super) struct Relay {
    /// When this node last asked a member.
    asked: Option<Duration>,
    /// When this member last answered each node (those of the last
    /// `SERVE_EVERY` only).
    served: BTreeMap<NodeId, Duration>,
}

impl<L: LogStore> Node<L> {
    /// This node's API was read: a follower asks a member (the master if
    /// it is one) for the reports it holds. A member hears them itself.
    pub(super) fn want_reports(&mut self, out: &mut Vec<Output>) {
        let Some(members) = self.fan_in() else {
            return;
        };
        let asked_lately = (self.relay.asked)
            .is_some_and(|at| self.now < at.saturating_add(self.cfg.metrics_every));
        if asked_lately {
            return;
        }
        let master = self.named_master().filter(|m| members.contains(m));
        let Some(to) = master.or_else(|| members.into_iter().next()) else {
            return;
        };
        self.relay.asked = Some(self.now);
        self.send(to, Direct::ReportsWanted, out);
    }

    /// A member answers a node its State records with every report it
    /// holds but the asker's own, at most `MAX_RELAYED`, and each asker
    /// at most once per `SERVE_EVERY`. A node that is no member (any more)
    /// does not answer: the asker asks again a metrics interval later.
    pub(super) fn on_reports_wanted(&mut self, from: NodeId, out: &mut Vec<Output>) {
        if self.raft.is_none() || !self.state.nodes().contains_key(&from) {
            return;
        }
        let now = self.now;
        let served = &mut self.relay.served;
        served.retain(|_, at| now < at.saturating_add(SERVE_EVERY));
        if served.contains_key(&from) {
            return;
        }
        served.insert(from.clone(), now);
        let reports = (self.capacities.reports())
            .filter(|c| c.metrics.node != from)
            .take(MAX_RELAYED)
            .map(|c| RelayedReport {
                metrics: c.metrics.clone(),
                age_ms: now.saturating_sub(c.at).as_millis() as u64,
            })
            .collect();
        self.send(from, Direct::Reports(reports), out);
    }

    /// Reports from a node this one reports to (a member, or the master a
    /// joiner named): each kept unless this node holds a newer one, its
    /// own never. From anyone else they are not believed, and counted.
    pub(super) fn on_reports(&mut self, from: &NodeId, reports: Vec<RelayedReport>) {
        if !self.fan_in().is_some_and(|m| m.contains(from)) {
            self.metrics.untrusted_messages += 1;
            return;
        }
        if reports.len() > MAX_RELAYED {
            self.metrics.bad_messages += 1;
            return;
        }
        for r in reports {
            let node = &r.metrics.node;
            let at = self.now.saturating_sub(Duration::from_millis(r.age_ms));
            let newer_here = self.capacities.get(node).is_some_and(|c| c.at >= at);
            if *node != self.cfg.node && !newer_here {
                self.capacities.on_metrics(r.metrics, at);
            }
        }
    }
}
