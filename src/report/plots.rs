//! The report's charts, drawn with plotters' SVG backend into strings: line charts (curves,
//! calibration, gains) and bar charts (importance, histograms, lift). Every chart has a fixed
//! size and a white background, and names its axes.

use plotters::prelude::*;

/// Colours of the series, in order (the first version, the second, baselines).
pub const PALETTE: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

const SIZE: (u32, u32) = (520, 380);

/// A chart that could not be drawn (plotters' error, as text).
#[derive(Debug, thiserror::Error)]
#[error("drawing {chart}: {reason}")]
pub struct PlotError {
    pub chart: String,
    pub reason: String,
}

fn err<E: std::fmt::Debug>(chart: &str) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError {
        chart: chart.to_string(),
        reason: format!("{e:?}"),
    }
}

/// One line of a line chart.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub colour: RGBColor,
    /// Marks each point too (for few, binned points).
    pub dots: bool,
}

/// A line chart: lines, single marked points, optionally the diagonal y = x.
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub x: (f64, f64),
    pub y: (f64, f64),
    pub lines: Vec<Line>,
    /// Named single points (a rule's operating point).
    pub marks: Vec<(String, (f64, f64), RGBColor)>,
    pub diagonal: bool,
}

/// A range that is never empty, so plotters always has an axis to draw.
fn span((lo, hi): (f64, f64)) -> std::ops::Range<f64> {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    if hi > lo {
        lo..hi
    } else {
        lo..lo + 1.0
    }
}

pub fn line_chart(c: &LineChart) -> Result<String, PlotError> {
    let e = err(c.title);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let (xr, yr) = (span(c.x), span(c.y));
        let mut chart = ChartBuilder::on(&root)
            .caption(c.title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(xr.clone(), yr.clone())
            .map_err(&e)?;
        chart
            .configure_mesh()
            .max_light_lines(1)
            .x_desc(c.x_desc)
            .y_desc(c.y_desc)
            .draw()
            .map_err(&e)?;
        if c.diagonal {
            let (lo, hi) = (xr.start.max(yr.start), xr.end.min(yr.end));
            chart
                .draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.35)))
                .map_err(&e)?
                .label("y = x")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.35)));
        }
        for l in &c.lines {
            let colour = l.colour;
            chart
                .draw_series(LineSeries::new(
                    l.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(&e)?
                .label(&l.name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            if l.dots {
                chart
                    .draw_series(l.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(&e)?;
            }
        }
        for (name, p, colour) in &c.marks {
            let colour = *colour;
            chart
                .draw_series(std::iter::once(Circle::new(*p, 6, colour.filled())))
                .map_err(&e)?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 9, y), 5, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK.mix(0.3))
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

/// A bar chart over categories: each category has one bar per series, side by side.
pub struct BarChart<'a> {
    pub title: &'a str,
    pub value_desc: &'a str,
    pub categories: Vec<String>,
    /// (name, one value per category, colour).
    pub series: Vec<(String, Vec<f64>, RGBColor)>,
    /// Bars run left to right with the categories down the side (long names).
    pub horizontal: bool,
}

pub fn bar_chart(c: &BarChart) -> Result<String, PlotError> {
    let e = err(c.title);
    let n = c.categories.len().max(1);
    let top = c
        .series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let values = 0.0..(top * 1.08).max(1e-9);
    let slots = 0.0..n as f64;
    let height = if c.horizontal {
        (n as u32 * 18 + 90).max(SIZE.1)
    } else {
        SIZE.1
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0 + 40, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut b = ChartBuilder::on(&root);
        b.caption(c.title, ("sans-serif", 17)).margin(12);
        let mut chart = if c.horizontal {
            b.x_label_area_size(40).y_label_area_size(170);
            b.build_cartesian_2d(values, slots).map_err(&e)?
        } else {
            b.x_label_area_size(44).y_label_area_size(56);
            b.build_cartesian_2d(slots, values).map_err(&e)?
        };
        // A category's name under (or beside) the middle of its slot, nothing elsewhere.
        let labels = |v: &f64| {
            let i = v.floor() as usize;
            let middle = (v - v.floor() - 0.5).abs() < 1e-6;
            match c.categories.get(i) {
                Some(name) if middle => name.clone(),
                _ => String::new(),
            }
        };
        let mut mesh = chart.configure_mesh();
        mesh.max_light_lines(1);
        if c.horizontal {
            mesh.y_labels(n * 2 + 1)
                .y_label_formatter(&labels)
                .x_desc(c.value_desc);
        } else {
            mesh.x_labels(n * 2 + 1)
                .x_label_formatter(&labels)
                .y_desc(c.value_desc);
        }
        mesh.draw().map_err(&e)?;
        draw_bars(&mut chart, c).map_err(&e)?;
        legend(&mut chart).map_err(&e)?;
        root.present().map_err(&e)?;
    }
    Ok(svg)
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Category `i` spans slot [i, i + 1): its bars share the middle 80 %, one per series.
/// Horizontal charts list the first category at the top.
fn draw_bars(chart: &mut Chart, c: &BarChart) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let n = c.categories.len();
    let k = c.series.len().max(1) as f64;
    for (j, (name, vals, colour)) in c.series.iter().enumerate() {
        let colour = *colour;
        let rect = |i: usize, v: f64| {
            let slot = if c.horizontal { n - 1 - i } else { i } as f64;
            let lo = slot + 0.1 + 0.8 * j as f64 / k;
            let hi = slot + 0.1 + 0.8 * (j + 1) as f64 / k;
            let v = v.max(0.0);
            let corners = if c.horizontal {
                [(0.0, lo), (v, hi)]
            } else {
                [(lo, 0.0), (hi, v)]
            };
            Rectangle::new(corners, colour.filled())
        };
        chart
            .draw_series(vals.iter().enumerate().map(|(i, &v)| rect(i, v)))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK.mix(0.3))
        .background_style(WHITE.mix(0.9))
        .draw()
}

/// A forest plot: one row per estimate, its interval as a bar and its value as a dot, with
/// the line of no difference.
pub struct ForestPlot<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    /// (label, value, low, high).
    pub rows: Vec<(String, f64, f64, f64)>,
}

pub fn forest_plot(c: &ForestPlot) -> Result<String, PlotError> {
    let e = err(c.title);
    let n = c.rows.len().max(1);
    let ends = c
        .rows
        .iter()
        .flat_map(|r| [r.1, r.2, r.3])
        .filter(|v| v.is_finite())
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((ends.1 - ends.0) * 0.1).max(1e-6);
    let mut svg = String::new();
    {
        let height = (n as u32 * 40 + 110).max(200);
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(c.title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(170)
            .build_cartesian_2d(ends.0 - pad..ends.1 + pad, 0.0..n as f64)
            .map_err(&e)?;
        let labels = |v: &f64| {
            let i = v.floor() as usize;
            match c.rows.get(n.saturating_sub(1 + i)) {
                Some(r) if (v - v.floor() - 0.5).abs() < 1e-6 => r.0.clone(),
                _ => String::new(),
            }
        };
        chart
            .configure_mesh()
            .max_light_lines(1)
            .y_labels(n * 2 + 1)
            .y_label_formatter(&labels)
            .x_desc(c.x_desc)
            .draw()
            .map_err(&e)?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (0.0, n as f64)],
                BLACK.mix(0.5),
            ))
            .map_err(&e)?;
        let colour = PALETTE[0];
        for (i, (_, value, low, high)) in c.rows.iter().enumerate() {
            let y = (n - 1 - i) as f64 + 0.5;
            chart
                .draw_series(LineSeries::new(
                    [(*low, y), (*high, y)],
                    colour.stroke_width(3),
                ))
                .map_err(&e)?;
            chart
                .draw_series(std::iter::once(Circle::new(
                    (*value, y),
                    5,
                    colour.filled(),
                )))
                .map_err(&e)?;
        }
        root.present().map_err(&e)?;
    }
    Ok(svg)
}
