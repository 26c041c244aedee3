//! The sweep chart: latency percentiles and delivered rate against offered load, for
//! every transport the sweep ran, as one SVG with two panels.

use std::path::Path;

use plotters::{
    coord::{ranged1d::ValueFormatter, types::RangedCoordf64, Shift},
    prelude::*,
};

use crate::relay::{RunResult, Transport};

/// One line of a panel: its points, legend, colour, and whether it is drawn faded.
struct Line {
    points: Vec<(f64, f64)>,
    label: String,
    color: RGBColor,
    faded: bool,
}

fn line(
    all: &[RunResult],
    t: Transport,
    label: String,
    color: RGBColor,
    faded: bool,
    f: fn(&RunResult) -> f64,
) -> Line {
    Line {
        points: all
            .iter()
            .filter(|r| r.transport == t)
            .map(|r| (r.offered_per_s / 1000.0, f(r)))
            .collect(),
        label,
        color,
        faded,
    }
}

/// Draws one panel: `lines` against offered load (thousands of deliveries/s), on a
/// logarithmic y axis when `log` (latency spans microseconds to seconds past the knee).
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    y_desc: &str,
    x_max: f64,
    lines: Vec<Line>,
    log: bool,
) -> anyhow::Result<()> {
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let builder = |area| {
        let mut b = ChartBuilder::on(area);
        b.caption(caption, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60);
        b
    };
    if log {
        let y_min = lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(y_max, f64::min)
            .max(0.001)
            * 0.8;
        let chart = builder(area).build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
        draw_lines(chart, y_desc, lines)
    } else {
        let chart = builder(area).build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        draw_lines(chart, y_desc, lines)
    }
}

fn draw_lines<'a, Y>(
    mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    y_desc: &str,
    lines: Vec<Line>,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("offered deliveries/s (thousands)")
        .y_desc(y_desc)
        .draw()?;
    for l in lines {
        let style = if l.faded {
            l.color.mix(0.5).stroke_width(2)
        } else {
            l.color.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(l.points.clone(), style))?
            .label(l.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        let color = l.color;
        chart.draw_series(l.points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Draws the chart to `path`.
pub(crate) fn draw(path: &Path, all: &[RunResult]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let x_max = all
        .iter()
        .map(|r| r.offered_per_s / 1000.0)
        .fold(1.0, f64::max)
        * 1.05;
    let transports = [
        (Transport::Quicmatch, "quicmatch", RED),
        (Transport::QuicmatchProto, "quicmatch-proto", BLACK),
        (Transport::UdpBaseline, "udp-baseline", BLUE),
        (Transport::QuinnBaseline, "quinn-baseline", GREEN),
        (Transport::ProtoBaseline, "proto-baseline", MAGENTA),
    ];
    // A transport the sweep did not run draws nothing.
    let transports: Vec<_> = transports
        .into_iter()
        .filter(|(t, _, _)| all.iter().any(|r| r.transport == *t))
        .collect();
    let latency = transports
        .iter()
        .flat_map(|(t, name, color)| {
            [
                line(all, *t, format!("{name} p50"), *color, false, |r| {
                    r.p50_us as f64 / 1000.0
                }),
                line(all, *t, format!("{name} p99"), *color, true, |r| {
                    r.p99_us as f64 / 1000.0
                }),
            ]
        })
        .collect();
    panel(
        &top,
        "one-way latency vs offered load",
        "latency (ms, log scale)",
        x_max,
        latency,
        true,
    )?;
    let delivered = transports
        .iter()
        .map(|(t, name, color)| {
            line(all, *t, format!("{name} delivered"), *color, false, |r| {
                r.delivered_per_s / 1000.0
            })
        })
        .collect();
    panel(
        &bottom,
        "delivered vs offered load",
        "delivered/s (thousands)",
        x_max,
        delivered,
        false,
    )?;
    root.present()?;
    Ok(())
}
