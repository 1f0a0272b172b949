//! W2's scaling series (`nnc-bench --scaling`): the wide MLP's share of
//! the matrix-multiply ceiling across hidden widths (512 to 4096 at batch
//! 512) and batch sizes (32 to 2048 at width 2048), written as CSV and
//! markdown and drawn as an SVG plot (docs/performance.md embeds it).
//!
//! Every point is a fresh child process (`--child scaling --width W
//! --batch B`), like every cell of the table; the ceiling is measured in
//! the same run, rounds outermost, and each point's share is its median
//! over the rounds against the ceiling's median.

use crate::ceiling::{run_ceiling_child, CEILING};
use crate::table::{flops_per_sample_of, machine, Row};
use crate::workloads::wide_mlp;
use crate::{child_output, repo, strategy_arg, Args};
use anyhow::Context;
use plotters::prelude::*;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Hidden widths of the width series, at [`WIDTH_SERIES_BATCH`].
pub const WIDTHS: [usize; 4] = [512, 1024, 2048, 4096];
/// Batch sizes of the batch series, at [`BATCH_SERIES_WIDTH`].
pub const BATCHES: [usize; 7] = [32, 64, 128, 256, 512, 1024, 2048];
/// The batch of the width series (W2's own).
pub const WIDTH_SERIES_BATCH: usize = 512;
/// The width of the batch series (W2's own).
pub const BATCH_SERIES_WIDTH: usize = 2048;

/// One point of the series and its measurements.
pub struct Point {
    /// Hidden width.
    pub width: usize,
    /// Batch size.
    pub batch: usize,
    /// Samples/s per thread count (one per round), and the run's notes.
    pub row: Row,
    /// FLOPs of a training step per sample.
    pub flops_per_sample: f64,
}

impl Point {
    /// Percent of the ceiling `gflops` at `threads`, if measured.
    pub fn share(&self, threads: usize, gflops: Option<f64>) -> Option<f64> {
        let s = self.row.samples_at(threads)?;
        Some(100.0 * s * self.flops_per_sample / (gflops? * 1e9))
    }
}

/// The points: every width at batch 512, every batch at width 2048 (the
/// point both series share is measured once). `--quick` takes the two
/// smallest of each.
fn points(quick: bool) -> Vec<(usize, usize)> {
    let take = if quick { 2 } else { usize::MAX };
    let mut p: Vec<(usize, usize)> = WIDTHS
        .iter()
        .take(take)
        .map(|&w| (w, if quick { 32 } else { WIDTH_SERIES_BATCH }))
        .collect();
    for &b in BATCHES.iter().take(take) {
        if !p.contains(&(BATCH_SERIES_WIDTH, b)) {
            p.push((BATCH_SERIES_WIDTH, b));
        }
    }
    p
}

/// When and on what a run was made: for the plot's title and the files'
/// headers.
pub struct RunInfo {
    /// UTC date and time, `2026-12-07 18:05 UTC`.
    pub when: String,
    /// The commit measured (`git describe --always --dirty`).
    pub commit: String,
    /// One-minute load average at the start and at the end.
    pub load: (String, String),
    /// [`machine`]'s description.
    pub machine: String,
    /// The command line that reproduces the run.
    pub command: String,
}

/// Runs the series and writes `w2_scaling.{csv,md,svg}` into `out` (not
/// with `--quick`, whose sizes are no measurement).
pub fn run(args: &Args, out: &Path) -> anyhow::Result<()> {
    let mut ctx = RunInfo {
        when: utc_now(),
        commit: commit(),
        load: (load_average(), String::new()),
        machine: machine(),
        command: format!(
            "cargo run --release -p nnc-bench -- --scaling --seconds {} --repeat {}",
            args.seconds, args.repeat
        ),
    };
    let mut ceiling = Row::new("nnc sgemm", CEILING);
    let mut pts = Vec::new();
    for (width, batch) in points(args.quick) {
        let (_, source) = wide_mlp(width, 1)?;
        pts.push(Point {
            width,
            batch,
            row: Row::new("nnc", &format!("W2 {width}x{batch}")),
            flops_per_sample: flops_per_sample_of(source, false)?,
        });
    }
    for round in 0..args.repeat.max(1) {
        for &t in &args.threads {
            ceiling.record(t, &run_ceiling_child(t, args)?);
            for p in &mut pts {
                eprintln!(
                    "round {}: width {} batch {} at {t} thread(s)",
                    round + 1,
                    p.width,
                    p.batch
                );
                let v = run_point(p.width, p.batch, t, args)?;
                p.row.record(t, &v);
            }
        }
    }
    ctx.load.1 = load_average();
    let md = markdown(&ctx, &ceiling, &pts, &args.threads);
    print!("{md}");
    if args.quick {
        println!("(--quick: a smoke test at tiny sizes, not a measurement; nothing written)");
        return Ok(());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, text: &str| -> anyhow::Result<()> {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("w2_scaling.md", &md)?;
    write("w2_scaling.csv", &csv(&ceiling, &pts, &args.threads))?;
    write("w2_scaling.svg", &svg(&ctx, &ceiling, &pts, &args.threads)?)?;
    println!("written: {}/w2_scaling.{{md,csv,svg}}", out.display());
    Ok(())
}

fn run_point(width: usize, batch: usize, threads: usize, args: &Args) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["--child", "scaling", "--threads", &threads.to_string()])
        .args(["--width", &width.to_string(), "--batch", &batch.to_string()])
        .args(["--seconds", &args.seconds.to_string()])
        .args(["--parallel", &strategy_arg(args.parallel)]);
    if args.quick {
        cmd.arg("--quick");
    }
    child_output(
        cmd,
        &format!("W2 width {width} batch {batch} at {threads} threads"),
    )
}

/// The series as CSV, one line per point and thread count.
pub fn csv(ceiling: &Row, pts: &[Point], threads: &[usize]) -> String {
    let mut s = String::from(
        "series,width,batch,threads,samples_per_s,gflops,ceiling_gflops,share_pct,runs,mode\n",
    );
    for p in pts {
        for &t in threads {
            let c = ceiling.samples_at(t);
            let samples = p.row.samples_at(t);
            let gflops = samples.map(|s| s * p.flops_per_sample / 1e9);
            let f = |v: Option<f64>, d: usize| v.map_or(String::new(), |v| format!("{v:.d$}"));
            let _ = writeln!(
                s,
                "{},{},{},{t},{},{},{},{},{},{}",
                series(p),
                p.width,
                p.batch,
                f(samples, 1),
                f(gflops, 2),
                f(c, 2),
                f(p.share(t, c), 1),
                p.row.samples.get(&t).map_or(0, Vec::len),
                p.row.note.replace(',', ";"),
            );
        }
    }
    s
}

/// Which series a point belongs to (the shared point is in both).
fn series(p: &Point) -> &'static str {
    match (p.width == BATCH_SERIES_WIDTH, p.batch == WIDTH_SERIES_BATCH) {
        (true, true) => "both",
        (true, false) => "batch",
        _ => "width",
    }
}

/// The series as markdown: when, where and how it was measured, then one
/// table per series.
pub fn markdown(ctx: &RunInfo, ceiling: &Row, pts: &[Point], threads: &[usize]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# W2 scaling series\n");
    let _ = writeln!(
        s,
        "{}, commit {}, load average {} at the start and {} at the end; {}.\n",
        ctx.when, ctx.commit, ctx.load.0, ctx.load.1, ctx.machine
    );
    let _ = writeln!(s, "Command: `{}`.\n", ctx.command);
    let ceil: Vec<String> = threads
        .iter()
        .map(|&t| {
            let g = ceiling
                .samples_at(t)
                .map_or("–".into(), |g| format!("{g:.1}"));
            format!("{t} thread(s) {g} GFLOP/s")
        })
        .collect();
    let _ = writeln!(
        s,
        "Ceiling (nnc `sgemm`, square, measured in this run): {}.\n",
        ceil.join(", ")
    );
    for (title, in_series) in [
        (
            format!("Widths at batch {WIDTH_SERIES_BATCH}"),
            &(|p: &Point| p.batch == WIDTH_SERIES_BATCH) as &dyn Fn(&Point) -> bool,
        ),
        (
            format!("Batches at width {BATCH_SERIES_WIDTH}"),
            &|p: &Point| p.width == BATCH_SERIES_WIDTH,
        ),
    ] {
        let _ = writeln!(s, "## {title}\n");
        let mut header = vec!["width".to_string(), "batch".to_string()];
        for t in threads {
            header.push(format!("samples/s {t}T"));
        }
        for t in threads {
            header.push(format!("% ceiling {t}T"));
        }
        let _ = writeln!(s, "| {} |", header.join(" | "));
        let _ = writeln!(s, "|{}", "---:|".repeat(header.len()));
        let mut mine: Vec<&Point> = pts.iter().filter(|p| in_series(p)).collect();
        mine.sort_by_key(|p| (p.width, p.batch));
        for p in mine {
            let mut cells = vec![p.width.to_string(), p.batch.to_string()];
            for &t in threads {
                cells.push(
                    p.row
                        .samples_at(t)
                        .map_or("–".into(), |v| format!("{v:.0}")),
                );
            }
            for &t in threads {
                let share = p.share(t, ceiling.samples_at(t));
                cells.push(share.map_or("–".into(), |v| format!("{v:.0}")));
            }
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(s);
    }
    s
}

/// The plot: % of the ceiling against width (left) and batch (right), one
/// line per thread count, on log₂ axes; the title says when, at which
/// commit and under which load it was measured.
pub fn svg(
    ctx: &RunInfo,
    ceiling: &Row,
    pts: &[Point],
    threads: &[usize],
) -> anyhow::Result<String> {
    let e = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing the plot: {e}");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let title = format!(
            "W2 (MLP 784-W-W-10, Adam): % of the matrix-multiply ceiling — {}, {}, load {}→{}",
            ctx.when, ctx.commit, ctx.load.0, ctx.load.1
        );
        let root = root.titled(&title, ("sans-serif", 16)).map_err(|x| e(&x))?;
        let (left, right) = root.split_horizontally(500);
        let top = pts
            .iter()
            .flat_map(|p| {
                threads
                    .iter()
                    .filter_map(|&t| p.share(t, ceiling.samples_at(t)))
            })
            .fold(100.0f64, f64::max);
        let y_max = (top / 10.0).ceil() * 10.0 + 5.0;
        let colours = [BLUE, RED, GREEN, MAGENTA];
        let panels: [(&DrawingArea<_, _>, String, &[usize], bool); 2] = [
            (
                &left,
                format!("hidden width (batch {WIDTH_SERIES_BATCH})"),
                &WIDTHS,
                true,
            ),
            (
                &right,
                format!("batch (width {BATCH_SERIES_WIDTH})"),
                &BATCHES,
                false,
            ),
        ];
        for (area, caption, xs, by_width) in panels {
            let lo = (xs[0] as f64).log2() - 0.25;
            let hi = (xs[xs.len() - 1] as f64).log2() + 0.25;
            let mut chart = ChartBuilder::on(area)
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(lo..hi, 0f64..y_max)
                .map_err(|x| e(&x))?;
            chart
                .configure_mesh()
                .x_labels(xs.len() + 1)
                .x_label_formatter(&|v| format!("{}", 2f64.powf(*v).round()))
                .x_desc(caption)
                .y_desc("% of the ceiling")
                .draw()
                .map_err(|x| e(&x))?;
            for (i, &t) in threads.iter().enumerate() {
                let colour = colours[i % colours.len()];
                let mut line: Vec<(f64, f64)> = pts
                    .iter()
                    .filter(|p| {
                        if by_width {
                            p.batch == WIDTH_SERIES_BATCH
                        } else {
                            p.width == BATCH_SERIES_WIDTH
                        }
                    })
                    .filter_map(|p| {
                        let x = if by_width { p.width } else { p.batch } as f64;
                        Some((x.log2(), p.share(t, ceiling.samples_at(t))?))
                    })
                    .collect();
                line.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))
                    .map_err(|x| e(&x))?
                    .label(format!("{t} thread(s)"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(line.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(|x| e(&x))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(|x| e(&x))?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

/// The one-minute load average, as /proc/loadavg prints it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

/// The commit of the repository (`git describe --always --dirty`).
fn commit() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown commit".into())
}

/// Now, in UTC: `2026-12-07 18:05 UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        // 2026-12-07: 20,794 days after the epoch.
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn both_series_share_one_point() {
        let p = points(false);
        assert_eq!(p.len(), WIDTHS.len() + BATCHES.len() - 1);
        assert_eq!(p.iter().filter(|&&q| q == (2048, 512)).count(), 1);
    }

    /// Shares are samples/s × FLOPs per sample over the ceiling, and every
    /// file names the point, the share and the run's context.
    #[test]
    fn files_carry_shares_and_context() {
        let mut ceiling = Row::new("nnc sgemm", CEILING);
        ceiling.record(1, &json!({"gflops": 100.0}));
        let mut pts = Vec::new();
        for (width, batch) in points(false) {
            let mut row = Row::new("nnc", "W2");
            row.record(1, &json!({"samples_per_s": 1000.0, "mode": "IntraOp"}));
            pts.push(Point {
                width,
                batch,
                row,
                flops_per_sample: 5e7,
            });
        }
        assert_eq!(pts[0].share(1, ceiling.samples_at(1)), Some(50.0));
        let ctx = RunInfo {
            when: "2026-12-07 18:05 UTC".into(),
            commit: "abc1234".into(),
            load: ("7.50".into(), "8.25".into()),
            machine: "test machine".into(),
            command: "cargo run".into(),
        };
        let csv = csv(&ceiling, &pts, &[1]);
        assert!(csv.contains("width,512,512,1,1000.0,50.00,100.00,50.0,1,IntraOp"));
        let md = markdown(&ctx, &ceiling, &pts, &[1]);
        assert!(md.contains("commit abc1234, load average 7.50"));
        assert!(md.contains("| 2048 | 32 | 1000 | 50 |"));
        let svg = svg(&ctx, &ceiling, &pts, &[1]).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("abc1234") && svg.contains("load 7.50→8.25"));
    }
}
