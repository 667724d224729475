//! A run's figure: test accuracy (RMSE for a regression) and loss and,
//! when private, ε against the training round (`metrics.png`, `.svg`).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{BLUE, FAMILY, GREEN, GREY, ORANGE, SIZE, both, err, legend, span};
use crate::experiment::RoundMetrics;

/// The figures of one run.
pub struct RunFigure<'a> {
    /// Title line (data, sites, engine).
    pub title: &'a str,
    /// Per-round metrics.
    pub history: &'a [RoundMetrics],
    /// δ of the ε figures, when private.
    pub delta: Option<f64>,
}

/// Writes `metrics.png` and `metrics.svg` into `dir`.
pub fn metrics(dir: &Path, fig: &RunFigure<'_>) -> anyhow::Result<()> {
    both(
        dir,
        "metrics",
        |root| draw_metrics(&root, fig),
        |root| draw_metrics(&root, fig),
    )
}

fn draw_metrics<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &RunFigure<'_>,
) -> anyhow::Result<()> {
    let root = root
        .titled(fig.title, (FAMILY, 22).into_font())
        .map_err(err)?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2 - 10);
    let h = fig.history;
    let last = h.iter().map(|m| m.round).max().unwrap_or(1).max(1);
    let x = 0.5f64..f64::from(last) + 0.5;
    // Whole rounds only, at most a dozen ticks.
    let step = f64::from(last.div_ceil(12));
    let ticks = (f64::from(last) / step).ceil() as usize + 2;
    let round_label = move |v: &f64| {
        if (v - v.round()).abs() < 1e-6 && (v.round() / step).fract().abs() < 1e-6 && *v >= 1.0 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };

    // Upper panel: accuracy, or a regression's RMSE (left axis), and loss
    // (right axis).
    let regression = h.iter().any(|m| m.regression.is_some());
    let (metric, primary): (&str, fn(&RoundMetrics) -> f64) = if regression {
        ("test RMSE", |m| m.regression.map_or(f64::NAN, |r| r.rmse))
    } else {
        ("test accuracy", |m| m.accuracy)
    };
    let acc_span = span(h.iter().map(primary), Some(0.0));
    let loss_span = span(h.iter().map(|m| m.loss), Some(0.0));
    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(x.clone(), acc_span.0..acc_span.1)
        .map_err(err)?
        .set_secondary_coord(x.clone(), loss_span.0..loss_span.1);
    chart
        .configure_mesh()
        .x_labels(ticks)
        .x_label_formatter(&round_label)
        .x_desc("training round")
        .y_desc(metric)
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_desc("test loss")
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .draw()
        .map_err(err)?;
    let acc: Vec<(f64, f64)> = h.iter().map(|m| (f64::from(m.round), primary(m))).collect();
    line_with_points(&mut chart, &acc, BLUE, format!("{metric} (left)"))?;
    let loss: Vec<(f64, f64)> = h.iter().map(|m| (f64::from(m.round), m.loss)).collect();
    chart
        .draw_secondary_series(LineSeries::new(loss, ORANGE.stroke_width(2)))
        .map_err(err)?
        .label("test loss (right)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], ORANGE.stroke_width(2)));
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;

    // Lower panel: ε spent, or a note that the run is not private.
    let eps: Vec<(f64, f64)> = h
        .iter()
        .filter_map(|m| m.epsilon.map(|e| (f64::from(m.round), e)))
        .collect();
    if eps.is_empty() {
        bottom
            .draw(&Text::new(
                "no differential privacy in this run: no ε to show",
                (60, 120),
                (FAMILY, 18).into_font().color(&GREY),
            ))
            .map_err(err)?;
        return Ok(());
    }
    let eps_span = span(eps.iter().map(|p| p.1), Some(0.0));
    let delta = fig
        .delta
        .map(|d| format!(" (δ = {d:e})"))
        .unwrap_or_default();
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(x.clone(), 0.0f64..eps_span.1)
        .map_err(err)?
        // The same right margin as the upper panel (rounds line up), no
        // labels in it.
        .set_secondary_coord(x, 0.0f64..eps_span.1);
    chart
        .configure_mesh()
        .x_labels(ticks)
        .x_label_formatter(&round_label)
        .x_desc("training round")
        .y_desc(format!("ε spent{delta}"))
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_labels(0)
        .draw()
        .map_err(err)?;
    line_with_points(&mut chart, &eps, GREEN, format!("cumulative ε{delta}"))?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

/// Draws `points` as a line with a dot at each, in `color`, with its legend
/// entry.
fn line_with_points<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    points: &[(f64, f64)],
    color: RGBColor,
    label: String,
) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(LineSeries::new(points.to_vec(), color.stroke_width(2)))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart
        .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
        .map_err(err)?;
    Ok(())
}
