//! The audit's SVG report: per pair of workloads, the two leaf histograms and the two
//! per-epoch slot counts, side by side.
//!
//! Written directly as SVG elements (bars, polylines, text): a plotting crate would need a
//! system font library just to measure labels, and these charts need no layout beyond this.

use std::fmt::Write;

use super::PairReport;

const W: f64 = 1100.0;
const ROW: f64 = 260.0;
const A: &str = "#1f77b4";
const B: &str = "#ff7f0e";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One chart in the box (x, y, w, h): grouped bars for two histograms.
fn bars(out: &mut String, x: f64, y: f64, w: f64, h: f64, a: &[u64], b: &[u64]) {
    let max = a.iter().chain(b).copied().max().unwrap_or(1).max(1) as f64;
    let n = a.len().max(1) as f64;
    let bw = w / n / 2.0;
    for (i, (&va, &vb)) in a.iter().zip(b).enumerate() {
        let x0 = x + i as f64 * w / n;
        for (j, (v, c)) in [(va, A), (vb, B)].into_iter().enumerate() {
            let bh = v as f64 / max * h;
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}"/>"#,
                x0 + j as f64 * bw,
                y + h - bh,
                bw * 0.9,
                bh
            );
        }
    }
    let _ = write!(
        out,
        r##"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="#333"/><text x="{x}" y="{}" font-size="11">leaf (binned) → · bar height: paths that ended there (max {max})</text>"##,
        y + h,
        x + w,
        y + h,
        y + h + 14.0
    );
}

/// One chart in the box: two series as polylines.
fn lines(out: &mut String, x: f64, y: f64, w: f64, h: f64, a: &[u64], b: &[u64]) {
    let max = a.iter().chain(b).copied().max().unwrap_or(1).max(1) as f64;
    let n = a.len().max(b.len()).max(2) as f64 - 1.0;
    for (s, c, dash) in [(a, A, ""), (b, B, r#" stroke-dasharray="4 3""#)] {
        let pts: Vec<String> = s
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                format!(
                    "{:.1},{:.1}",
                    x + i as f64 / n * w,
                    y + h - v as f64 / max * h * 0.9
                )
            })
            .collect();
        let _ = write!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="1.5"{dash}/>"#,
            pts.join(" ")
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="#333"/><text x="{x}" y="{}" font-size="11">epoch → · slots at storage per epoch (max {max})</text>"##,
        y + h,
        x + w,
        y + h,
        y + h + 14.0
    );
}

/// The whole report.
pub fn report(pairs: &[PairReport], pass: bool) -> String {
    let mut out = String::new();
    let height = 60.0 + ROW * pairs.len() as f64;
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="20" y="30" font-size="18">shroud audit: {}</text>"#,
        if pass {
            "no difference detected"
        } else {
            "DIFFERENCES DETECTED"
        }
    );
    for (i, p) in pairs.iter().enumerate() {
        let y = 50.0 + ROW * i as f64;
        let failed: Vec<&str> = p
            .verdicts
            .iter()
            .filter(|v| !v.pass)
            .map(|v| v.test.as_str())
            .collect();
        let _ = write!(
            out,
            r#"<text x="20" y="{}" font-size="14"><tspan fill="{A}">■ {}</tspan> vs <tspan fill="{B}">■ {}</tspan>, {} ORAM ({} and {} paths): {}</text>"#,
            y + 16.0,
            esc(&p.a),
            esc(&p.b),
            esc(&p.oram),
            p.paths[0],
            p.paths[1],
            if failed.is_empty() {
                "all tests pass".to_string()
            } else {
                esc(&format!("FAILED: {}", failed.join("; ")))
            }
        );
        bars(
            &mut out,
            20.0,
            y + 30.0,
            520.0,
            ROW - 80.0,
            &p.leaves_a,
            &p.leaves_b,
        );
        lines(
            &mut out,
            570.0,
            y + 30.0,
            510.0,
            ROW - 80.0,
            &p.slots_a,
            &p.slots_b,
        );
    }
    out.push_str("</svg>\n");
    out
}
