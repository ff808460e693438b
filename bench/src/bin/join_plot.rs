//! Draws the join figures of one `bench/peers/join.sh` run as a PNG: the
//! time each system's new replica took to catch up, and its peak RSS.
//!
//! `join_plot RUN.jsonl OUT.png` (join.sh calls it). Text is drawn with a
//! TrueType font read at run time: `SHOAL_PLOT_FONT`, else Debian's
//! DejaVu Sans (`fonts-dejavu-core`).

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

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

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    bars: &[(String, f64)],
    decimals: usize,
    target: Option<f64>,
) -> Result<()> {
    let top = bars
        .iter()
        .map(|b| b.1)
        .chain(target)
        .fold(0.0f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((0..bars.len()).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(unit)
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .margin(24)
            .style_func(|x, _| {
                let first = matches!(x, SegmentValue::Exact(0) | SegmentValue::CenterOf(0));
                if first { BLUE } else { RGBColor(140, 140, 140) }
                    .mix(0.8)
                    .filled()
            })
            .data(bars.iter().enumerate().map(|(i, b)| (i, b.1))),
    )?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let centred = ("sans-serif", 15)
            .into_text_style(area)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        Text::new(
            format!("{:.*}", decimals, b.1),
            (SegmentValue::CenterOf(i), b.1 + top * 0.01),
            centred,
        )
    }))?;
    if let Some(t) = target {
        chart.draw_series(LineSeries::new(
            [(SegmentValue::Exact(0), t), (SegmentValue::Last, t)],
            RED.stroke_width(2),
        ))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (input, output) = (
        args.next().context("usage: join_plot RUN.jsonl OUT.png")?,
        args.next().context("usage: join_plot RUN.jsonl OUT.png")?,
    );
    let font_path = std::env::var("SHOAL_PLOT_FONT").unwrap_or_else(|_| DEFAULT_FONT.into());
    let font = std::fs::read(&font_path)
        .with_context(|| format!("reading the font {font_path} (set SHOAL_PLOT_FONT)"))?;
    // plotters keeps registered fonts for the life of the process.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow!("{font_path} is not a TrueType font"))?;

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
