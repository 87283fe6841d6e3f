//! Line charts for the benches: one PNG per chart (plotters' bitmap backend), text in
//! DejaVu Sans read at run time from Debian's fonts-dejavu-core (plotters' `ab_glyph`
//! feature: no fontconfig, no system font lookup).
//!
//! A bench calls [`check_font`] before it measures anything (so a missing font fails in
//! seconds, not after the run), then [`draw`] with its [`Chart`]. The PNGs go to
//! `docs/bench/` of this checkout, or to `VOLBRIDGE_BENCH_PLOT_DIR`.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::OnceLock;

pub use plotters::chart::SeriesLabelPosition as Legend;

/// Debian's fonts-dejavu-core.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 620;
/// Tableau 10: told apart by most readers, also in grey.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
/// Lines with at most this many points get a marker on each.
const MARKERS_UP_TO: usize = 40;

/// One axis: its label (with the unit), linear or logarithmic, and optionally its range
/// and tick values (otherwise taken from the data).
#[derive(Clone, Default)]
pub struct Axis {
    pub label: String,
    pub log: bool,
    pub range: Option<(f64, f64)>,
    pub ticks: Option<Vec<f64>>,
}

impl Axis {
    pub fn linear(label: &str) -> Axis {
        Axis {
            label: label.to_owned(),
            ..Axis::default()
        }
    }

    pub fn log(label: &str) -> Axis {
        Axis {
            label: label.to_owned(),
            log: true,
            ..Axis::default()
        }
    }

    pub fn range(mut self, lo: f64, hi: f64) -> Axis {
        self.range = Some((lo, hi));
        self
    }

    pub fn ticks(mut self, ticks: &[f64]) -> Axis {
        self.ticks = Some(ticks.to_vec());
        self
    }
}

/// A named series. A baseline is drawn dashed, ours solid.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub baseline: bool,
}

impl Line {
    pub fn ours(name: &str, points: Vec<(f64, f64)>) -> Line {
        Line {
            name: name.to_owned(),
            points,
            baseline: false,
        }
    }

    pub fn baseline(name: &str, points: Vec<(f64, f64)>) -> Line {
        Line {
            name: name.to_owned(),
            points,
            baseline: true,
        }
    }
}

pub struct Chart {
    pub title: String,
    /// A small line under the plot: the machine, the load, the command.
    pub note: String,
    pub x: Axis,
    pub y: Axis,
    pub legend: Legend,
    pub lines: Vec<Line>,
}

/// Registers DejaVu Sans as plotters' sans-serif, once; the error names the package.
pub fn check_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT).map_err(|e| {
                format!("the charts need the font {FONT} ({e}): apt-get install fonts-dejavu-core")
            })?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT} is not a TrueType font the charts can read"))
        })
        .clone()
}

/// Where the PNGs go: VOLBRIDGE_BENCH_PLOT_DIR, else `docs/bench` of this checkout.
pub fn dir() -> PathBuf {
    std::env::var_os("VOLBRIDGE_BENCH_PLOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/bench"))
}

/// Draws `chart` into `<dir()>/<file>` and returns the path written.
pub fn draw(file: &str, chart: &Chart) -> Result<PathBuf, String> {
    check_font()?;
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(file);
    render(&path, chart).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn render(path: &std::path::Path, c: &Chart) -> Result<(), Box<dyn std::error::Error>> {
    let values = |f: fn(&(f64, f64)) -> f64| -> Vec<f64> {
        c.lines
            .iter()
            .flat_map(|l| l.points.iter().map(f))
            .filter(|v| v.is_finite())
            .collect()
    };
    let x = Scale::new(&c.x, &values(|p| p.0));
    let y = Scale::new(&c.y, &values(|p| p.1));

    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot_area, note_area) = root.split_vertically(HEIGHT - 28);
    note_area.draw(&Text::new(
        c.note.clone(),
        (20, 4),
        ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(&c.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(78)
        .build_cartesian_2d(x, y)?;
    let tick = |v: &f64| number(*v);
    chart
        .configure_mesh()
        .x_desc(c.x.label.as_str())
        .y_desc(c.y.label.as_str())
        .axis_desc_style(("sans-serif", 17))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .bold_line_style(RGBColor(0, 0, 0).mix(0.18))
        .light_line_style(RGBColor(0, 0, 0).mix(0.06))
        .draw()?;

    for (i, line) in c.lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = color.stroke_width(2);
        let points: Vec<(f64, f64)> = line
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let markers = points.len() <= MARKERS_UP_TO;
        if line.baseline {
            chart
                .draw_series(DashedLineSeries::new(points.clone(), 9, 6, style))?
                .label(line.name.as_str())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (8, 0)], style)
                        + PathElement::new(vec![(14, 0), (22, 0)], style)
                        + Circle::new((11, 0), if markers { 3 } else { 0 }, color.filled())
                });
        } else {
            chart
                .draw_series(LineSeries::new(points.clone(), style))?
                .label(line.name.as_str())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (22, 0)], style)
                        + Circle::new((11, 0), if markers { 3 } else { 0 }, color.filled())
                });
        }
        if markers {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(c.legend.clone())
        .margin(12)
        .legend_area_size(30)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(0, 0, 0).mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Tick labels: no float noise, thousands grouped.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".to_owned();
    }
    if a >= 1000.0 {
        let digits = format!("{:.0}", a);
        let mut out = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        return if v < 0.0 { format!("-{out}") } else { out };
    }
    let decimals = if a >= 100.0 {
        0
    } else {
        (2 - a.log10().floor() as i32).max(0) as usize
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// One axis as plotters sees it: linear or log over `lo..hi`, with our own ticks (bold
/// grid) and minor ticks (light grid).
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<f64>,
    minor: Vec<f64>,
}

impl Scale {
    fn new(axis: &Axis, data: &[f64]) -> Scale {
        let log = axis.log;
        let data: Vec<f64> = data.iter().copied().filter(|v| !log || *v > 0.0).collect();
        let min = data.iter().copied().fold(f64::INFINITY, f64::min);
        let max = data.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (min, max) = if min.is_finite() {
            (min, max)
        } else {
            (1.0, 10.0)
        };
        let (lo, hi) = match (axis.range, log) {
            (Some(r), _) => r,
            (None, true) => {
                let (lo, hi) = (min / 1.4, max * 1.4);
                if hi / lo < 3.0 {
                    (lo / 2.0, hi * 2.0)
                } else {
                    (lo, hi)
                }
            }
            (None, false) => {
                let lo = if min >= 0.0 { 0.0 } else { min * 1.08 };
                let top = if max > lo { max * 1.08 } else { lo + 1.0 };
                let step = linear_step(lo, top);
                (lo, (top / step).ceil() * step)
            }
        };
        let (ticks, minor) = if log {
            log_ticks(lo, hi)
        } else {
            let step = linear_step(lo, hi);
            let mut t = Vec::new();
            let mut m = Vec::new();
            let mut v = (lo / step).ceil() * step;
            while v <= hi + step * 1e-9 {
                t.push(v);
                if v + step / 2.0 <= hi {
                    m.push(v + step / 2.0);
                }
                v += step;
            }
            (t, m)
        };
        let ticks = match &axis.ticks {
            Some(t) => t.iter().copied().filter(|v| *v >= lo && *v <= hi).collect(),
            None => ticks,
        };
        Scale {
            lo,
            hi,
            log,
            ticks,
            minor,
        }
    }

    fn pos(&self, v: f64) -> f64 {
        if self.log {
            v.max(self.lo * 1e-3).ln()
        } else {
            v
        }
    }
}

/// A 1-2-5 step giving about six intervals over `lo..hi`.
fn linear_step(lo: f64, hi: f64) -> f64 {
    let raw = ((hi - lo) / 6.0).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// Ticks at 1, 2, 5 × 10^k (only 10^k over many decades); minor ticks at the others.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let decades = (hi / lo).log10();
    let (mut ticks, mut minor) = (Vec::new(), Vec::new());
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    for k in first..=last {
        let p = 10f64.powi(k);
        for m in 1..10 {
            let v = p * f64::from(m);
            if v < lo || v > hi {
                continue;
            }
            if m == 1 || (decades <= 4.0 && (m == 2 || m == 5)) {
                ticks.push(v);
            } else {
                minor.push(v);
            }
        }
    }
    (ticks, minor)
}

impl Ranged for Scale {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (self.pos(self.lo), self.pos(self.hi));
        let t = (self.pos(*value) - a) / (b - a);
        limit.0 + (f64::from(limit.1 - limit.0) * t).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}
