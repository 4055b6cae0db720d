//! A run as a picture (`--plot FILE.svg`): on top, each server's and
//! cell's throughput over the measured window, one point per sample
//! interval; below, its latency by percentile (HdrHistogram's percentile
//! plot: the x axis in "nines", so 99%, 99.9% and 99.99% get equal room;
//! the y axis in µs on a log scale), from the same histogram as the table.

use std::path::Path;

use plotters::prelude::*;

use super::report::fmt_us;
use super::run::{CellResult, Run};

const SIZE: (u32, u32) = (1000, 800);

/// matplotlib's "tab10": ten colors told apart on white, also by most
/// colour-blind readers; series past ten reuse them.
const COLORS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];
const LABELS: (&str, u32) = ("sans-serif", 15);

/// The latency plot's points per nine.
const STEPS_PER_NINE: u32 = 20;

/// Draws the run to `path` as an SVG.
pub fn write_svg(run: &Run, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2);
    let series = series(run);
    throughput(&top, &series).map_err(|e| format!("drawing throughput: {e}"))?;
    latency(&bottom, &series).map_err(|e| format!("drawing latency: {e}"))?;
    root.present().map_err(|e| e.to_string())
}

/// One line in each chart: a server in a cell.
struct Series<'a> {
    label: String,
    color: RGBColor,
    result: &'a CellResult,
}

fn series(run: &Run) -> Vec<Series<'_>> {
    let many_cells = run.cells.len() > 1;
    run.all()
        .enumerate()
        .map(|(i, (cell, t, result))| {
            let label = if many_cells {
                format!("{} {}", run.names[t], cell.short_name())
            } else {
                run.names[t].clone()
            };
            Series {
                label,
                color: COLORS[i % COLORS.len()],
                result,
            }
        })
        .collect()
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
/// The SVG backend's errors are io errors (writing the file).
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// `(seconds into the window, ops/s)` at the middle of each sample interval.
fn throughput_points(r: &CellResult) -> Vec<(f64, f64)> {
    let sample = r.stats.sample;
    r.stats
        .timeline
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let from = sample * i as u32;
            let length = sample.min(r.window.saturating_sub(from)).as_secs_f64();
            let ops = s.ok as f64 / length.max(f64::MIN_POSITIVE);
            (from.as_secs_f64() + length / 2.0, ops)
        })
        .collect()
}

fn throughput(area: &Area, series: &[Series]) -> DrawResult {
    let points: Vec<Vec<(f64, f64)>> = series.iter().map(|s| throughput_points(s.result)).collect();
    let x_max = series
        .iter()
        .map(|s| s.result.window.as_secs_f64())
        .fold(0.1, f64::max);
    // Headroom above the highest point for the legend, a line per series.
    let headroom = 1.1 + 0.07 * series.len() as f64;
    let y_max = points.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * headroom;
    let mut chart = ChartBuilder::on(area)
        .caption("throughput over the measured window", ("sans-serif", 20))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .label_style(LABELS)
        .axis_desc_style(LABELS)
        .x_desc("seconds")
        .y_desc("ops/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (s, points) in series.iter().zip(points) {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(&s.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// `(nines, µs)`: x = -log10(1 - q), so 1 is the 90th percentile, 2 the
/// 99th, 3 the 99.9th.
fn latency_points(r: &CellResult, nines: u32) -> Vec<(f64, f64)> {
    (0..=nines * STEPS_PER_NINE)
        .map(|step| {
            let x = f64::from(step) / f64::from(STEPS_PER_NINE);
            let q = 1.0 - 10f64.powf(-x);
            (x, r.stats.hist.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect()
}

/// How many nines the replies measured can tell apart: a 99.99th
/// percentile needs 10,000 of them.
fn nines(series: &[Series]) -> u32 {
    let most = series
        .iter()
        .map(|s| s.result.stats.measured)
        .max()
        .unwrap_or(0);
    ((most.max(1) as f64).log10().floor() as u32).clamp(2, 5)
}

/// `99.9%` for x = 3: as many decimals as the nines past two need.
fn percentile_label(x: f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x - 2.0).ceil().max(0.0) as usize;
    format!("{percent:.decimals$}%")
}

fn latency(area: &Area, series: &[Series]) -> DrawResult {
    let nines = nines(series);
    // A server that completed nothing has no latency to draw.
    let drawn: Vec<(&Series, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|s| s.result.stats.measured > 0)
        .map(|s| (s, latency_points(s.result, nines)))
        .collect();
    let ys = || drawn.iter().flat_map(|(_, points)| points).map(|p| p.1);
    let y_min = (ys().fold(f64::INFINITY, f64::min) / 1.5).max(0.1);
    let y_max = (ys().fold(0.0, f64::max) * 1.5).max(y_min * 10.0);
    let mut chart = ChartBuilder::on(area)
        .caption("latency by percentile (log scale)", ("sans-serif", 20))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..f64::from(nines), (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .label_style(LABELS)
        .axis_desc_style(LABELS)
        .x_labels(nines as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .x_desc("percentile")
        .y_desc("µs")
        .y_label_formatter(&|y| fmt_us(*y))
        .draw()?;
    for (s, points) in drawn {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(&s.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    // Latency rises to the right: the lower right is where no line is.
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(LABELS)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_show_the_nines() {
        let labels: Vec<String> = [0.0, 1.0, 2.0, 3.0, 4.0].map(percentile_label).to_vec();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
    }
}
