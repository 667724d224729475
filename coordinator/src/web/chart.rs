//! Line charts as inline SVG, rendered on the server (no script, no
//! outside assets).

use std::fmt::Write as _;

use super::escape;

/// One line of a chart.
pub(super) struct Series<'a> {
    /// Legend text.
    pub(super) label: &'a str,
    /// CSS colour.
    pub(super) colour: &'a str,
    /// Points (x, y), x increasing.
    pub(super) points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

/// A readable tick value.
fn tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Whole-number ticks between `x0` and `x1`: every one when there are few,
/// else five spread evenly.
fn x_ticks(x0: f64, x1: f64) -> Vec<f64> {
    let (a, b) = (x0.ceil(), x1.floor());
    if b - a <= 8.0 {
        return (0..=((b - a).max(0.0) as u32))
            .map(|i| a + f64::from(i))
            .collect();
    }
    let mut v: Vec<f64> = (0..=4)
        .map(|i| (x0 + (x1 - x0) * f64::from(i) / 4.0).round())
        .collect();
    v.dedup();
    v
}

/// An SVG line chart of `series` with an optional horizontal reference
/// line (value, label), e.g. the ε budget. `title` is the accessible name.
pub(super) fn line_chart(
    title: &str,
    x_label: &str,
    series: &[Series<'_>],
    reference: Option<(f64, &str)>,
) -> String {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if let Some((r, _)) = reference {
        y1 = y1.max(r);
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= 0.0 || !y1.is_finite() {
        y1 = 1.0;
    }
    y1 *= 1.05;
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT);
    let py = |y: f64| TOP + (1.0 - y / y1) * (HEIGHT - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"{t}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{t}</title>",
        t = escape(title)
    );
    // Axes and ticks.
    let _ = write!(
        svg,
        "<g stroke=\"#888\" stroke-width=\"1\"><line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\"/></g>",
        b = HEIGHT - BOTTOM,
        r = WIDTH - RIGHT
    );
    svg.push_str("<g font-size=\"11\" fill=\"#444\">");
    for i in 0..=4 {
        let y = y1 * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            py(y) + 4.0,
            tick(y)
        );
    }
    for x in x_ticks(x0, x1) {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x:.0}</text>",
            px(x),
            HEIGHT - BOTTOM + 16.0,
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text></g>",
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 6.0,
        escape(x_label)
    );
    if let Some((r, label)) = reference {
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{x2}\" y2=\"{y:.1}\" stroke=\"#c0392b\" \
             stroke-dasharray=\"6 4\"/><text x=\"{x2}\" y=\"{ty:.1}\" font-size=\"11\" \
             fill=\"#c0392b\" text-anchor=\"end\">{}</text>",
            escape(label),
            y = py(r),
            ty = py(r) - 4.0,
            x2 = WIDTH - RIGHT
        );
    }
    for (i, s) in series.iter().enumerate() {
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" "),
            c = escape(s.colour)
        );
        for &(x, y) in &s.points {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{c}\"><title>{} {}: {}</title></circle>",
                px(x),
                py(y),
                escape(x_label),
                tick(x),
                tick(y),
                c = escape(s.colour)
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"14\" font-size=\"11\" fill=\"{c}\">{}</text>",
            LEFT + 110.0 * i as f64,
            escape(s.label),
            c = escape(s.colour)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_escapes_labels_and_draws_every_point() {
        let svg = line_chart(
            "ε <spent>",
            "round",
            &[Series {
                label: "<b>",
                colour: "#123456",
                points: vec![(1.0, 0.5), (2.0, 1.0), (3.0, 1.5)],
            }],
            Some((4.0, "budget")),
        );
        assert!(svg.contains("&lt;spent&gt;") && svg.contains("&lt;b&gt;"));
        assert!(!svg.contains("<b>"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("budget"));
    }

    #[test]
    fn empty_chart_still_renders() {
        let svg = line_chart("nothing", "round", &[], None);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
