//! Join storms, and a snapshot source killed mid-transfer, on loopback
//! processes. A 3-node cluster holds N keys (preloaded, as `catchup` does).
//!
//! `storm`: J joiners start at once (at nice 19: on a LAN each is a host of
//! its own, here they share two cores with the members) while the master
//! takes W single writes a second (`STORM_WRITES`, 200 by default). Reports each joiner's
//! time to catch up and the snapshot bytes it received, the bytes the
//! whole cluster sent per joiner against the snapshot's size, how many
//! snapshots each member encoded, the writes' p99 in the 30 s
//! (`STORM_IDLE_S`, after 15 s of writes not counted) before and
//! during the storm (the page cache written back first, so that the idle
//! window is idle, and its slowest write, `write_max_ms_before`, to show
//! when it was not; with the Raft terms begun in each window, as an
//! election costs each write a hop, and the cores each member kept busy),
//! the same p99 as the master timed the writes from request to answer
//! (`shoal_api_write_seconds`, interpolated within its buckets, which are
//! a factor of √2 apart), and whether every joiner ends with
//! the master's state
//! hash: once the writes stop, each has `STORM_SETTLE_S` (300 by default)
//! to reach the master's index with its State (how long each took; for
//! those that did not, how many are behind and how many hold another
//! State at the master's index). `STORM_JOINER_DIR` puts the joiners' data on another
//! filesystem than the members' (a tmpfs for disks of their own).
//! `STORM_AFTER_S` keeps the writes going that many seconds more once
//! every joiner has caught up (`after`): the master's p99 with the same
//! twenty-three nodes and no storm, to tell what the storm costs from
//! what the cluster's size does.
//! `STORM_WRITES_CSV` names a file for every write's start (Unix ms) and
//! latency, to set slow writes against the nodes' logs.
//! `STORM_JOINER_IDLE` runs the joiners under SCHED_IDLE (`chrt --idle`)
//! rather than only at nice 19: they run only when the members do not.
//! `STORM_JOINER_CPUS` (a `taskset` list) runs the joiners on those CPUs
//! only; with the bench itself started under `taskset` on the others, the
//! members and the writes get cores of their own, as on a LAN where each
//! joiner is another host. `STORM_BENCH_CPUS` (a `taskset` list) moves
//! the bench itself, every thread of it, to those CPUs once the members
//! run, so that the members keep the CPUs the bench was started on:
//! `taskset -c 0 env STORM_JOINER_CPUS=1 STORM_BENCH_CPUS=1 join_storm`
//! gives the members CPU 0 and the client and the joiners CPU 1.
//!
//! `kill`: one joiner; once it has received half the snapshot, the source
//! other than the master that sent it the most is killed with SIGKILL.
//! Reports whether the joiner finished without starting over, the bytes
//! it received against the snapshot's size, and the hash.
//!
//! `cargo build --release -p shoal && cargo run --release -p shoal-bench --bin join_storm -- [N] [storm|kill|both] [JOINERS]`

#![recursion_limit = "256"]

mod readings;

use anyhow::{bail, Context, Result};
use readings::{
    applied, cores, master_applied, per_node, position, same_state, saved_snapshot_len, sum_metric,
    sync_ms, write_csv,
};
use serde_json::{json, Value};
use shoal_bench::load::{p99_ms, percentile_ms, Load};
use shoal_bench::nodes::{
    formed, histogram, histogram_above, histogram_quantile, metric, preloaded, shoal_bin, start,
    start_niced, status, Node,
};
use shoal_bench::procs::{time_until, wait, wait_every};
use std::path::Path;
use std::time::{Duration, Instant};

type Client = reqwest::blocking::Client;

/// How often the storm's loops ask every joiner where it is: often enough
/// for times in seconds, seldom enough not to load the joiners.
const POLL: Duration = Duration::from_millis(250);

/// Writes before the idle window that are not counted: the members
/// have just loaded the keys, and for up to 15 s after it writes stall
/// now and then for tens of milliseconds (four runs of eleven, at 0-5 s,
/// 5-10 s and 5-15 s), which is no idle figure.
const WARM_UP: Duration = Duration::from_secs(15);

/// The writes once the storm is over: `STORM_AFTER_S` seconds of them
/// (none by default), counted from when every joiner holds what the
/// master had applied at the storm's end, so that the cluster is as
/// large as in the storm and serves no snapshot. The window, and what
/// the master and the members did in it.
fn steady(
    c: &Client,
    master: u16,
    apis: &[u16],
    joiners: &[Node],
    limit: u64,
    served: impl Fn() -> Vec<(f64, f64)>,
) -> Result<Option<(Instant, Instant, Value)>> {
    let secs: u64 = shoal_bench::env("STORM_AFTER_S")?.unwrap_or(0);
    if secs == 0 {
        return Ok(None);
    }
    let tail = master_applied(c, master)?;
    wait_every(Duration::from_secs(limit), POLL, || {
        joiners.iter().all(|j| applied(c, j.api) >= tail)
    });
    let sent = || sum_metric(c, apis, "shoal_snapshot_bytes_sent_total");
    let ranges = || sum_metric(c, apis, "shoal_ranges_served_total");
    let cpu = || per_node(c, apis, "process_cpu_seconds_total");
    let (served_from, cpu_from, sent_from, ranges_from) = (served(), cpu(), sent(), ranges());
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (served_to, cpu_to, to) = (served(), cpu(), Instant::now());
    let cores = cores(&cpu_from, &cpu_to, to - from);
    let master_p99 = histogram_quantile(&served_from, &served_to, 0.99).map(|s| s * 1e3);
    Ok(Some((
        from,
        to,
        json!({
            "master_write_p99_ms": master_p99,
            "member_cpu_cores": cores,
            "bulk_bytes_sent": sent() - sent_from,
            "ranges_served": ranges() - ranges_from,
        }),
    )))
}

/// What `storm` reads of the cluster at one moment, to set against the
/// next.
struct Reading {
    /// The master's Raft term.
    term: f64,
    /// The master's log fsyncs: all, and those over 100 ms.
    fsyncs: (f64, f64),
    /// Each member's CPU seconds.
    cpu: Vec<f64>,
    /// Each member's loop turns, all and over 10 ms: by wall, by CPU.
    turns: [Vec<(f64, f64)>; 2],
    /// Each member's seconds in loop turns: by wall, by CPU.
    turn_secs: [Vec<f64>; 2],
    /// The master's write histogram.
    served: Vec<(f64, f64)>,
    /// Each member's fsync histogram.
    syncs: Vec<Vec<(f64, f64)>>,
}

fn storm(c: &Client, bin: &Path, root: &Path, members: &[Node], joiners: usize) -> Result<Value> {
    let master = &members[0];
    // On a LAN each joiner saves its snapshot to a disk of its own; here
    // `STORM_JOINER_DIR` (a tmpfs, say) can stand in for those disks, so
    // that the joiners' writes do not queue before the members' fsyncs.
    let joiner_disk = match std::env::var_os("STORM_JOINER_DIR") {
        Some(dir) => Some(tempfile::tempdir_in(dir)?),
        None => None,
    };
    let joiner_root = joiner_disk.as_ref().map_or(root, |d| d.path());
    let rate: u32 = shoal_bench::env("STORM_WRITES")?.unwrap_or(200);
    let apis: Vec<u16> = members.iter().map(|n| n.api).collect();
    let builds_before = per_node(c, &apis, "shoal_snapshot_builds_total");
    // The members that joined the first caught up by snapshot: what they
    // were sent then is not the storm's.
    let sent_before = sum_metric(c, &apis, "shoal_snapshot_bytes_sent_total");
    let members_received_before = sum_metric(c, &apis, "shoal_snapshot_bytes_received_total");
    // The preload and the members' snapshots leave dirty pages that the
    // kernel writes back over the next half minute; an fsync queued
    // behind them can hold a member's loop long enough for an election.
    // Written back now, the idle window is idle.
    std::process::Command::new("sync").status()?;
    let load = Load::start(master.api, rate);
    // The members have just loaded the keys (and saved them): the first
    // seconds of writes wait on that disk work, and are not counted.
    std::thread::sleep(WARM_UP);
    let terms = || metric(c, master.api, "shoal_term");
    // The master's Raft log fsyncs (off its loop): how many, how many
    // slower than 100 ms.
    let fsyncs = || histogram_above(c, master.api, "shoal_log_sync_seconds", 0.1);
    // The members' CPU (process_cpu_seconds), to set against each window.
    let cpu = || per_node(c, &apis, "process_cpu_seconds_total");
    // Each member's event-loop turns, and how many took over 10 ms (what
    // arrived meanwhile, a write among it, waited that long): over 6.4 ms
    // in fact, the histogram's bucket bound below 10 ms. With the CPU time
    // of the same turns and the seconds in all, wall and CPU: what a slow
    // turn waited for, a core or a system call, is the difference.
    let turns = || -> [Vec<(f64, f64)>; 2] {
        ["shoal_loop_turn_seconds", "shoal_loop_turn_cpu_seconds"].map(|name| {
            apis.iter()
                .map(|a| histogram_above(c, *a, name, 0.01))
                .collect()
        })
    };
    let turn_secs = || -> [Vec<f64>; 2] {
        [
            "shoal_loop_turn_seconds_sum",
            "shoal_loop_turn_cpu_seconds_sum",
        ]
        .map(|name| per_node(c, &apis, name))
    };
    // The master's own time per write, from request to answer
    // (`shoal_api_write_seconds`): what its loop, Raft and disk took,
    // without the client's wait for a core of its own.
    let served = || histogram(c, master.api, "shoal_api_write_seconds");
    // Each member's Raft log fsyncs (`shoal_log_sync_seconds`): a commit
    // waits for the master's and a voter's.
    let syncs = || -> Vec<Vec<(f64, f64)>> {
        apis.iter()
            .map(|a| histogram(c, *a, "shoal_log_sync_seconds"))
            .collect()
    };
    // All of the above at one moment: before the idle window, after it
    // (the storm starts), and once every joiner has caught up.
    let read = || Reading {
        term: terms(),
        fsyncs: fsyncs(),
        cpu: cpu(),
        turns: turns(),
        turn_secs: turn_secs(),
        served: served(),
        syncs: syncs(),
    };
    let before = read();
    let idle_from = Instant::now();
    // 6,000 writes at the default rate, against the storm's 12,000-20,000:
    // a p99 over 2,000 (10 s) moved with every stall it caught or missed.
    let idle_s: u64 = shoal_bench::env("STORM_IDLE_S")?.unwrap_or(30);
    std::thread::sleep(Duration::from_secs(idle_s));
    let target = master_applied(c, master.api)?;
    let idle = read();
    let t0 = Instant::now();
    // On a LAN each joiner is a host of its own; here all share the
    // members' cores, so they run at the lowest priority.
    let cpus: Option<String> = shoal_bench::env("STORM_JOINER_CPUS")?;
    let sched_idle = std::env::var_os("STORM_JOINER_IDLE").is_some();
    let nodes: Vec<Node> = (0..joiners)
        .map(|i| {
            let dir = joiner_root.join(format!("storm{i}"));
            start_niced(
                bin,
                &dir,
                Some(master.p2p),
                &[],
                cpus.as_deref(),
                sched_idle,
            )
        })
        .collect::<Result<_>>()?;
    let limit: u64 = shoal_bench::env("STORM_LIMIT_S")?.unwrap_or(600);
    let mut caught = vec![None; joiners];
    wait_every(Duration::from_secs(limit), POLL, || {
        for (i, j) in nodes.iter().enumerate() {
            if caught[i].is_none() && applied(c, j.api) >= target {
                caught[i] = Some(t0.elapsed().as_secs_f64());
            }
        }
        caught.iter().all(Option::is_some)
    });
    let done = Instant::now();
    let storm = read();
    let after = steady(c, master.api, &apis, &nodes, limit, served)?;
    let writes = load.stop();
    let slow_turns = |from: &[(f64, f64)], to: &[(f64, f64)]| -> Vec<f64> {
        from.iter().zip(to).map(|(a, b)| b.1 - a.1).collect()
    };
    let delta = |from: &[f64], to: &[f64]| -> Vec<f64> {
        from.iter().zip(to).map(|(a, b)| b - a).collect()
    };
    let member_cores_before = cores(&before.cpu, &idle.cpu, t0 - idle_from);
    let member_cores_during = cores(&idle.cpu, &storm.cpu, done - t0);
    // Joiners that did not catch up within the limit are reported as
    // such; the figures below are of those that did.
    let caught_up = caught.iter().flatten().count();
    if let Some(path) = std::env::var_os("STORM_WRITES_CSV") {
        write_csv(Path::new(&path), &writes)?;
    }
    let (idle_p99, idle_n) = p99_ms(&writes, idle_from, t0);
    // The slowest idle write: tens of milliseconds mean the idle window
    // held a stall (the shared disk, the host), and its p99 is no base.
    let (idle_max, _) = percentile_ms(&writes, idle_from, t0, 1.0);
    let (storm_p99, storm_n) = p99_ms(&writes, t0, done);
    let after = after.map(|(from, to, mut a)| {
        let (p99, n) = p99_ms(&writes, from, to);
        a["writes"] = n.into();
        a["write_p99_ms"] = p99.into();
        a
    });
    let joiner_apis: Vec<u16> = nodes.iter().map(|n| n.api).collect();
    let size = (0..joiners)
        .filter_map(|i| saved_snapshot_len(&joiner_root.join(format!("storm{i}"))))
        .max()
        .context("no joiner saved its snapshot")?;
    let received: Vec<f64> = joiner_apis
        .iter()
        .map(|a| metric(c, *a, "shoal_snapshot_bytes_received_total"))
        .collect();
    let mut all_apis = apis.clone();
    all_apis.extend(&joiner_apis);
    let sent = sum_metric(c, &all_apis, "shoal_snapshot_bytes_sent_total") - sent_before;
    // Where sent and received differ: frames the transport dropped, and
    // chunks that arrived at a joiner that was gone.
    let overflow = sum_metric(c, &all_apis, "shoal_send_overflow_total");
    // Received and not taken: chunks that came twice, or after their
    // transfer ended.
    let unused = sum_metric(c, &joiner_apis, "shoal_snapshot_bytes_unused_total");
    let again = sum_metric(c, &joiner_apis, "shoal_snapshot_chunks_asked_again_total");
    // Frames a joiner's network task dropped with its node's queue full.
    let net_dropped = sum_metric(c, &joiner_apis, "shoal_net_dropped_events_total");
    // Snapshot bytes the members themselves received during the storm.
    let members_received =
        sum_metric(c, &apis, "shoal_snapshot_bytes_received_total") - members_received_before;
    let failures = sum_metric(c, &joiner_apis, "shoal_snapshot_failures_total");
    let resumed = sum_metric(c, &joiner_apis, "shoal_snapshot_transfers_resumed_total");
    // Gossip to peers that read too slowly, dropped, and the peers
    // reconnected because it stayed blocked or was refused.
    let gossip_dropped = sum_metric(c, &all_apis, "shoal_net_gossip_send_dropped_total");
    let gossip_reconnects = sum_metric(c, &all_apis, "shoal_net_gossip_reconnects_total");
    // One-to-one frames lost in all: not sent (a failed write, a full
    // queue), not read (a bad or refused stream), not taken by a node.
    let net_lost = [
        "shoal_net_send_failures_total",
        "shoal_net_inbound_failures_total",
        "shoal_net_dropped_events_total",
    ]
    .map(|m| sum_metric(c, &all_apis, m));
    // Large frames each member sent on a connection of their own, and
    // all nodes together.
    let member_bulk = per_node(c, &apis, "shoal_net_bulk_sent_total");
    let bulk = sum_metric(c, &all_apis, "shoal_net_bulk_sent_total");
    let builds: Vec<f64> = per_node(c, &apis, "shoal_snapshot_builds_total")
        .iter()
        .zip(&builds_before)
        .map(|(a, b)| a - b)
        .collect();
    // Once the writes stop, every joiner (caught up or not) is given
    // `STORM_SETTLE_S` to reach the master's index with its State.
    let settle: u64 = shoal_bench::env("STORM_SETTLE_S")?.unwrap_or(300);
    let at = |api| position(c, api);
    let stopped = Instant::now();
    let mut converged: Vec<Option<f64>> = vec![None; joiners];
    wait_every(Duration::from_secs(settle), POLL, || {
        let Some(theirs) = at(master.api) else {
            return false;
        };
        for (i, a) in joiner_apis.iter().enumerate() {
            if converged[i].is_none() && at(*a).as_ref() == Some(&theirs) {
                converged[i] = Some(stopped.elapsed().as_secs_f64());
            }
        }
        converged.iter().all(Option::is_some)
    });
    let equal = converged.iter().all(Option::is_some);
    // Where the check failed: a joiner still behind the master, or one at
    // its index with another State.
    let (mut behind, mut apart, mut most_behind) = (0, 0, 0);
    if !equal {
        let theirs = at(master.api).context("the master's status")?;
        for (a, _) in joiner_apis
            .iter()
            .zip(&converged)
            .filter(|(_, c)| c.is_none())
        {
            let Some(mine) = at(*a) else { continue };
            if mine.0 == theirs.0 {
                apart += usize::from(mine.1 != theirs.1);
            } else {
                behind += 1;
                most_behind = most_behind.max(theirs.0.saturating_sub(mine.0));
            }
        }
    }
    // The joiners' logs outlive their disk when the logs are kept.
    if joiner_disk.is_some() && std::env::var_os("STORM_KEEP").is_some() {
        for i in 0..joiners {
            let log = format!("storm{i}.log");
            std::fs::copy(joiner_root.join(&log), root.join(&log))?;
        }
    }
    let mut settled: Vec<f64> = converged.iter().flatten().copied().collect();
    let mut times: Vec<f64> = caught.into_iter().flatten().collect();
    Ok(json!({
        "mode": "storm",
        "joiners": joiners,
        "caught_up": caught_up,
        "limit_s": limit,
        "snapshot_bytes": size,
        "caught_up_s_p50": shoal_bench::quantile(&mut times, 0.5),
        "caught_up_s_max": shoal_bench::quantile(&mut times, 1.0),
        "received_per_joiner_max_x": received.iter().copied().fold(0.0, f64::max) / size as f64,
        "received_per_joiner_mean_x": received.iter().sum::<f64>() / joiners as f64 / size as f64,
        "cluster_sent_per_joiner_x": sent / joiners as f64 / size as f64,
        "unused_per_joiner_x": unused / joiners as f64 / size as f64,
        "chunks_asked_again": again,
        "joiner_net_dropped_events": net_dropped,
        "members_received_x": members_received / size as f64,
        "send_overflow_frames": overflow,
        "snapshot_failures": failures,
        "snapshot_transfers_resumed": resumed,
        "gossip_send_dropped": gossip_dropped,
        "gossip_reconnects": gossip_reconnects,
        "net_send_failures": net_lost[0],
        "net_inbound_failures": net_lost[1],
        "net_dropped_events": net_lost[2],
        "bulk_frames_sent": bulk,
        "member_bulk_frames_sent": member_bulk,
        "snapshot_builds_per_member": builds,
        "writes_per_s": rate,
        "joiner_cpus": cpus,
        "joiner_sched_idle": sched_idle,
        "write_p99_ms_before": idle_p99,
        "write_max_ms_before": idle_max,
        "write_p99_ms_during": storm_p99,
        "master_write_p99_ms_before": histogram_quantile(&before.served, &idle.served, 0.99).map(|s| s * 1e3),
        "master_write_p99_ms_during": histogram_quantile(&idle.served, &storm.served, 0.99).map(|s| s * 1e3),
        "member_fsync_p50_ms_before": sync_ms(&before.syncs, &idle.syncs, 0.5),
        "member_fsync_p50_ms_during": sync_ms(&idle.syncs, &storm.syncs, 0.5),
        "member_fsync_p99_ms_before": sync_ms(&before.syncs, &idle.syncs, 0.99),
        "member_fsync_p99_ms_during": sync_ms(&idle.syncs, &storm.syncs, 0.99),
        "writes_before": idle_n,
        "after": after,
        "writes_during": storm_n,
        "raft_terms_started_before": idle.term - before.term,
        "raft_terms_started_during": storm.term - idle.term,
        "member_loop_turns_over_10ms_before": slow_turns(&before.turns[0], &idle.turns[0]),
        "member_loop_turns_over_10ms_during": slow_turns(&idle.turns[0], &storm.turns[0]),
        "member_loop_turns_cpu_over_10ms_during": slow_turns(&idle.turns[1], &storm.turns[1]),
        "member_loop_s_during": delta(&idle.turn_secs[0], &storm.turn_secs[0]),
        "member_loop_cpu_s_during": delta(&idle.turn_secs[1], &storm.turn_secs[1]),
        "master_fsyncs_before": idle.fsyncs.0 - before.fsyncs.0,
        "master_fsyncs_over_100ms_before": idle.fsyncs.1 - before.fsyncs.1,
        "master_fsyncs_during": storm.fsyncs.0 - idle.fsyncs.0,
        "master_fsyncs_over_100ms_during": storm.fsyncs.1 - idle.fsyncs.1,
        "member_cpu_cores_before": member_cores_before,
        "member_cpu_cores_during": member_cores_during,
        "equal_state_hash": equal,
        "settle_limit_s": settle,
        "converged": settled.len(),
        "converged_after_writes_s_p50": shoal_bench::quantile(&mut settled, 0.5),
        "converged_after_writes_s_max": shoal_bench::quantile(&mut settled, 1.0),
        "joiners_behind": behind,
        "joiners_behind_most_events": most_behind,
        "joiners_apart": apart,
    }))
}

fn kill(c: &Client, bin: &Path, root: &Path, members: &mut [Node]) -> Result<Value> {
    let target = applied(c, members[0].api);
    let dir = root.join("killed-source-joiner");
    let joiner = start(bin, &dir, Some(members[0].p2p), &[])?;
    let t0 = Instant::now();
    let mut total = 0;
    let half = wait(Duration::from_secs(300), || {
        let d = status(c, joiner.api).map(|s| s["snapshot_download"].clone());
        let (got, all) = d.map_or((0, 0), |d| {
            (
                d["received_bytes"].as_u64().unwrap_or(0),
                d["total_bytes"].as_u64().unwrap_or(0),
            )
        });
        total = all;
        all > 0 && got * 2 >= all
    });
    if !half {
        bail!("the joiner's download never got half way");
    }
    let sent: Vec<f64> = members
        .iter()
        .map(|n| metric(c, n.api, "shoal_snapshot_bytes_sent_total"))
        .collect();
    let victim = (1..members.len())
        .max_by(|a, b| sent[*a].total_cmp(&sent[*b]))
        .context("no member besides the master")?;
    if sent[victim] == 0.0 {
        bail!("only the master served: nothing to kill but it");
    }
    members[victim].child.kill()?;
    members[victim].child.wait()?;
    let killed_at = t0.elapsed().as_secs_f64();
    let caught = time_until(t0, Duration::from_secs(300), || {
        applied(c, joiner.api) >= target
    })
    .context("the joiner did not finish after its source was killed")?;
    let received = metric(c, joiner.api, "shoal_snapshot_bytes_received_total");
    Ok(json!({
        "mode": "kill",
        "snapshot_bytes": total,
        "killed_source_sent_bytes": sent[victim],
        "killed_at_s": killed_at,
        "caught_up_s": caught.as_secs_f64(),
        "received_x": received / total as f64,
        "snapshot_failures": metric(c, joiner.api, "shoal_snapshot_failures_total"),
        "snapshots_installed": metric(c, joiner.api, "shoal_snapshots_installed_total"),
        "equal_state_hash": same_state(c, joiner.api, members[0].api),
    }))
}

fn main() -> Result<()> {
    let (n, mode) = shoal_bench::args(1_000_000, "both")?;
    let joiners: usize = std::env::args()
        .nth(3)
        .map(|j| j.parse())
        .transpose()?
        .unwrap_or(20);
    let bin = shoal_bin()?;
    let (root, _tmp) = shoal_bench::scratch("STORM_KEEP")?;
    let c = shoal_bench::nodes::client(Duration::from_secs(30))?;
    let (first, _) = preloaded(&bin, &c, &root.join("n1"), n, &[])?;
    let rest: Vec<Node> = (2..=3)
        .map(|i| start(&bin, &root.join(format!("n{i}")), Some(first.p2p), &[]))
        .collect::<Result<_>>()?;
    let mut members: Vec<Node> = std::iter::once(first).chain(rest).collect();
    let refs: Vec<&Node> = members.iter().collect();
    if !wait(Duration::from_secs(600), || formed(&c, &refs)) {
        bail!("the cluster did not form");
    }
    let apis: Vec<u16> = members.iter().map(|m| m.api).collect();
    if !wait(Duration::from_secs(600), || {
        shoal_bench::nodes::agreed(&c, &apis)
    }) {
        bail!("the members did not agree after loading");
    }
    eprintln!("{n} keys loaded");
    if let Some(cpus) = shoal_bench::env::<String>("STORM_BENCH_CPUS")? {
        let pid = std::process::id().to_string();
        let moved = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &cpus, &pid])
            .stdout(std::process::Stdio::null())
            .status()?;
        if !moved.success() {
            bail!("taskset could not move the bench to CPUs {cpus}");
        }
    }
    if mode == "storm" || mode == "both" {
        println!("{}", storm(&c, &bin, &root, &members, joiners)?);
    }
    if mode == "kill" || mode == "both" {
        println!("{}", kill(&c, &bin, &root, &mut members)?);
    }
    Ok(())
}
