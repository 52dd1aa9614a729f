//! Small self-contained SVG charts for the replay report: lines and points on linear or
//! logarithmic axes, and panels of horizontal bars ([`Bars`]) for comparing a few
//! configurations. Hand-written because a report needs a handful of plain charts, and a
//! plotting library would pull a font stack into every build for them.

use std::fmt::Write;

const W: f64 = 780.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    Points,
    /// Large points, for a few points that each stand for a whole run.
    Marks,
    /// A line through the points, as steps (for CDFs).
    Steps,
}

pub struct Series {
    pub name: String,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, style: Style, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), style, points }
    }
}

#[derive(Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
}

/// One axis: data range → pixel range, linear or log10.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    from: f64,
    to: f64,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool, from: f64, to: f64) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (if log { 1.0 } else { 0.0 }, 1.0);
        }
        if log {
            lo = 10f64.powf(lo.log10().floor());
            hi = 10f64.powf(hi.log10().ceil().max(lo.log10() + 1.0));
        } else {
            // Charts of counts and latencies read best from zero.
            lo = lo.min(0.0);
            if hi <= lo {
                hi = lo + 1.0;
            }
            let step = nice_step((hi - lo) / 5.0);
            hi = (hi / step).ceil() * step;
        }
        Axis { lo, hi, log, from, to }
    }

    fn map(&self, v: f64) -> Option<f64> {
        if !v.is_finite() || (self.log && v <= 0.0) {
            return None;
        }
        let f = if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        Some(self.from + f * (self.to - self.from))
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (self.lo.log10().round() as i32, self.hi.log10().round() as i32);
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            let step = nice_step((self.hi - self.lo) / 5.0);
            let mut t = (self.lo / step).ceil() * step;
            let mut out = Vec::new();
            while t <= self.hi + step * 1e-9 {
                out.push(t);
                t += step;
            }
            out
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// An open `<svg>` of the charts' width and `height`, white, with `title` centred on `mid`.
fn header(height: f64, mid: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{W}" height="{height}" fill="white"/>"#);
    let _ = write!(s, r#"<text x="{mid}" y="22" text-anchor="middle" font-size="15">{}</text>"#, escape(title));
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Chart {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Chart {
        Chart { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), ..Chart::default() }
    }

    pub fn log_x(mut self) -> Chart {
        self.log_x = true;
        self
    }

    pub fn log_y(mut self) -> Chart {
        self.log_y = true;
        self
    }

    pub fn with(mut self, s: Series) -> Chart {
        self.series.push(s);
        self
    }

    pub fn render(&self) -> String {
        let all = || self.series.iter().flat_map(|s| s.points.iter());
        let x = Axis::new(all().map(|p| p.0), self.log_x, LEFT, W - RIGHT);
        let y = Axis::new(all().map(|p| p.1), self.log_y, H - BOTTOM, TOP);
        let mut s = header(H, (LEFT + W - RIGHT) / 2.0, &self.title);
        for t in x.ticks() {
            let Some(px) = x.map(t) else { continue };
            let _ = write!(
                s,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{}" stroke="#e5e5e5"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
                H - BOTTOM,
                H - BOTTOM + 16.0,
                label(t)
            );
        }
        for t in y.ticks() {
            let Some(py) = y.map(t) else { continue };
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                py + 4.0,
                label(t)
            );
        }
        let _ = write!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
            W - RIGHT - LEFT,
            H - BOTTOM - TOP
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            H - 12.0,
            escape(&self.x_label)
        );
        let _ = write!(
            s,
            r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (TOP + H - BOTTOM) / 2.0,
            escape(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> =
                series.points.iter().filter_map(|(a, b)| Some((x.map(*a)?, y.map(*b)?))).collect();
            match series.style {
                Style::Points | Style::Marks => {
                    let r = if series.style == Style::Marks { 6.0 } else { 2.5 };
                    for (px, py) in &pts {
                        let _ = write!(
                            s,
                            r#"<circle cx="{px:.1}" cy="{py:.1}" r="{r}" fill="{colour}" fill-opacity="0.6"/>"#
                        );
                    }
                }
                Style::Line | Style::Steps => {
                    let mut d = String::new();
                    for (j, (px, py)) in pts.iter().enumerate() {
                        if j == 0 {
                            let _ = write!(d, "M{px:.1},{py:.1}");
                        } else if series.style == Style::Steps {
                            let _ = write!(d, " H{px:.1} V{py:.1}");
                        } else {
                            let _ = write!(d, " L{px:.1},{py:.1}");
                        }
                    }
                    let _ = write!(s, r#"<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.8"/>"#);
                }
            }
            let ly = TOP + 10.0 + 18.0 * i as f64;
            let lx = W - RIGHT + 12.0;
            let _ = write!(
                s,
                r#"<rect x="{lx}" y="{}" width="12" height="4" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
                ly - 4.0,
                lx + 18.0,
                ly + 1.0,
                escape(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// Panels of horizontal bars, one panel per measure and one bar per category in every
/// panel (same colour for a category throughout), each bar labelled with its value. A
/// missing value leaves its bar out and says so.
pub struct Bars {
    pub title: String,
    pub categories: Vec<String>,
    /// (measure, with its unit; one value per category)
    pub panels: Vec<(String, Vec<Option<f64>>)>,
}

impl Bars {
    pub fn render(&self) -> String {
        const COLUMNS: usize = 2;
        const NAMES: f64 = 110.0;
        const BAR: f64 = 16.0;
        const GAP: f64 = 4.0;
        let panel_w = (W - 20.0) / COLUMNS as f64;
        let panel_h = 28.0 + self.categories.len() as f64 * (BAR + GAP) + 14.0;
        let rows = self.panels.len().div_ceil(COLUMNS);
        let height = TOP + rows as f64 * panel_h;
        let mut s = header(height, W / 2.0, &self.title);
        for (p, (measure, values)) in self.panels.iter().enumerate() {
            let (x0, y0) = (10.0 + (p % COLUMNS) as f64 * panel_w, TOP + (p / COLUMNS) as f64 * panel_h);
            let _ =
                write!(s, r#"<text x="{:.1}" y="{:.1}" font-weight="bold">{}</text>"#, x0, y0 + 14.0, escape(measure));
            let longest = values.iter().flatten().fold(0.0f64, |m, v| m.max(*v));
            // Room on the right for the value's label.
            let span = panel_w - NAMES - 70.0;
            for (i, (category, &value)) in self.categories.iter().zip(values).enumerate() {
                let y = y0 + 26.0 + i as f64 * (BAR + GAP);
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                    x0 + NAMES - 6.0,
                    y + BAR - 4.0,
                    escape(category)
                );
                let Some(v) = value.filter(|v: &f64| v.is_finite()) else {
                    let _ = write!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" fill="#888">not measured</text>"##,
                        x0 + NAMES,
                        y + BAR - 4.0
                    );
                    continue;
                };
                let w = if longest > 0.0 { (v.max(0.0) / longest * span).max(1.0) } else { 1.0 };
                let colour = COLOURS[i % COLOURS.len()];
                let _ = write!(
                    s,
                    r#"<rect x="{:.1}" y="{y:.1}" width="{w:.1}" height="{BAR}" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                    x0 + NAMES,
                    x0 + NAMES + w + 4.0,
                    y + BAR - 4.0,
                    value_label(v)
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

/// A bar's value: three significant digits, thousands as `k`.
fn value_label(v: f64) -> String {
    if v.abs() >= 1e4 {
        label(v)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_and_skips_points_a_log_axis_cannot_show() {
        let svg = Chart::new("t <1>", "x", "y")
            .log_x()
            .with(Series::new("a", Style::Line, vec![(1.0, 1.0), (10.0, 2.0), (100.0, 3.0)]))
            .with(Series::new("b", Style::Points, vec![(0.0, 5.0), (50.0, 4.0)]))
            .render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert_eq!(svg.matches("<path").count(), 1);
        // x = 0 has no place on a log axis: one circle, not two.
        assert_eq!(svg.matches("<circle").count(), 1);
    }

    #[test]
    fn bars_show_every_measured_value_and_say_which_are_missing() {
        let svg = Bars {
            title: "cost".into(),
            categories: vec!["push-all".into(), "pull-all".into()],
            panels: vec![
                ("inserts per post".into(), vec![Some(75.0), Some(1.0)]),
                ("MiB".into(), vec![Some(2.5), None]),
            ],
        }
        .render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<rect").count(), 1 + 3, "the background and three bars");
        assert_eq!(svg.matches("not measured").count(), 1);
        assert!(svg.contains(">75.0<") && svg.contains(">1.00<") && svg.contains(">2.50<"), "{svg}");
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(13.0), 20.0);
        assert_eq!(nice_step(420.0), 500.0);
        assert_eq!(label(25_000.0), "25k");
        assert_eq!(label(2.5), "2.5");
    }
}
