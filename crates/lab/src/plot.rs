//! Small SVG charts for the reports (`shroud bench all --report`): grouped bars and lines,
//! with their values written on them. Written as plain SVG elements: a plotting crate would
//! need a system font library only to measure the labels.

use std::fmt::Write;

/// Series colours, in order.
const COLOURS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
const W: f64 = 760.0;
const H: f64 = 380.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 50.0;
const PW: f64 = W - LEFT - 30.0;
const PH: f64 = H - TOP - 80.0;

/// One named series of values, one per x position.
pub struct Series<'a> {
    /// Its name, in the legend.
    pub name: &'a str,
    /// Its values.
    pub values: Vec<f64>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn frame(title: &str, y_label: &str, xs: &[String], series: &[Series<'_>]) -> (String, f64) {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="16">{}</text>"#,
        esc(title)
    );
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="#333"/><line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#333"/><text x="12" y="{}" font-size="11" transform="rotate(-90 12 {})">{}</text>"##,
        TOP + PH,
        TOP + PH,
        LEFT + PW,
        TOP + PH,
        TOP + PH / 2.0,
        TOP + PH / 2.0,
        esc(y_label)
    );
    for t in 0..=4 {
        let v = max * f64::from(t) / 4.0;
        let y = TOP + PH - PH * f64::from(t) / 4.0;
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text><line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/>"##,
            LEFT - 4.0,
            y + 3.0,
            short(v),
            LEFT + PW
        );
    }
    let n = xs.len().max(1) as f64;
    for (i, x) in xs.iter().enumerate() {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            LEFT + (i as f64 + 0.5) * PW / n,
            TOP + PH + 16.0,
            esc(x)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{}" font-size="11">{}</text>"#,
            LEFT + i as f64 * 180.0,
            H - 30.0,
            COLOURS[i % COLOURS.len()],
            LEFT + 14.0 + i as f64 * 180.0,
            H - 21.0,
            esc(s.name)
        );
    }
    (out, max)
}

/// Grouped bars: one group per x, one bar per series.
pub fn bars(title: &str, y_label: &str, xs: &[String], series: &[Series<'_>]) -> String {
    let (mut out, max) = frame(title, y_label, xs, series);
    let n = xs.len().max(1) as f64;
    let group = PW / n;
    let bw = group * 0.8 / series.len().max(1) as f64;
    for (si, s) in series.iter().enumerate() {
        for (i, &v) in s.values.iter().enumerate() {
            let h = v / max * PH;
            let x = LEFT + i as f64 * group + group * 0.1 + si as f64 * bw;
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                TOP + PH - h,
                bw * 0.95,
                COLOURS[si % COLOURS.len()],
                x + bw / 2.0,
                TOP + PH - h - 3.0,
                short(v)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Lines with markers: one point per x, one line per series.
pub fn lines(title: &str, y_label: &str, xs: &[String], series: &[Series<'_>]) -> String {
    let (mut out, max) = frame(title, y_label, xs, series);
    let n = xs.len().max(1) as f64;
    for (si, s) in series.iter().enumerate() {
        let c = COLOURS[si % COLOURS.len()];
        let pts: Vec<(f64, f64)> = s
            .values
            .iter()
            .enumerate()
            .map(|(i, &v)| (LEFT + (i as f64 + 0.5) * PW / n, TOP + PH - v / max * PH))
            .collect();
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for ((x, y), v) in pts.iter().zip(&s.values) {
            let _ = write!(
                out,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{c}"/><text x="{x:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                y - 6.0,
                short(*v)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_every_value_written() {
        let xs = vec!["a".to_string(), "b<".to_string()];
        let s = [
            Series {
                name: "one",
                values: vec![1.0, 2.5],
            },
            Series {
                name: "two",
                values: vec![20_000.0, 0.0],
            },
        ];
        for svg in [bars("t", "y", &xs, &s), lines("t", "y", &xs, &s)] {
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            assert!(svg.contains(">2.50<") && svg.contains(">20k<") && svg.contains("b&lt;"));
        }
    }
}
