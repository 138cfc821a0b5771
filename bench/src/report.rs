//! The report: one Markdown table of every path measured (medians, p99 and ratios to Skiff's Wasm
//! path), density, failover and allocator figures, and PNG plots (latency CDFs, throughput bars).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::density::Point;
use crate::stats::{Summary, mib, ms, thousands};
use crate::{allocator, failover};

/// One way of running trivial tasks, measured.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub how: String,
    /// Submit → running as the submitter saw it (`None`: the peer does not show it).
    pub to_running: Option<Summary>,
    pub to_finished: Summary,
    /// Tasks and seconds of the throughput run.
    pub throughput: Option<(usize, f64)>,
    /// CPU time per task of the throughput run: (coordinator, agents).
    pub cpu_per_task: Option<(Duration, Duration)>,
}

impl Row {
    pub fn per_sec(&self) -> Option<f64> {
        self.throughput.map(|(n, secs)| n as f64 / secs)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub machine: String,
    pub command: String,
    pub rows: Vec<Row>,
    /// Index in `rows` of the path the others are compared to.
    pub baseline: Option<usize>,
    /// Peers that could not run, and why.
    pub skipped: Vec<(String, String)>,
    pub density: Vec<Point>,
    pub density_error: Option<String>,
    pub failover: Option<failover::Figures>,
    pub allocator: Option<allocator::Figures>,
    pub took: Duration,
}

fn ratio(x: f64, base: f64) -> String {
    if base <= 0.0 { "–".into() } else { format!("{:.2}×", x / base) }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Measured on {} by `{}` in {:.0?}.\n", self.machine, self.command, self.took);
        let base = self.baseline.map(|i| &self.rows[i]);
        let _ = writeln!(
            out,
            "| path | tasks | submit → running p50 / p99 (ms) | submit → finished p50 / p99 (ms) | latency vs {} | throughput (tasks/s) | throughput vs {} | CPU per task: coordinator + agents with executors (µs) |",
            base.map_or("–", |b| b.name.as_str()),
            base.map_or("–", |b| b.name.as_str()),
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for row in &self.rows {
            let running =
                row.to_running.as_ref().map_or("–".into(), |s| format!("{} / {}", ms(s.p50()), ms(s.p99())));
            let finished = format!("{} / {}", ms(row.to_finished.p50()), ms(row.to_finished.p99()));
            let vs_latency = base.map_or("–".into(), |b| {
                ratio(row.to_finished.p50().as_secs_f64(), b.to_finished.p50().as_secs_f64())
            });
            let tput = row.per_sec().map_or("–".into(), |t| {
                format!(
                    "{} ({} in {:.2} s)",
                    thousands(t as u64),
                    thousands(row.throughput.unwrap_or_default().0 as u64),
                    row.throughput.unwrap_or_default().1
                )
            });
            let vs_tput = match (row.per_sec(), base.and_then(Row::per_sec)) {
                (Some(t), Some(b)) => ratio(t, b),
                _ => "–".into(),
            };
            let cpu = row.cpu_per_task.map_or("–".into(), |(c, a)| format!("{} + {}", c.as_micros(), a.as_micros()));
            let _ = writeln!(
                out,
                "| {} | {} | {running} | {finished} | {vs_latency} | {tput} | {vs_tput} | {cpu} |",
                row.name,
                thousands(row.to_finished.len() as u64)
            );
        }
        let _ = writeln!(
            out,
            "\nLatency ratios: the path's submit → finished p50 over the baseline's (above 1: slower). Throughput ratios: tasks/s over the baseline's (below 1: fewer).\n"
        );
        for row in &self.rows {
            let _ = writeln!(out, "- **{}**: {}", row.name, row.how);
        }
        if let Some(goals) = self.goals() {
            let _ = writeln!(out, "\nGoals: {goals}.");
        }
        for (name, why) in &self.skipped {
            let _ = writeln!(out, "- **{name}**: not measured: {why}");
        }
        if !self.density.is_empty() || self.density_error.is_some() {
            let _ = writeln!(
                out,
                "\nDensity: the memory of the agent's processes (agent and executor) with idle Wasm tasks (each parked in a WASI host call). \
                 RSS is the sum of their resident sets, which counts the pages of the binary both map twice; PSS splits a page shared by n processes n ways (`Pss` of /proc/PID/smaps_rollup; shared libraries' pages are split with every other process that maps them too).\n"
            );
            let _ = writeln!(
                out,
                "| idle tasks | agent RSS (MiB) | agent PSS (MiB) | RSS per task over 0 (KiB) |\n|---:|---:|---:|---:|"
            );
            let zero = self.density.iter().find(|p| p.tasks == 0).map(|p| p.memory.rss_bytes);
            for p in &self.density {
                let per = match zero {
                    Some(z) if p.tasks > 0 => {
                        format!("{:.1}", p.memory.rss_bytes.saturating_sub(z) as f64 / p.tasks as f64 / 1024.0)
                    }
                    _ => "–".into(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {:.1} | {:.1} | {per} |",
                    thousands(p.tasks as u64),
                    mib(p.memory.rss_bytes),
                    mib(p.memory.pss_bytes)
                );
            }
            if let Some(err) = &self.density_error {
                let _ = writeln!(out, "\nDensity stopped: {err}");
            }
        }
        if let Some(f) = &self.failover {
            let fo = Summary::new(f.failovers.clone());
            let lease = Summary::new(f.lease_expiry.clone());
            let _ = writeln!(
                out,
                "\nFailover (1 etcd member, 3 coordinators, lease TTL 2 s; leader SIGKILLed → a task finished on the new leader): {} kills, p50 {} ms, p99 {} ms; etcd's own expiry of a 2 s lease p50 {} ms (failover p99 / lease p50 = {:.2}×).",
                fo.len(),
                ms(fo.p50()),
                ms(fo.p99()),
                ms(lease.p50()),
                fo.p99().as_secs_f64() / lease.p50().as_secs_f64().max(1e-9)
            );
        }
        if let Some(a) = &self.allocator {
            let _ = writeln!(
                out,
                "\nAllocator in process: one DRF cycle over {} agents × {} frameworks in {} roles: p50 {} ms, max {} ms; first-fit placement loop {} tasks/s; built-in job scheduler {} placements/s.",
                thousands(a.agents as u64),
                thousands(a.frameworks as u64),
                a.roles,
                ms(a.cycles.p50()),
                ms(a.cycles.max()),
                thousands(a.placement_loop_per_sec as u64),
                thousands(a.job_scheduler_per_sec as u64)
            );
        }
        out
    }

    /// The figures the goals are about, each with its goal and whether this run met it.
    fn goals(&self) -> Option<String> {
        let mark = |met: bool| if met { "met" } else { "missed" };
        let mut parts = Vec::new();
        if let Some(b) = self.baseline.map(|i| &self.rows[i]) {
            if let Some(running) = &b.to_running {
                let (p50, p99) = (running.p50(), running.p99());
                parts.push(format!(
                    "{} submit → running p50 {} ms (≤ 5 ms: {}), p99 {} ms (≤ 25 ms: {})",
                    b.name,
                    ms(p50),
                    mark(p50 <= Duration::from_millis(5)),
                    ms(p99),
                    mark(p99 <= Duration::from_millis(25))
                ));
            }
            if let Some(t) = b.per_sec() {
                parts.push(format!("throughput {} tasks/s (≥ 5,000: {})", thousands(t as u64), mark(t >= 5000.0)));
            }
        }
        let zero = self.density.iter().find(|p| p.tasks == 0).map(|p| p.memory);
        if let (Some(z), Some(most)) = (zero, self.density.iter().max_by_key(|p| p.tasks).filter(|p| p.tasks > 0)) {
            let per = most.memory.rss_bytes.saturating_sub(z.rss_bytes) as f64 / most.tasks as f64 / 1024.0;
            parts.push(format!(
                "{per:.1} KiB per idle task at {} (≤ 64 KiB: {})",
                thousands(most.tasks as u64),
                mark(per <= 64.0)
            ));
            let (pss, rss) = (mib(z.pss_bytes), mib(z.rss_bytes));
            parts.push(format!(
                "idle agent {pss:.1} MiB PSS, {rss:.1} MiB RSS summed (≤ 20 MiB: {})",
                mark(pss <= 20.0)
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Writes `report.md`, `latency.png` and `throughput.png` into `dir`.
    pub fn write(&self, dir: &Path, font: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(dir.join("report.md"), self.markdown()).context("write report.md")?;
        let bytes = std::fs::read(font)
            .with_context(|| format!("font {} (apt-get install fonts-dejavu-core, or pass --font)", font.display()))?;
        plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
            .map_err(|_| anyhow::anyhow!("{} is not a font plotters can read", font.display()))?;
        self.latency_plot(&dir.join("latency.png")).context("draw latency.png")?;
        self.throughput_plot(&dir.join("throughput.png")).context("draw throughput.png")?;
        Ok(())
    }

    fn latency_plot(&self, path: &Path) -> Result<()> {
        let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let all: Vec<f64> =
            self.rows.iter().flat_map(|r| r.to_finished.sorted.iter()).map(|d| d.as_secs_f64() * 1e3).collect();
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.01) / 1.5;
        let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0) * 1.5;
        let mut chart = ChartBuilder::on(&root)
            .caption("Trivial task, submit → finished (CDF)", ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)?;
        chart
            .configure_mesh()
            .x_desc("milliseconds (log scale)")
            .y_desc("% of tasks")
            .x_labels(16)
            .x_label_formatter(&|v| if *v < 1.0 { format!("{v:.2}") } else { format!("{v:.0}") })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 15))
            .draw()?;
        for (i, row) in self.rows.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba().stroke_width(2);
            let n = row.to_finished.len() as f64;
            let points = row
                .to_finished
                .sorted
                .iter()
                .enumerate()
                .map(|(k, d)| (d.as_secs_f64() * 1e3, (k + 1) as f64 * 100.0 / n));
            chart
                .draw_series(LineSeries::new(points, color))?
                .label(row.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        root.present()?;
        Ok(())
    }

    fn throughput_plot(&self, path: &Path) -> Result<()> {
        let bars: Vec<(String, f64)> = self.rows.iter().filter_map(|r| Some((r.name.clone(), r.per_sec()?))).collect();
        let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let hi = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 2.0;
        let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption("Trivial tasks completed per second", ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0.0..bars.len() as f64, (1.0..hi).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 && i < names.len() { names[i].clone() } else { String::new() }
            })
            .y_desc("tasks/s (log scale)")
            .y_label_formatter(&|v| thousands(*v as u64))
            .label_style(("sans-serif", 15))
            .draw()?;
        for (i, (_, v)) in bars.iter().enumerate() {
            let color = Palette99::pick(i).filled();
            chart
                .draw_series(std::iter::once(Rectangle::new([(i as f64 + 0.15, 1.0), (i as f64 + 0.85, *v)], color)))?;
            chart.draw_series(std::iter::once(Text::new(
                thousands(*v as u64),
                (i as f64 + 0.35, *v * 1.15),
                ("sans-serif", 16),
            )))?;
        }
        root.present()?;
        Ok(())
    }
}
