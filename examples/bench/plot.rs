//! docs/bench.svg, drawn with `plotters` (SVG backend, text left to the viewer's fonts): the
//! cumulative distribution of acquire latency per protocol for each client count and hold
//! time, then of the expiry handoff delay, on log-scale x axes, with one legend for all.

use std::error::Error;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::protocols::{Proto, PROTOS};
use crate::stats::Dist;
use crate::workloads::contended::{Contended, REAL_PYTHON};
use crate::{CLIENT_COUNTS, HOLDS_MS};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const SIZE: (u32, u32) = (810, 940);
/// Points per curve, at evenly spaced quantiles.
const CDF_STEPS: usize = 400;
const FONT: &str = "sans-serif";
/// The real library's curves: dashed, in purple.
const REAL_PYTHON_COLOR: RGBColor = RGBColor(0x94, 0x67, 0xbd);

/// plotters writes a font size of `size / 1.24` into the SVG: this gives `px` there.
fn font(px: f64) -> FontDesc<'static> {
    (FONT, px * 1.24).into_font()
}

fn color(proto: Proto) -> RGBColor {
    match proto {
        Proto::Rlock => RGBColor(0xd6, 0x27, 0x28),
        Proto::PyLock => RGBColor(0x1f, 0x77, 0xb4),
        Proto::RedisPy => RGBColor(0x2c, 0xa0, 0x2c),
        Proto::Floor | Proto::FloorOnLockKeys => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

/// One curve of a panel.
struct Series<'a> {
    color: RGBColor,
    dashed: bool,
    dist: &'a Dist,
}

/// A log-scale x axis from `lo` to `hi`, in `unit` ("µs" or "ms").
struct Axis {
    unit: &'static str,
    lo: f64,
    hi: f64,
}

const LATENCY_AXIS: Axis = Axis {
    unit: "µs",
    lo: 10.0,
    hi: 1e6,
};
const EXPIRY_AXIS: Axis = Axis {
    unit: "ms",
    lo: 0.1,
    hi: 1e4,
};

impl Axis {
    /// The powers of ten from `lo` to `hi`.
    fn decades(&self) -> Vec<f64> {
        let n = (self.hi / self.lo).log10().round() as i32;
        (0..=n).map(|k| self.lo * 10f64.powi(k)).collect()
    }

    /// A tick label: "10µs", "1ms", "1s".
    fn label(&self, v: f64) -> String {
        let us = if self.unit == "ms" { v * 1000.0 } else { v };
        let short = |x: f64| format!("{}", (x * 1000.0).round() / 1000.0);
        if us >= 1e6 {
            format!("{}s", short(us / 1e6))
        } else if us >= 1000.0 {
            format!("{}ms", short(us / 1000.0))
        } else {
            format!("{}µs", short(us))
        }
    }
}

/// One panel: the CDF of each series, x clamped to the axis.
fn panel(area: &Area, title: &str, axis: &Axis, series: &[Series]) -> Result<(), Box<dyn Error>> {
    let x = (axis.lo..axis.hi)
        .log_scale()
        .with_key_points(axis.decades());
    let mut chart = ChartBuilder::on(area)
        .caption(title, font(13.0).style(FontStyle::Bold))
        .margin(6)
        .margin_right(24)
        .x_label_area_size(18)
        .y_label_area_size(34)
        .build_cartesian_2d(x, 0.0..1.0)?;
    chart
        .configure_mesh()
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .max_light_lines(0)
        .axis_style(RGBColor(0x99, 0x99, 0x99))
        .label_style(font(10.0))
        .x_label_formatter(&|v| axis.label(*v))
        .y_labels(11)
        .y_label_formatter(&|q| format!("{q:.1}"))
        .draw()?;
    for s in series {
        let points = s
            .dist
            .cdf(CDF_STEPS)
            .into_iter()
            .map(|(v, q)| (v.clamp(axis.lo, axis.hi), q));
        let style = s.color.stroke_width(2);
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(points, 5, 3, style))?;
        } else {
            chart.draw_series(LineSeries::new(points, style))?;
        }
    }
    Ok(())
}

/// The legend, in the panel left free beside the expiry panel.
fn legend(area: &Area) -> Result<(), Box<dyn Error>> {
    let entries = PROTOS
        .iter()
        .map(|p| (p.label(), color(*p), false))
        .chain([(REAL_PYTHON, REAL_PYTHON_COLOR, true)]);
    let mut y = 40;
    for (label, c, dashed) in entries {
        let style = c.stroke_width(2);
        if dashed {
            for x in [30, 42, 54] {
                area.draw(&PathElement::new([(x, y), (x + 7, y)], style))?;
            }
        } else {
            area.draw(&PathElement::new([(30, y), (60, y)], style))?;
        }
        let text = font(12.0)
            .into_text_style(area)
            .pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(label, (68, y), text))?;
        y += 20;
    }
    let note = font(11.0).color(&RGBColor(0x55, 0x55, 0x55));
    area.draw(&Text::new(
        "y: fraction of acquisitions at or below x",
        (30, y),
        note,
    ))?;
    Ok(())
}

/// Two columns: one row of panels per client count (hold 0 ms, hold 1 ms), then the expiry
/// handoff panel and the legend.
pub fn write_svg(
    path: &Path,
    contended: &[Contended],
    expiry: &[(Proto, Dist)],
) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "rlock benchmark: cumulative distribution of acquire latency (x: log scale)",
        font(15.0).style(FontStyle::Bold),
    )?;
    let panels = root.split_evenly((CLIENT_COUNTS.len() + 1, HOLDS_MS.len()));
    let cells = CLIENT_COUNTS
        .iter()
        .flat_map(|c| HOLDS_MS.iter().map(move |h| (*c, *h)));
    for ((clients, hold), area) in cells.zip(&panels) {
        let series: Vec<Series> = contended
            .iter()
            .filter(|c| c.clients == clients && c.hold_ms == hold)
            .map(|c| {
                let proto = PROTOS.iter().find(|p| p.label() == c.who);
                Series {
                    color: proto.map_or(REAL_PYTHON_COLOR, |p| color(*p)),
                    dashed: proto.is_none(),
                    dist: &c.lat,
                }
            })
            .collect();
        let plural = if clients == 1 { "" } else { "s" };
        let title = format!("{clients} client{plural}, hold {hold} ms");
        panel(area, &title, &LATENCY_AXIS, &series)?;
    }
    let series: Vec<Series> = expiry
        .iter()
        .map(|(p, d)| Series {
            color: color(*p),
            dashed: false,
            dist: d,
        })
        .collect();
    let last = CLIENT_COUNTS.len() * HOLDS_MS.len();
    let title = "Expiry handoff: lease end to the waiter holding it";
    panel(&panels[last], title, &EXPIRY_AXIS, &series)?;
    legend(&panels[last + 1])?;
    root.present()?;
    Ok(())
}
