//! The sweep chart: latency percentiles and delivered rate against offered load, for
//! both transports, as one SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::relay::{RunResult, Transport};

fn series(all: &[RunResult], t: Transport, f: fn(&RunResult) -> f64) -> Vec<(f64, f64)> {
    all.iter()
        .filter(|r| r.transport == t)
        .map(|r| (r.offered_per_s / 1000.0, f(r)))
        .collect()
}

fn max_of(points: &[(f64, f64)]) -> f64 {
    points.iter().map(|p| p.1).fold(0.0, f64::max)
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
        (Transport::UdpBaseline, "udp-baseline", BLUE),
    ];

    let lat: Vec<_> = transports
        .iter()
        .flat_map(|(t, name, color)| {
            [
                (
                    series(all, *t, |r| r.p50_us as f64 / 1000.0),
                    format!("{name} p50"),
                    *color,
                    false,
                ),
                (
                    series(all, *t, |r| r.p99_us as f64 / 1000.0),
                    format!("{name} p99"),
                    *color,
                    true,
                ),
            ]
        })
        .collect();
    let y_max = lat.iter().map(|s| max_of(&s.0)).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption("one-way latency vs offered load", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("offered deliveries/s (thousands)")
        .y_desc("latency (ms)")
        .draw()?;
    for (points, label, color, dashed) in lat {
        let style = if dashed {
            color.mix(0.5).stroke_width(2)
        } else {
            color.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(points.clone(), style))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let delivered: Vec<_> = transports
        .iter()
        .map(|(t, name, color)| {
            (
                series(all, *t, |r| r.delivered_per_s / 1000.0),
                format!("{name} delivered"),
                *color,
            )
        })
        .collect();
    let y_max = delivered.iter().map(|s| max_of(&s.0)).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("delivered vs offered load", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("offered deliveries/s (thousands)")
        .y_desc("delivered/s (thousands)")
        .draw()?;
    for (points, label, color) in delivered {
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
