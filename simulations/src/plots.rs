//! Plots of runs and sweeps, drawn with plotters into a PNG (bitmap
//! backend) and an SVG of the same figure. Text is rendered with the font
//! bundled in `simulations/assets/` (DejaVu Sans, through plotters'
//! `ab_glyph` backend), so no system font is needed.
//!
//! - [`metrics`]: a run's test accuracy (RMSE for a regression) and loss
//!   and, when private, its ε
//!   against the training round (`metrics.png`, `metrics.svg`);
//! - [`privacy_utility`]: a sweep's final metric against ε — every run as a
//!   point, the mean over seeds as a line, the spread over seeds (min to
//!   max) as a band, and the non-private level as a dashed line
//!   (`privacy_utility.png`, `privacy_utility.svg`).

use std::path::Path;
use std::sync::Once;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::experiment::RoundMetrics;

/// The bundled font (see `simulations/assets/FONT-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Pixel size of the figures.
const SIZE: (u32, u32) = (960, 640);

const FAMILY: &str = "sans-serif";

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(230, 120, 20);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const GREY: RGBColor = RGBColor(90, 90, 90);

/// Registers the bundled font under the families plotters asks for.
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for family in ["sans-serif", "serif", "monospace"] {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                // The bundled file is a valid font; a failure here would
                // only lose text, which the tests would see.
                let _ = plotters::style::register_font(family, style, FONT);
            }
        }
    });
}

/// The legend every chart draws, boxed at `position`.
fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

/// Draws the same figure into `stem.png` and `stem.svg` in `dir`.
fn both(
    dir: &Path,
    stem: &str,
    draw_png: impl Fn(DrawingArea<BitMapBackend<'_>, Shift>) -> anyhow::Result<()>,
    draw_svg: impl Fn(DrawingArea<SVGBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    register_font();
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw_png(root.clone())?;
        root.present().map_err(err)?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw_svg(root.clone())?;
        root.present().map_err(err)?;
    }
    Ok(())
}

/// A range around `values` with a little air, never empty.
fn span(values: impl Iterator<Item = f64>, floor: Option<f64>) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    lo -= pad;
    hi += pad;
    if let Some(f) = floor {
        lo = lo.max(f);
    }
    (lo, hi)
}

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
    chart
        .draw_series(LineSeries::new(acc.clone(), BLUE.stroke_width(2)))
        .map_err(err)?
        .label(format!("{metric} (left)"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(acc.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))
        .map_err(err)?;
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
    chart
        .draw_series(LineSeries::new(eps.clone(), GREEN.stroke_width(2)))
        .map_err(err)?
        .label(format!("cumulative ε{delta}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    chart
        .draw_series(eps.iter().map(|p| Circle::new(*p, 3, GREEN.filled())))
        .map_err(err)?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

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
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
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
        if !s.non_private.is_empty() {
            let level = mean(&s.non_private);
            // One series: the non-private line in grey; several: in the
            // series' colour.
            let style = if fig.series.len() == 1 {
                ShapeStyle::from(&GREY).stroke_width(2)
            } else {
                ShapeStyle::from(&color).stroke_width(2)
            };
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
                    s.non_private.len()
                )))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> Vec<RoundMetrics> {
        (1..=8)
            .map(|r| RoundMetrics {
                round: r,
                accuracy: 0.6 + 0.04 * f64::from(r),
                loss: 0.7 - 0.05 * f64::from(r),
                epsilon: Some(0.4 * f64::from(r).sqrt()),
                seconds: f64::from(r),
                regression: None,
                federated: None,
            })
            .collect()
    }

    /// Dark pixels in a band of rows: text drawn there leaves some.
    fn ink(png: &Path, rows: std::ops::Range<u32>) -> usize {
        let img = image::open(png).unwrap().to_rgb8();
        rows.flat_map(|y| (0..img.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|c| *c < 100))
            .count()
    }

    #[test]
    fn run_figures_have_text_and_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let h = history();
        let fig = RunFigure {
            title: "breast cancer, 10 sites",
            history: &h,
            delta: Some(1e-5),
        };
        metrics(dir.path(), &fig).unwrap();
        let png = dir.path().join("metrics.png");
        // The title's glyphs: dark pixels in the top rows.
        assert!(ink(&png, 2..30) > 200, "no title text rendered");
        let svg = std::fs::read_to_string(dir.path().join("metrics.svg")).unwrap();
        for text in [
            "training round",
            "test accuracy",
            "ε spent",
            "breast cancer",
        ] {
            assert!(svg.contains(text), "{text} missing from the SVG");
        }
        // Not private: the lower panel says so.
        let mut plain = history();
        plain.iter_mut().for_each(|m| m.epsilon = None);
        let fig = RunFigure {
            title: "plain",
            history: &plain,
            delta: None,
        };
        metrics(dir.path(), &fig).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("metrics.svg")).unwrap();
        assert!(svg.contains("no differential privacy"));
        // A regression shows its RMSE, not an accuracy.
        let mut reg = history();
        for m in reg.iter_mut() {
            m.accuracy = f64::NAN;
            m.regression = Some(tessera_model::RegressionScores {
                rmse: m.loss.sqrt(),
                mae: m.loss,
                r2: 0.5,
            });
        }
        let fig = RunFigure {
            title: "diabetes",
            history: &reg,
            delta: None,
        };
        metrics(dir.path(), &fig).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("metrics.svg")).unwrap();
        assert!(svg.contains("test RMSE") && !svg.contains("test accuracy"));
    }

    #[test]
    fn log_ticks_label_every_decade_part() {
        assert_eq!(log_ticks(1.9, 80.0), vec![2.0, 5.0, 10.0, 20.0, 50.0]);
        assert_eq!(log_ticks(0.3, 1.5), vec![0.5, 1.0]);
        assert!(log_ticks(0.0, 1.0).is_empty());
    }

    #[test]
    fn sweep_figure_has_band_mean_points_and_the_non_private_line() {
        let dir = tempfile::tempdir().unwrap();
        let points = vec![
            SweepPoint {
                epsilon: 0.5,
                values: vec![0.7, 0.75, 0.72],
            },
            SweepPoint {
                epsilon: 2.0,
                values: vec![0.85, 0.88, 0.9],
            },
            SweepPoint {
                epsilon: 8.0,
                values: vec![0.93, 0.94, 0.95],
            },
        ];
        let series = vec![SweepSeries {
            label: String::new(),
            points,
            non_private: vec![0.96, 0.97, 0.96],
        }];
        let fig = SweepFigure {
            title: "sweep",
            metric: "test accuracy",
            delta: 1e-5,
            series: &series,
        };
        privacy_utility(dir.path(), &fig).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("privacy_utility.svg")).unwrap();
        for text in [
            "mean over seeds",
            "min–max over 3 seeds",
            "non-private",
            "final test accuracy",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(ink(&dir.path().join("privacy_utility.png"), 2..30) > 100);
        let none = vec![SweepSeries {
            label: String::new(),
            points: vec![],
            non_private: vec![0.9],
        }];
        let empty = SweepFigure {
            series: &none,
            ..fig
        };
        assert!(privacy_utility(dir.path(), &empty).is_err());
    }
}
