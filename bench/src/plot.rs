//! Bar charts for the figure runners' PNGs. Text is drawn with a TrueType
//! font read at run time: `SHOAL_PLOT_FONT`, else Debian's DejaVu Sans
//! (`fonts-dejavu-core`).

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font as "sans-serif"; call once before drawing.
pub fn register_font() -> Result<()> {
    let font_path = std::env::var("SHOAL_PLOT_FONT").unwrap_or_else(|_| DEFAULT_FONT.into());
    let font = std::fs::read(&font_path)
        .with_context(|| format!("reading the font {font_path} (set SHOAL_PLOT_FONT)"))?;
    // plotters keeps registered fonts for the life of the process.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow!("{font_path} is not a TrueType font"))
}

/// One panel of bars, labelled with their values (`decimals` places);
/// shoal's bars (labels starting "shoal") blue, the rest grey; `target`,
/// if any, a red line.
pub fn panel(
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
        .y_label_area_size(76)
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
                let i = match x {
                    SegmentValue::Exact(i) | SegmentValue::CenterOf(i) => *i,
                    SegmentValue::Last => bars.len(),
                };
                let shoal = bars.get(i).is_some_and(|b| b.0.starts_with("shoal"));
                if shoal { BLUE } else { RGBColor(140, 140, 140) }
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
