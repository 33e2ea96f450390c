//! SVG charts of `scripts/bench.sh`'s JSON reports, for BENCHMARKS.md: deliveries per second
//! against the publish rate with the ceiling beside Herald, latency percentiles, memory per
//! connection and the many-rooms steps. Each chart is drawn from whatever runs of its workload
//! are in the results directory (`<name>-<run>.json`).

use std::path::Path;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

/// What a chart reads of a report (the fields `report::RunReport` writes).
#[derive(Deserialize)]
struct Run {
    target: String,
    rss_kib_per_connection: Option<f64>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    rate: u64,
    deliveries_per_sec: f64,
    latency_us: Latency,
}

#[derive(Deserialize)]
struct Latency {
    p50: u64,
    p99: u64,
}

const HERALD: RGBColor = RGBColor(0x1f, 0x6f, 0xb4);
const CEILING: RGBColor = RGBColor(0x88, 0x88, 0x88);
const SECOND: RGBColor = RGBColor(0xd9, 0x6c, 0x1e);
const CEILING_SECOND: RGBColor = RGBColor(0xc8, 0xa8, 0x88);
const SIZE: (u32, u32) = (720, 420);

/// One line of a chart: a name for the legend, a colour, a dash for the second of a pair, and
/// one run's points.
struct Series {
    name: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// Draws every chart whose reports are in `results` into `out` (each run of a workload is a line
/// of its own, so the spread between runs shows).
pub fn draw_all(results: &Path, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for via in ["redis", "http"] {
        let runs = load(results, &format!("fanout-{via}"))?;
        if runs.is_empty() {
            continue;
        }
        let title = format!("1,000 clients in one group, published via {via}");
        let mut deliveries = series(&runs, "", |step| step.deliveries_per_sec / 1e6, false);
        if via == "redis" {
            let timer = load(results, "fanout-timer")?;
            deliveries.extend(series(
                &timer,
                "from its own timer",
                |step| step.deliveries_per_sec / 1e6,
                true,
            ));
        }
        line_chart(
            &out.join(format!("fanout-{via}.svg")),
            &title,
            "deliveries/s (millions)",
            deliveries,
            None,
        )?;
        let mut latency = series(&runs, "p99", |step| step.latency_us.p99 as f64 / 1000.0, false);
        latency.extend(series(&runs, "p50", |step| step.latency_us.p50 as f64 / 1000.0, true));
        line_chart(
            &out.join(format!("latency-{via}.svg")),
            &title,
            "publish to receive (ms)",
            latency,
            None,
        )?;
    }
    let mut rooms = Vec::new();
    let modes = [
        ("batch", "Herald, batches of 100", HERALD),
        ("single", "Herald, one message a POST", SECOND),
        ("ceiling", "ceiling, batches of 100", CEILING),
        ("ceiling-single", "ceiling, one message a POST", CEILING_SECOND),
    ];
    for (file, name, color) in modes {
        for (_, run) in load(results, &format!("many-rooms-{file}"))? {
            let points =
                run.steps.iter().map(|s| (s.rate as f64, s.latency_us.p99 as f64 / 1000.0)).collect();
            rooms.push(Series { name: name.into(), color, dashed: false, points });
        }
    }
    if !rooms.is_empty() {
        let title = "10,000 groups of 5 over 2 gateways: p99 by publish rate";
        line_chart(&out.join("many-rooms.svg"), title, "p99 (ms)", rooms, Some(100.0))?;
    }
    let memory = load(results, "memory")?;
    if !memory.is_empty() {
        memory_chart(&out.join("memory.svg"), &memory)?;
    }
    Ok(())
}

/// The runs in `<results>/<name>-<n>.json`, each with its run number, in order.
fn load(results: &Path, name: &str) -> anyhow::Result<Vec<(u32, Run)>> {
    let mut runs = Vec::new();
    for n in 1.. {
        let path = results.join(format!("{name}-{n}.json"));
        if !path.exists() {
            break;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let reports: Vec<Run> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        runs.extend(reports.into_iter().map(|run| (n, run)));
    }
    Ok(runs)
}

/// One series per run and target, `y` of each step against its rate, named by target and
/// `what`.
fn series(runs: &[(u32, Run)], what: &str, y: impl Fn(&Step) -> f64, dashed: bool) -> Vec<Series> {
    runs.iter()
        .map(|(_, run)| Series {
            name: format!("{} {what}", label(&run.target)).trim_end().to_string(),
            color: if run.target == "herald" { HERALD } else { CEILING },
            dashed,
            points: run.steps.iter().map(|step| (step.rate as f64, y(step))).collect(),
        })
        .collect()
}

fn label(target: &str) -> &str {
    if target == "baseline" { "ceiling" } else { "Herald" }
}

fn canvas(path: &Path) -> DrawingArea<SVGBackend<'_>, Shift> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).ok();
    root
}

/// Lines of `y` against the publish rate, one per series; `limit` draws a horizontal target.
fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    lines: Vec<Series>,
    limit: Option<f64>,
) -> anyhow::Result<()> {
    let points = || lines.iter().flat_map(|s| s.points.iter().copied());
    let x_max = points().map(|(x, _)| x).fold(1.0, f64::max);
    // With a target, far-off points are cut at four times it so the target stays readable.
    let y_max = points().map(|(_, y)| y).chain(limit).fold(0.0, f64::max) * 1.1;
    let y_max = limit.map_or(y_max, |limit| y_max.min(limit * 4.0));
    let root = canvas(path);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max.max(1e-9))?;
    chart
        .configure_mesh()
        .x_desc("published messages/s")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(WHITE)
        .draw()?;
    let mut named = Vec::new();
    for line in &lines {
        chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 3, line.color.filled())))?;
        let style = ShapeStyle::from(line.color).stroke_width(2);
        let drawn = if line.dashed {
            chart.draw_series(DashedLineSeries::new(line.points.iter().copied(), 6, 4, style))?
        } else {
            chart.draw_series(LineSeries::new(line.points.iter().copied(), style))?
        };
        // One legend entry per name and style.
        if !named.contains(&(line.name.clone(), line.dashed)) {
            named.push((line.name.clone(), line.dashed));
            let color = line.color;
            drawn
                .label(line.name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        }
    }
    if let Some(limit) = limit {
        let style = ShapeStyle::from(RED).stroke_width(1);
        chart
            .draw_series(LineSeries::new([(0.0, limit), (x_max * 1.05, limit)], style))?
            .label(format!("target {limit}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Bars of the memory each of Herald's connections added, per run, with the 6 KiB target.
fn memory_chart(path: &Path, runs: &[(u32, Run)]) -> anyhow::Result<()> {
    const TARGET: f64 = 6.0;
    let bars: Vec<(u32, f64)> = runs
        .iter()
        .filter(|(_, run)| run.target == "herald")
        .filter_map(|(n, run)| Some((*n, run.rss_kib_per_connection?)))
        .collect();
    let runs_max = bars.iter().map(|(n, _)| *n).max().unwrap_or(1);
    let y_max = bars.iter().map(|(_, kib)| *kib).fold(TARGET, f64::max) * 1.2;
    let root = canvas(path);
    let mut chart = ChartBuilder::on(&root)
        .caption("Memory per idle subscribed connection, 15,000 connections", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.5..runs_max as f64 + 0.5, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("run")
        .y_desc("KiB per connection")
        .x_labels(runs_max as usize)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(WHITE)
        .draw()?;
    chart
        .draw_series(bars.iter().map(|&(n, kib)| {
            Rectangle::new([(n as f64 - 0.2, 0.0), (n as f64 + 0.2, kib)], HERALD.filled())
        }))?
        .label("Herald")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], HERALD.filled()));
    chart
        .draw_series(LineSeries::new([(0.5, TARGET), (runs_max as f64 + 0.5, TARGET)], RED))?
        .label("target 6 KiB")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
