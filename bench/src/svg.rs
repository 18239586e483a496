//! Hand-written SVG charts: lines (optionally log x), grouped bars, and a
//! timeline of events and loss windows. Plain SVG 1.1, no scripts, no
//! external fonts, so the files open in any browser and render on GitHub.
//!
//! Owns only the text it returns; the caller writes the files.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn head(out: &mut String, title: &str, w: f64, h: f64) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>
"#,
        w / 2.0,
        esc(title)
    );
}

/// Round tick values covering `lo..hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 20 {
        out.push(t);
        t += step;
    }
    out
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", crate::report::fmt(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", crate::report::fmt(v / 1e3))
    } else {
        crate::report::fmt(v)
    }
}

/// A line chart; `log_x` puts x on a log10 scale (x must be > 0).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> String {
    let tx = |x: f64| if log_x { x.max(1e-12).log10() } else { x };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(tx(p.0)), b.max(tx(p.0)))
    });
    let y1 = pts.iter().fold(0.0f64, |a, p| a.max(p.1)) * 1.1;
    let y1 = if y1 > 0.0 { y1 } else { 1.0 };
    if pts.is_empty() {
        (x0, x1) = (0.0, 1.0);
    }
    if log_x {
        x0 = x0.floor();
        x1 = x1.ceil().max(x0 + 1.0);
    } else if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * pw;
    let py = |y: f64| TOP + ph - y / y1 * ph;
    let mut out = String::new();
    head(&mut out, title, W, H);
    axes(&mut out, x_label, y_label, pw, ph);
    for t in ticks(0.0, y1) {
        let y = py(t);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            label(t)
        );
    }
    let xt: Vec<f64> = if log_x {
        (x0 as i32..=x1 as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        ticks(x0, x1)
    };
    for t in xt {
        let x = px(t);
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            label(t)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        if s.points.len() <= 20 {
            for &(x, y) in &s.points {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                    px(x),
                    py(y)
                );
            }
        }
        legend(&mut out, i, &s.name, c);
    }
    out.push_str("</svg>\n");
    out
}

fn axes(out: &mut String, x_label: &str, y_label: &str, pw: f64, ph: f64) {
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#333"/><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        TOP + ph,
        TOP + ph,
        LEFT + pw,
        TOP + ph,
        LEFT + pw / 2.0,
        H - 18.0,
        esc(x_label),
        TOP + ph / 2.0,
        esc(y_label)
    );
}

fn legend(out: &mut String, i: usize, name: &str, color: &str) {
    let y = TOP + 10.0 + i as f64 * 18.0;
    let x = W - RIGHT + 12.0;
    let _ = writeln!(
        out,
        r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
        y - 10.0,
        x + 18.0,
        y,
        esc(name)
    );
}

/// Grouped bars: one group per case, one bar per candidate.
pub fn bar_chart(title: &str, y_label: &str, groups: &[(String, Vec<(String, f64)>)]) -> String {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let y1 = groups
        .iter()
        .flat_map(|g| g.1.iter().map(|b| b.1))
        .fold(0.0f64, f64::max)
        * 1.1;
    let y1 = if y1 > 0.0 { y1 } else { 1.0 };
    let py = |y: f64| TOP + ph - y / y1 * ph;
    let mut out = String::new();
    head(&mut out, title, W, H);
    axes(&mut out, "", y_label, pw, ph);
    for t in ticks(0.0, y1) {
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            py(t) + 4.0,
            label(t),
            y = py(t)
        );
    }
    let mut names: Vec<String> = Vec::new();
    for g in groups {
        for (n, _) in &g.1 {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let gw = pw / groups.len().max(1) as f64;
    let bw = gw * 0.8 / names.len().max(1) as f64;
    for (gi, (case, bars)) in groups.iter().enumerate() {
        let gx = LEFT + gi as f64 * gw + gw * 0.1;
        for (name, v) in bars {
            let bi = names.iter().position(|n| n == name).unwrap_or(0);
            let x = gx + bi as f64 * bw;
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                py(*v),
                bw * 0.9,
                TOP + ph - py(*v),
                COLORS[bi % COLORS.len()],
                x + bw * 0.45,
                py(*v) - 3.0,
                label(*v)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + gw * 0.4,
            TOP + ph + 18.0,
            esc(case)
        );
    }
    for (i, n) in names.iter().enumerate() {
        legend(&mut out, i, n, COLORS[i % COLORS.len()]);
    }
    out.push_str("</svg>\n");
    out
}

/// One row of a timeline: events (seconds, text) and loss windows
/// (start s, length s, datagrams lost).
#[derive(Debug, Clone, Default)]
pub struct TimelineRow {
    pub label: String,
    pub events: Vec<(f64, String)>,
    pub losses: Vec<(f64, f64, u64)>,
}

/// Rows of time lines with loss windows in red and events as ticks.
pub fn timeline(title: &str, rows: &[TimelineRow]) -> String {
    let row_h = 46.0;
    let left = 260.0;
    let w = 900.0;
    let h = TOP + BOTTOM + row_h * rows.len().max(1) as f64;
    let t1 = rows
        .iter()
        .flat_map(|r| {
            r.events
                .iter()
                .map(|e| e.0)
                .chain(r.losses.iter().map(|l| l.0 + l.1))
        })
        .fold(1.0f64, f64::max)
        * 1.05;
    let pw = w - left - 30.0;
    let px = |t: f64| left + t / t1 * pw;
    let mut out = String::new();
    head(&mut out, title, w, h);
    for t in ticks(0.0, t1) {
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}s</text>"##,
            h - BOTTOM,
            h - BOTTOM + 16.0,
            crate::report::fmt(t),
            x = px(t)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + i as f64 * row_h + row_h / 2.0;
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text><line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#999"/>"##,
            left - 8.0,
            y + 4.0,
            esc(&r.label),
            left + pw
        );
        for (t, what) in &r.events {
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#1f77b4"><title>{}</title></line>"##,
                y - 12.0,
                y + 12.0,
                esc(&format!("+{t:.3}s {what}")),
                x = px(*t)
            );
        }
        for &(t, len, lost) in &r.losses {
            let wd = (len / t1 * pw).max(2.0);
            let _ = writeln!(
                out,
                r##"<rect x="{:.1}" y="{:.1}" width="{wd:.1}" height="16" fill="#d62728" opacity="0.8"><title>{}</title></rect><text x="{:.1}" y="{:.1}" font-size="10" fill="#d62728">{} ms</text>"##,
                px(t),
                y - 8.0,
                esc(&format!(
                    "{lost} lost, window {:.0} ms at +{t:.3}s",
                    len * 1e3
                )),
                px(t) + wd + 3.0,
                y - 10.0,
                (len * 1e3).round()
            );
        }
    }
    let _ = writeln!(
        out,
        r##"<text x="{left}" y="{:.1}" font-size="11">blue: events (hover for text) · red: loss windows</text>"##,
        h - 12.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 0.9).len(), 5);
    }

    #[test]
    fn charts_are_wellformed_svg() {
        let s = vec![Series {
            name: "a<b".into(),
            points: vec![(1e3, 5.0), (1e5, 4.0), (1e6, 3.0)],
        }];
        let svg = line_chart("t", "x", "y", &s, true);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b"));
        assert!(!svg.contains("NaN"));
        let bars = bar_chart("b", "ns", &[("64 B".into(), vec![("x".into(), 1.0)])]);
        assert!(bars.contains("<rect") && !bars.contains("NaN"));
        let tl = timeline(
            "f",
            &[TimelineRow {
                label: "(a) kill".into(),
                events: vec![(1.0, "kill".into())],
                losses: vec![(1.0, 0.3, 3000)],
            }],
        );
        assert!(tl.contains("300 ms") && !tl.contains("NaN"));
    }
}
