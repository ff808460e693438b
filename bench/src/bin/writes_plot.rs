//! Draws the figures of one `writes` run and one `failover` run as a PNG:
//! single-key writes and consistent reads per second on the leader and a
//! follower, batch writes, and the time from the leader's death to the
//! first write committed, shoal beside etcd.
//!
//! ```text
//! target/release/writes 10 > run.jsonl; target/release/failover 20 >> run.jsonl
//! target/release/writes_plot run.jsonl bench/writes.png
//! ```

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::Value;
use shoal_bench::plot::{self, panel};

/// The rows of a run: one JSON object per line (ratios left out).
fn rows(text: &str) -> Result<Vec<Value>> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str::<Value>)
        .filter(|v| v.as_ref().map_or(true, |v| v["ratio"].is_null()))
        .map(|v| v.context("a line that is not JSON"))
        .collect()
}

/// `figure` of each (system, target) that has it, labelled.
fn bars(rows: &[Value], figure: &str, targets: &[&str]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for target in targets {
        for system in ["shoal", "etcd"] {
            let value = rows
                .iter()
                .filter(|r| r["system"] == system && (r["target"] == *target || target.is_empty()))
                .find_map(|r| r[figure].as_f64());
            if let Some(v) = value {
                let label = if target.is_empty() {
                    system.to_owned()
                } else {
                    format!("{system} {target}")
                };
                out.push((label, v));
            }
        }
    }
    out
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: writes_plot RUN.jsonl OUT.png";
    let (input, output) = (args.next().context(usage)?, args.next().context(usage)?);
    plot::register_font()?;
    let rows = rows(&std::fs::read_to_string(&input)?)?;
    let both = ["leader", "follower"];
    let root = BitMapBackend::new(&output, (1200, 860)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 2));
    panel(
        &panels[0],
        "Single-key writes, 64 connections",
        "writes/s",
        &bars(&rows, "writes_per_s", &both),
        0,
        None,
    )?;
    panel(
        &panels[1],
        "Consistent reads, 64 connections",
        "reads/s",
        &bars(&rows, "reads_per_s", &both),
        0,
        None,
    )?;
    panel(
        &panels[2],
        "Batch writes, 1000 keys each (red: 100k target)",
        "keys/s",
        &bars(&rows, "ops_per_s", &["leader"]),
        0,
        Some(100_000.0),
    )?;
    panel(
        &panels[3],
        "Leader killed: first write, p99 (red: 1 s target)",
        "seconds",
        &bars(&rows, "p99_s", &[""]),
        2,
        Some(1.0),
    )?;
    root.present()?;
    eprintln!("drew {output}");
    Ok(())
}
