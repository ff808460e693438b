//! Draws the join figures of one `bench/peers/join.sh` run as a PNG: the
//! time each system's new replica took to catch up, and its peak RSS.
//!
//! `join_plot RUN.jsonl OUT.png` (join.sh calls it).

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use serde_json::Value;
use shoal_bench::plot::{self, panel};

/// One bar: a system, its catch-up time and its new replica's peak RSS.
struct Bar {
    name: String,
    seconds: f64,
    rss_mib: f64,
}

fn bars(lines: &str) -> Result<(u64, Vec<Bar>)> {
    let mut keys = 0;
    let mut out = Vec::new();
    for line in lines.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line)?;
        let secs = v["caught_up_s"].as_f64();
        let (name, rss) = if v["mode"] == "snapshot" {
            keys = v["keys"].as_u64().unwrap_or(0);
            ("shoal".to_owned(), v["joiner_peak_rss_mib"].as_f64())
        } else if let Some(sys) = v["system"].as_str() {
            let version = v["version"].as_str().unwrap_or("");
            let rss = v["replica_peak_rss_mib"]
                .as_f64()
                .or(v["learner_peak_rss_mib"].as_f64());
            (format!("{sys} {version}"), rss)
        } else {
            continue;
        };
        if let Some(seconds) = secs {
            out.push(Bar {
                name,
                seconds,
                rss_mib: rss.unwrap_or(0.0),
            });
        }
    }
    if out.is_empty() {
        return Err(anyhow!("no join figures in the input"));
    }
    Ok((keys, out))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (input, output) = (
        args.next().context("usage: join_plot RUN.jsonl OUT.png")?,
        args.next().context("usage: join_plot RUN.jsonl OUT.png")?,
    );
    plot::register_font()?;

    let (keys, bars) = bars(&std::fs::read_to_string(&input)?)?;
    let root = BitMapBackend::new(&output, (1100, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let secs: Vec<(String, f64)> = bars.iter().map(|b| (b.name.clone(), b.seconds)).collect();
    let rss: Vec<(String, f64)> = bars.iter().map(|b| (b.name.clone(), b.rss_mib)).collect();
    let n = if keys >= 1_000_000 {
        format!("{}M", keys / 1_000_000)
    } else {
        format!("{}k", keys / 1000)
    };
    panel(
        &left,
        &format!("New replica caught up, {n} keys (red: 1 s target)"),
        "seconds",
        &secs,
        2,
        Some(1.0),
    )?;
    panel(&right, "Its peak RSS", "MiB", &rss, 0, None)?;
    root.present()?;
    eprintln!("drew {output}");
    Ok(())
}
