//! `/metrics` as Prometheus scrapes it: OpenMetrics text with the node's
//! counters, per-peer lag, latency histograms, build and process figures;
//! and the Grafana dashboard in `contrib/` asks only for what nodes serve.
//! Real processes on 127.0.0.1; every wait is bounded.

mod cluster;

use cluster::*;
use std::collections::BTreeSet;

/// The metric names a scrape holds (with `_total`, `_bucket`, ... as
/// written), and the text.
fn scrape(p: &Proc) -> (BTreeSet<String>, String) {
    let resp = client().get(p.url("/metrics")).send().unwrap();
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = resp.text().unwrap();
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics scrape ends with # EOF"
    );
    let names = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    (names, text)
}

fn find(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn value(text: &str, series: &str) -> f64 {
    find(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn metrics_carry_peers_histograms_build_and_process_and_the_dashboard_names_only_them() {
    let root = tempfile::tempdir().unwrap();
    let procs = agreed_cluster(root.path(), 2);
    for p in &procs {
        let (code, v) = p.set("k", "v");
        assert_eq!(code, 200, "{v}");
    }
    let peer = field(&procs[0].status(), "node_id");
    let peer = peer.as_str().unwrap();
    let asked = &procs[1];
    // The peer is heard, and both writes applied, within a few heartbeats.
    let lag = format!("shoal_peer_lag_events{{peer=\"{peer}\"}}");
    let ready = wait_for(std::time::Duration::from_secs(10), || {
        let (_, text) = scrape(asked);
        text.contains(&lag) && find(&text, "shoal_events_applied_total").is_some_and(|n| n >= 2.0)
    });
    let (names, text) = scrape(asked);
    assert!(
        ready,
        "no lag for peer {peer}, or a write not applied:\n{text}"
    );
    assert!(value(&text, "shoal_api_write_seconds_count") >= 1.0);
    assert!(value(&text, "shoal_apply_seconds_count") >= 1.0);
    // Every batch the loop took is a turn, applying or not.
    assert!(
        value(&text, "shoal_loop_turn_seconds_count") >= value(&text, "shoal_apply_seconds_count")
    );
    assert!(value(&text, "shoal_events_applied_total") >= 2.0, "{text}");
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);
    assert!(value(&text, "process_open_fds") > 0.0);
    let build = format!(
        "shoal_build_info{{version=\"{} (",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "{text}");
    for n in [
        "shoal_leader_changes_total",
        "shoal_snapshot_catch_up_seconds_bucket",
        "shoal_net_gossip_refused_total",
    ] {
        assert!(names.contains(n), "no {n}");
    }

    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../contrib/grafana-shoal.json")).unwrap();
    let mut asked_for = BTreeSet::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("shoal_") || word.starts_with("process_") {
                    asked_for.insert(word.to_owned());
                }
            }
        }
    }
    assert!(asked_for.len() >= 15, "{asked_for:?}");
    let missing: Vec<&String> = asked_for.difference(&names).collect();
    assert!(
        missing.is_empty(),
        "the dashboard asks for {missing:?}, not served"
    );
}
