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

/// The bundled font (see `simulations/assets/FONT-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

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

mod run;
mod sweep;

pub use run::{RunFigure, metrics};
pub use sweep::{SweepFigure, SweepPoint, SweepSeries, privacy_utility};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::RoundMetrics;
    use sweep::log_ticks;

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

        // Lines that share their non-private runs (noise placements) get one
        // level; lines with runs of their own (models) one each.
        let line = |label: &str, non_private: Vec<f64>| SweepSeries {
            label: label.into(),
            points: series[0].points.clone(),
            non_private,
        };
        let levels = |lines: &[SweepSeries]| {
            let fig = SweepFigure {
                series: lines,
                ..fig
            };
            privacy_utility(dir.path(), &fig).unwrap();
            let svg = std::fs::read_to_string(dir.path().join("privacy_utility.svg")).unwrap();
            svg.matches("non-private, mean of").count()
        };
        let shared = vec![
            line("dp = central", vec![0.96]),
            line("dp = local", vec![0.96]),
        ];
        assert_eq!(levels(&shared), 1);
        let own = vec![line("model = a", vec![0.96]), line("model = b", vec![0.9])];
        assert_eq!(levels(&own), 2);
    }
}
