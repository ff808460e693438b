//! `GET /metrics`: the node's figures in the Prometheus (OpenMetrics) text
//! format, written by `prometheus-client`. Counters and gauges are read
//! from the node's view at each scrape; histograms are recorded as the node
//! runs (`shoal_node::Timings`) and as this API answers writes; `process_*`
//! comes from /proc, as Prometheus' own clients report it.

use axum::extract::{Request, State as AxState};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;
use shoal_node::{NodeHandle, Timed, View};
use shoal_proto::node::NodeRole;
use std::sync::Arc;
use std::time::Instant;

/// What `/metrics` answers from, built once with the router.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    writes: Timed,
}

impl Metrics {
    pub(crate) fn new(node: &NodeHandle, version: &str) -> Arc<Self> {
        let mut registry = Registry::default();
        // Buckets a factor of √2 apart, 0.25 ms to 23 s: a quantile is
        // read to within that factor, not within a doubling.
        let writes = Timed::new(exponential_buckets(0.00025, std::f64::consts::SQRT_2, 34));
        registry.register(
            "shoal_api_write_seconds",
            "Writes answered by this API (committed, or refused), from request to answer.",
            writes.histogram.clone(),
        );
        let timings = node.view().timings.clone();
        registry.register(
            "shoal_apply_seconds",
            "Time the node took over a batch of inputs that applied committed events.",
            timings.apply.histogram,
        );
        registry.register(
            "shoal_loop_turn_seconds",
            "Time the node's event loop took over each batch of inputs: what arrived meanwhile waited.",
            timings.turn.histogram,
        );
        registry.register(
            "shoal_loop_turn_cpu_seconds",
            "CPU time the event loop's thread spent on each batch: set against shoal_loop_turn_seconds, the rest it waited (for a core, or in a system call).",
            timings.turn_cpu.histogram,
        );
        registry.register(
            "shoal_snapshot_catch_up_seconds",
            "From a snapshot transfer's first progress to its install, restarts included.",
            timings.snapshot_catch_up.histogram,
        );
        registry.register(
            "shoal_log_sync_seconds",
            "Raft log fsyncs, run off the event loop: each covers what was written before it began.",
            timings.log_sync.histogram,
        );
        registry.register_collector(Box::new(NodeFigures {
            node: node.clone(),
            version: version.to_owned(),
        }));
        registry.register_collector(Box::new(ProcessFigures));
        Arc::new(Metrics { registry, writes })
    }

    /// The API's write latency histogram.
    pub(crate) fn writes(&self) -> &Timed {
        &self.writes
    }
}

/// Prometheus (OpenMetrics) text format: counters, gauges and latency
/// histograms of this node.
#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200, content_type = "application/openmetrics-text", body = String))
)]
pub(crate) async fn metrics(
    axum::Extension(m): axum::Extension<Arc<Metrics>>,
) -> impl IntoResponse {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
}

/// Times every write this API answers (`shoal_api_write_seconds`).
pub(crate) async fn time_writes(
    AxState(m): AxState<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let started = Instant::now();
    let resp = next.run(req).await;
    if write {
        m.writes.observe(started.elapsed().as_secs_f64());
    }
    resp
}

/// One figure: its name (without `_total` for a counter), help, value.
type Figure<T> = (&'static str, &'static str, T);

/// The node's counters and gauges, as its view has them at the scrape.
#[derive(Debug)]
struct NodeFigures {
    node: NodeHandle,
    version: String,
}

impl NodeFigures {
    fn gauges(v: &View) -> Vec<Figure<f64>> {
        let s = &v.status;
        let master = if s.role == NodeRole::Master { 1.0 } else { 0.0 };
        vec![
            ("shoal_applied_index", "Index of the last event applied here.", s.applied_index.0 as f64),
            ("shoal_commit_index", "Highest commit index this node knows of.", s.commit_index.0 as f64),
            (
                "shoal_lag_events",
                "Committed events not yet applied here.",
                s.commit_index.0.saturating_sub(s.applied_index.0) as f64,
            ),
            ("shoal_events_per_second", "Events applied per second, smoothed (rate(shoal_events_applied_total) is the counter's).", v.events_per_sec),
            ("shoal_term", "Current Raft term as this node knows it.", s.term.0 as f64),
            ("shoal_peers", "Peers heard from within the node timeout.", s.peers.len() as f64),
            ("shoal_is_master", "1 on the master.", master),
            ("shoal_net_connections", "Connections open to peers (a pair may hold several when their dials crossed).", v.net.connections as f64),
            ("shoal_net_bulk_connections", "Connections open to peers for large frames (snapshot chunks, long ranges), driven by a thread of their own below the node's priority.", v.net.bulk_connections as f64),
        ]
    }

    fn counters(v: &View) -> Vec<Figure<u64>> {
        let m = &v.metrics;
        let n = &v.net;
        vec![
            ("shoal_events_applied", "Events applied since start.", m.events_applied),
            ("shoal_nacks_sent", "Range fetches (NACKs) sent.", m.nacks_sent),
            ("shoal_ranges_served", "Range fetches served.", m.ranges_served),
            ("shoal_snapshot_bytes_sent", "Snapshot bytes sent.", m.snapshot_bytes_sent),
            ("shoal_snapshot_bytes_received", "Snapshot bytes received, taken or not.", m.snapshot_bytes_received),
            ("shoal_snapshot_bytes_unused", "Snapshot bytes received and not taken: a chunk that came twice, or for a transfer no longer under way.", m.snapshot_bytes_unused),
            ("shoal_snapshot_chunks_asked_again", "Snapshot chunks asked of another source after they came late.", m.snapshot_chunks_asked_again),
            ("shoal_snapshots_installed", "Snapshots loaded into State.", m.snapshots_installed),
            ("shoal_snapshot_offers_sent", "Snapshot offers made to replicas that asked for one.", m.snapshot_offers_sent),
            ("shoal_snapshot_failures", "Snapshot transfers that failed and were asked for again.", m.snapshot_failures),
            ("shoal_snapshot_transfers_resumed", "Snapshot transfers that went on from where an earlier one of the same snapshot stopped.", m.snapshot_transfers_resumed),
            ("shoal_snapshot_builds", "Snapshots encoded to serve others.", m.snapshot_builds),
            ("shoal_snapshot_bad_chunks", "Snapshot sources dropped for sending a chunk that was not the one offered.", m.snapshot_bad_chunks),
            ("shoal_clusters_given_up", "Lone empty clusters this node founded and gave up to join another.", m.clusters_given_up),
            ("shoal_local_snapshots_saved", "Snapshots of State saved to this node's own disk.", m.local_snapshots_saved),
            ("shoal_leader_changes", "Leader changes seen.", m.leader_changes),
            ("shoal_read_rounds", "ReadIndex rounds started as master, each serving every consistent read waiting for it.", m.read_rounds),
            ("shoal_bad_messages", "Malformed or inconsistent messages dropped.", m.bad_messages),
            ("shoal_raft_restarts", "Times raft failed inside and was started again from the log.", m.raft_restarts),
            ("shoal_untrusted_messages", "Entries and claims dropped because their sender's word does not count.", m.untrusted_messages),
            ("shoal_unasked_replies", "Range replies not (or no longer) asked for.", m.unasked_replies),
            ("shoal_foreign_messages", "Messages from other clusters dropped.", m.foreign_messages),
            ("shoal_bad_frames", "Network frames that did not decode or claimed another sender.", v.bad_frames),
            ("shoal_send_overflow", "Messages dropped at a full network queue.", v.send_overflow),
            ("shoal_ranges_deferred", "Range requests answered 'not yet' because too many range reads were under way.", v.ranges_deferred),
            ("shoal_bulk_held", "Snapshot chunks and range replies held back to keep to --bulk-rate.", v.bulk_held),
            ("shoal_net_messages_sent", "Frames sent one-to-one or published.", n.sent),
            ("shoal_net_messages_received", "Frames received one-to-one or by gossip.", n.received),
            ("shoal_net_gossip_received", "Gossip messages received (each once, however many peers relayed it).", n.gossip_received),
            ("shoal_net_send_failures", "Frames the network could not deliver.", n.send_failures),
            ("shoal_net_handshake_failures", "Connections whose handshake failed (most likely another cluster key).", n.handshake_failures),
            ("shoal_net_refused_peers", "Connections closed because this node admits no peers (commands without a cluster key).", n.refused_peers),
            ("shoal_net_inbound_failures", "Inbound one-to-one streams that failed (oversized, cut, timed out) or were refused (too many lanes from one peer).", n.inbound_failures),
            ("shoal_net_false_verdicts", "Unsigned greetings, and duplicate-identity verdicts without evidence, refused.", n.false_verdicts),
            ("shoal_net_gossip_send_dropped", "Gossip messages dropped because a peer's send queue was full (it reads too slowly).", n.gossip_send_dropped),
            ("shoal_net_gossip_reconnects", "Peers reconnected because gossip to them stayed blocked for 15 s or was refused (a connection whose gossip handler gave up).", n.gossip_reconnects),
            ("shoal_net_idle_closed", "Connections this node made and closed: a second connection to a peer, or one to a peer it does not keep (not a member, not picked, not in its gossip mesh), once no frame went to that peer for 90 s.", n.idle_closed),
            ("shoal_net_bulk_sent", "Large frames (snapshot chunks, long ranges) sent on a connection of their own; the rest of them went on the main connection while the peer had not dialled one yet.", n.bulk_sent),
            ("shoal_net_superseded", "Connections closed because their peer opened a newer one: the peer lost the older (a partition or a cut link kept its close from arriving).", n.superseded),
            ("shoal_net_gossip_refused", "Gossip messages refused, and relayed to no one: not sealed, or not signed by the peer they name.", n.gossip_refused),
            ("shoal_net_dropped_events", "Network events dropped because the node's queue was full.", n.dropped_events),
        ]
    }
}

impl Collector for NodeFigures {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = self.node.view();
        for (name, help, value) in Self::gauges(&v) {
            let g = ConstGauge::new(value);
            g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        for (name, help, value) in Self::counters(&v) {
            let c = ConstCounter::new(value);
            c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        // How far each peer this node hears is behind the commit index.
        let commit = v.status.commit_index.0;
        let lag = ConstGauge::new(0.0);
        let mut family = e.encode_descriptor(
            "shoal_peer_lag_events",
            "Committed events a peer has not applied yet, as this node last heard.",
            None,
            lag.metric_type(),
        )?;
        for p in &v.peers {
            let labels = [("peer", p.node.as_str())];
            let lag = ConstGauge::new(commit.saturating_sub(p.applied.0) as f64);
            lag.encode(family.encode_family(&labels)?)?;
        }
        let info = ConstGauge::new(1.0);
        let mut family = e.encode_descriptor(
            "shoal_build_info",
            "The shoal build this node runs (always 1).",
            None,
            info.metric_type(),
        )?;
        info.encode(family.encode_family(&[("version", self.version.as_str())])?)?;
        Ok(())
    }
}

/// `process_*`, from /proc/self, as Prometheus' client libraries name them.
#[derive(Debug)]
struct ProcessFigures;

impl Collector for ProcessFigures {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = process() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(e.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                p.rss_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                p.vsize_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                p.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                p.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.",
                p.start_time,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                p.threads,
            ),
        ] {
            let g = ConstGauge::new(value);
            g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
struct Process {
    cpu_seconds: f64,
    rss_bytes: f64,
    vsize_bytes: f64,
    open_fds: f64,
    max_fds: f64,
    start_time: f64,
    threads: f64,
}

/// This process's figures; None where /proc cannot be read.
fn process() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    // The kernel's clock tick and page size on Linux (x86-64, arm64).
    const TICKS: f64 = 100.0;
    const PAGE: f64 = 4096.0;
    parse_process(&stat, &boot, &limits, open, TICKS, PAGE)
}

/// `/proc/self/stat`, the boot time in `/proc/stat` and the open-files
/// limit in `/proc/self/limits`, read.
fn parse_process(
    stat: &str,
    boot: &str,
    limits: &str,
    open_fds: usize,
    ticks: f64,
    page: f64,
) -> Option<Process> {
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3; utime 14, stime 15, threads 20,
    // starttime 22, vsize 23, rss 24 (1-based, as proc(5) numbers them).
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<f64>().ok();
    let boot_time = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<f64>()
        .ok()?;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse::<f64>()
        .ok()?;
    Some(Process {
        cpu_seconds: (field(14)? + field(15)?) / ticks,
        threads: field(20)?,
        start_time: boot_time + field(22)? / ticks,
        vsize_bytes: field(23)?,
        rss_bytes: field(24)? * page,
        open_fds: open_fds as f64,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_figures_are_read_from_proc_as_proc5_numbers_them() {
        let stat = "4242 (shoal (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 150 0 0 20 0 17 0 5000 123456789 2048 18446744073709551615";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            65536                65536                files\n";
        let p = parse_process(stat, boot, limits, 12, 100.0, 4096.0).unwrap();
        assert_eq!(
            p,
            Process {
                cpu_seconds: 4.0,
                rss_bytes: 2048.0 * 4096.0,
                vsize_bytes: 123456789.0,
                open_fds: 12.0,
                max_fds: 65536.0,
                start_time: 1_700_000_050.0,
                threads: 17.0,
            }
        );
        assert!(parse_process("garbage", boot, limits, 1, 100.0, 4096.0).is_none());
    }

    #[test]
    fn this_process_is_read() {
        let p = process().expect("/proc on Linux");
        assert!(
            p.rss_bytes > 0.0 && p.threads >= 1.0 && p.open_fds >= 3.0,
            "{p:?}"
        );
    }
}
