//! A sweep's figure: the final metric against ε, every run as a point, the
//! mean over seeds as a line, the spread over seeds as a band, one series
//! per placement or varied option, and the non-private level as a dashed
//! line (`privacy_utility.png`, `.svg`).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{BLUE, FAMILY, GREEN, GREY, ORANGE, both, err, legend, span};

/// One private setting of a sweep: its ε and each seed's final metric.
#[derive(Debug, Clone)]
pub struct SweepPoint {
    /// ε spent by the setting's runs (their mean, should they differ).
    pub epsilon: f64,
    /// The final metric of each seed's run.
    pub values: Vec<f64>,
}

/// One line of a sweep's plot (one value of the options varied besides
/// privacy, or the only line).
#[derive(Debug, Clone)]
pub struct SweepSeries {
    /// What it shows (empty when nothing else was varied).
    pub label: String,
    /// Private settings.
    pub points: Vec<SweepPoint>,
    /// The non-private runs' final metrics (one per seed), if any.
    pub non_private: Vec<f64>,
}

/// The figure of a sweep.
pub struct SweepFigure<'a> {
    /// Title line.
    pub title: &'a str,
    /// Name of the metric (y axis).
    pub metric: &'a str,
    /// δ of the ε figures.
    pub delta: f64,
    /// The lines.
    pub series: &'a [SweepSeries],
}

/// Writes `privacy_utility.png` and `privacy_utility.svg` into `dir`.
pub fn privacy_utility(dir: &Path, fig: &SweepFigure<'_>) -> anyhow::Result<()> {
    let usable = fig.series.iter().any(|s| {
        s.points
            .iter()
            .any(|p| p.epsilon.is_finite() && p.epsilon > 0.0 && !p.values.is_empty())
    });
    anyhow::ensure!(usable, "no private setting to plot");
    both(
        dir,
        "privacy_utility",
        |root| draw_sweep(&root, fig),
        |root| draw_sweep(&root, fig),
    )
}

/// Ticks of a log axis from `lo` to `hi`: 1, 2 and 5 times the powers of
/// ten (plotters' own start at the first power of ten, which leaves a
/// range such as 2–8 unlabelled).
pub(super) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return out;
    }
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = m * decade;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

const PALETTE: [RGBColor; 4] = [BLUE, ORANGE, GREEN, RGBColor(148, 103, 189)];

fn draw_sweep<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &SweepFigure<'_>,
) -> anyhow::Result<()> {
    let root = root
        .titled(fig.title, (FAMILY, 22).into_font())
        .map_err(err)?;
    let usable = |p: &&SweepPoint| p.epsilon.is_finite() && p.epsilon > 0.0 && !p.values.is_empty();
    let eps: Vec<f64> = fig
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter(usable).map(|p| p.epsilon))
        .collect();
    let emin = eps.iter().copied().fold(f64::INFINITY, f64::min);
    let emax = eps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let x = (emin / 1.6)..(emax * 1.6);
    let all = fig.series.iter().flat_map(|s| {
        s.points
            .iter()
            .flat_map(|p| p.values.iter().copied())
            .chain(s.non_private.iter().copied())
    });
    let y = span(all, Some(0.0));
    let mut chart = ChartBuilder::on(&root)
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(
            LogCoord::from(x.clone().log_scale()).with_key_points(log_ticks(x.start, x.end)),
            y.0..y.1,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(format!("ε spent (δ = {:e}, log scale)", fig.delta))
        .y_desc(format!("final {}", fig.metric))
        .x_label_formatter(&|v| {
            if *v >= 10.0 {
                format!("{v:.0}")
            } else if *v >= 1.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            }
        })
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .draw()
        .map_err(err)?;
    // Whether every line has the same non-private runs (then one level).
    let shared = fig
        .series
        .first()
        .is_some_and(|f| !f.non_private.is_empty())
        && fig
            .series
            .windows(2)
            .all(|w| w[0].non_private == w[1].non_private);
    for (i, s) in fig.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let name = |what: &str| {
            if s.label.is_empty() {
                what.to_owned()
            } else {
                format!("{}: {what}", s.label)
            }
        };
        let mut pts: Vec<&SweepPoint> = s.points.iter().filter(usable).collect();
        pts.sort_by(|a, b| a.epsilon.total_cmp(&b.epsilon));
        if pts.is_empty() {
            continue;
        }
        let seeds = pts.iter().map(|p| p.values.len()).max().unwrap_or(1);
        // Spread over seeds: the band from each setting's worst to best run.
        let mut band: Vec<(f64, f64)> = pts
            .iter()
            .map(|p| {
                (
                    p.epsilon,
                    p.values.iter().copied().fold(f64::INFINITY, f64::min),
                )
            })
            .collect();
        band.extend(pts.iter().rev().map(|p| {
            (
                p.epsilon,
                p.values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            )
        }));
        chart
            .draw_series(std::iter::once(Polygon::new(
                band,
                color.mix(0.18).filled(),
            )))
            .map_err(err)?
            .label(name(&format!("min–max over {seeds} seeds")))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 20, y + 6)], color.mix(0.18).filled())
            });
        let means: Vec<(f64, f64)> = pts.iter().map(|p| (p.epsilon, mean(&p.values))).collect();
        chart
            .draw_series(LineSeries::new(means, color.stroke_width(3)))
            .map_err(err)?
            .label(name("mean over seeds"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.iter().flat_map(|p| {
                p.values
                    .iter()
                    .map(|v| Circle::new((p.epsilon, *v), 4, color.filled()))
            }))
            .map_err(err)?
            .label(name("one run"))
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        // Each line's own non-private level, in its colour, when the lines
        // have levels of their own (e.g. one per model).
        if !s.non_private.is_empty() && !shared {
            let style = ShapeStyle::from(&color).stroke_width(2);
            non_private_level(&mut chart, x.clone(), &s.non_private, style, name)?;
        }
    }
    // One level for every line (a single line, or lines that share their
    // non-private runs, as noise placements do): drawn once, in grey.
    if shared && let Some(first) = fig.series.first() {
        let style = ShapeStyle::from(&GREY).stroke_width(2);
        non_private_level(&mut chart, x, &first.non_private, style, |w: &str| {
            w.to_owned()
        })?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

/// Draws the non-private level of `runs` as a dashed line across `x`, with
/// its legend entry (`name` adds the line's label, if any).
fn non_private_level<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    x: std::ops::Range<f64>,
    runs: &[f64],
    style: ShapeStyle,
    name: impl Fn(&str) -> String,
) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let level = mean(runs);
    let (x0, x1) = (x.start, x.end);
    let at = |k: f64| x0 * (x1 / x0).powf(k / 60.0);
    let dashes: Vec<PathElement<(f64, f64)>> = (0..60)
        .filter(|i| i % 2 == 0)
        .map(|i| {
            PathElement::new(
                vec![(at(i as f64), level), (at(i as f64 + 1.0), level)],
                style,
            )
        })
        .collect();
    chart
        .draw_series(dashes)
        .map_err(err)?
        .label(name(&format!(
            "non-private, mean of {} runs ({level:.3})",
            runs.len()
        )))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    Ok(())
}
