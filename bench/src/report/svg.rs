//! Hand-written SVG bar charts, as Linkerd's reports draw them: latency percentiles
//! per scenario at each fixed rate (log scale, since max is orders above p50), the
//! knee per scenario, and the proxies' CPU and memory.

use std::fmt::Write;

use super::Results;
use crate::plan::{Load, Workload};

/// One colour per scenario, in `ScenarioKind::ALL` order.
const COLOURS: [&str; 6] = [
    "#7f7f7f", "#2b8cbe", "#08519c", "#e6550d", "#a63603", "#31a354",
];

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// A chart's bars: one group per x label, one bar per series within a group.
struct Chart<'a> {
    title: String,
    unit: &'a str,
    groups: Vec<String>,
    /// Series name, colour, one value per group.
    series: Vec<(String, &'static str, Vec<Option<f64>>)>,
    log: bool,
}

/// Every chart of a run as (file name, SVG text).
pub fn charts(results: &Results) -> Vec<(String, String)> {
    let mut charts = Vec::new();
    let measured: Vec<_> = results
        .scenarios
        .iter()
        .filter(|s| s.skipped.is_none())
        .collect();
    let colour = |kind| {
        let index = crate::scenario::ScenarioKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        COLOURS[index % COLOURS.len()]
    };
    for workload in results.plan.workloads.iter().copied() {
        for load in results.plan.loads(workload) {
            if !matches!(load, Load::Rate(_)) {
                continue;
            }
            let chart = Chart {
                title: format!(
                    "{}, {} (latency from intended send time)",
                    workload.title(),
                    load.label()
                ),
                unit: "ms",
                groups: ["p50", "p90", "p99", "p99.9", "p99.99", "max"]
                    .map(String::from)
                    .to_vec(),
                series: measured
                    .iter()
                    .filter_map(|s| {
                        let p = s.cell(workload, load)?.summary.as_ref()?.pooled;
                        let values = [
                            p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.p9999_ms, p.max_ms,
                        ];
                        Some((
                            s.kind.name().to_string(),
                            colour(s.kind),
                            values.map(Some).to_vec(),
                        ))
                    })
                    .collect(),
                log: true,
            };
            charts.push((
                format!("latency-{}-{}.svg", workload.name(), load.slug()),
                chart.render(),
            ));
        }
    }
    let knee_workloads: Vec<Workload> = results
        .plan
        .workloads
        .iter()
        .copied()
        .filter(|w| results.plan.loads(*w).contains(&Load::Max) && *w != Workload::Bulk)
        .collect();
    let per_workload = |pick: &dyn Fn(&super::Summary) -> Option<f64>, workloads: &[Workload]| {
        measured
            .iter()
            .map(|s| {
                let values = workloads
                    .iter()
                    .map(|w| pick(s.cell(*w, Load::Max)?.summary.as_ref()?))
                    .collect();
                (s.kind.name().to_string(), colour(s.kind), values)
            })
            .collect()
    };
    let names = |workloads: &[Workload]| workloads.iter().map(|w| w.name().to_string()).collect();
    let knee = Chart {
        title: "Maximum throughput (closed loop)".into(),
        unit: "req/s",
        groups: names(&knee_workloads),
        series: per_workload(&|s| Some(s.rate.mean), &knee_workloads),
        log: false,
    };
    charts.push(("knee.svg".into(), knee.render()));
    let cpu = Chart {
        title: "Proxy CPU per request per hop at the knee".into(),
        unit: "µs",
        groups: names(&knee_workloads),
        series: per_workload(
            &|s| Some(s.cpu_us_per_request_per_hop?.mean),
            &knee_workloads,
        ),
        log: false,
    };
    charts.push(("cpu.svg".into(), cpu.render()));
    let memory = Chart {
        title: "Largest proxy's resident memory".into(),
        unit: "MB",
        groups: vec!["idle".into(), "peak under load".into()],
        series: measured
            .iter()
            .filter(|s| s.kind.hops() > 0)
            .map(|s| {
                let peak = s
                    .cells
                    .iter()
                    .filter_map(|c| c.summary.as_ref()?.peak_rss_mb)
                    .reduce(f64::max);
                (
                    s.kind.name().to_string(),
                    colour(s.kind),
                    vec![s.idle_rss_mb, peak],
                )
            })
            .collect(),
        log: false,
    };
    charts.push(("memory.svg".into(), memory.render()));
    charts
}

impl Chart<'_> {
    fn render(&self) -> String {
        let values: Vec<f64> = self
            .series
            .iter()
            .flat_map(|(_, _, v)| v.iter().flatten().copied())
            .filter(|v| v.is_finite() && (!self.log || *v > 0.0))
            .collect();
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="22" font-size="15">{}</text>"#,
            escape(&self.title)
        );
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let Some(scale) = Scale::new(&values, self.log) else {
            let _ = writeln!(
                svg,
                r#"<text x="{LEFT}" y="{}">no data</text></svg>"#,
                TOP + 20.0
            );
            return svg;
        };
        let y = |v: f64| TOP + plot_h * (1.0 - scale.fraction(v));
        for tick in scale.ticks() {
            let ty = y(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" x2="{}" y1="{ty:.1}" y2="{ty:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                ty + 4.0,
                format_tick(tick)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + plot_h / 2.0,
            escape(self.unit)
        );
        let group_w = plot_w / self.groups.len().max(1) as f64;
        let bar_w = (group_w * 0.8) / self.series.len().max(1) as f64;
        for (g, group) in self.groups.iter().enumerate() {
            let gx = LEFT + g as f64 * group_w;
            for (s, (name, colour, values)) in self.series.iter().enumerate() {
                let Some(value) = values.get(g).copied().flatten() else {
                    continue;
                };
                if !value.is_finite() || (self.log && value <= 0.0) {
                    continue;
                }
                let top = y(value);
                let _ = writeln!(
                    svg,
                    r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}: {} {}</title></rect>"#,
                    gx + group_w * 0.1 + s as f64 * bar_w,
                    bar_w.max(1.0) - 1.0,
                    (TOP + plot_h - top).max(0.5),
                    escape(name),
                    format_tick(value),
                    escape(self.unit)
                );
            }
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                gx + group_w / 2.0,
                TOP + plot_h + 18.0,
                escape(group)
            );
        }
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#333"/>"##,
            LEFT + plot_w,
            TOP + plot_h,
            TOP + plot_h
        );
        for (s, (name, colour, _)) in self.series.iter().enumerate() {
            let ly = TOP + 10.0 + s as f64 * 20.0;
            let lx = WIDTH - RIGHT + 16.0;
            let _ = writeln!(
                svg,
                r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{ly}">{}</text>"#,
                ly - 10.0,
                lx + 18.0,
                escape(name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// Maps values to the plot's height: linear from zero, or log between decades.
struct Scale {
    low: f64,
    high: f64,
    log: bool,
}

impl Scale {
    fn new(values: &[f64], log: bool) -> Option<Self> {
        let max = values.iter().copied().reduce(f64::max)?;
        let min = values.iter().copied().reduce(f64::min)?;
        if log {
            let low = 10f64.powf(min.log10().floor());
            let high = 10f64.powf(max.log10().ceil()).max(low * 10.0);
            Some(Scale { low, high, log })
        } else {
            let step = nice_step(max.max(1e-9) / 5.0);
            Some(Scale {
                low: 0.0,
                high: (max / step).ceil().max(1.0) * step,
                log,
            })
        }
    }

    fn fraction(&self, value: f64) -> f64 {
        let f = if self.log {
            (value.log10() - self.low.log10()) / (self.high.log10() - self.low.log10())
        } else {
            (value - self.low) / (self.high - self.low)
        };
        f.clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut ticks = vec![self.low];
            while let Some(&last) = ticks.last() {
                if last >= self.high * 0.999 {
                    break;
                }
                ticks.push(last * 10.0);
            }
            ticks
        } else {
            let step = nice_step(self.high / 5.0);
            (0..=((self.high / step).round() as usize))
                .map(|i| i as f64 * step)
                .collect()
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn format_tick(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_scale_spans_whole_decades_around_the_data() {
        let scale = Scale::new(&[0.08, 0.3, 12.0], true).expect("data");
        assert_eq!((scale.low, scale.high), (0.01, 100.0));
        assert_eq!(scale.ticks().len(), 5);
        assert!((scale.fraction(1.0) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_linear_scale_starts_at_zero_with_round_ticks() {
        let scale = Scale::new(&[3_700.0, 41_000.0], false).expect("data");
        assert_eq!(scale.low, 0.0);
        assert_eq!(scale.high, 50_000.0);
        assert_eq!(
            scale.ticks(),
            [0.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0, 50_000.0]
        );
    }

    #[test]
    fn a_chart_without_data_says_so_instead_of_dividing_by_zero() {
        let chart = Chart {
            title: "t".into(),
            unit: "ms",
            groups: vec!["p50".into()],
            series: vec![],
            log: true,
        };
        let svg = chart.render();
        assert!(
            svg.contains("no data") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }
}
