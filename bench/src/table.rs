//! The table: nnc's and the peers' rows per workload, their shares of the
//! ceiling and the ratio of nnc to the best peer.

use crate::ceiling::{Ceiling, CEILING};
use crate::workloads::{Task, Workload};
use crate::{repo, Args};
use anyhow::Context;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The median of `v` (the lower middle of an even count), if any.
fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get((s.len().max(1) - 1) / 2).copied()
}

/// One framework's results on one workload (or one library's on the
/// matrix-multiply ceiling).
pub struct Row {
    pub framework: String,
    pub workload: String,
    /// Every measurement per thread count (several with `--repeat`):
    /// samples/s, or GFLOP/s on a ceiling row.
    pub samples: BTreeMap<usize, Vec<f64>>,
    rss_mb: BTreeMap<usize, Vec<f64>>,
    /// Median and p99 latency of one call per thread count, µs (inference
    /// at batch 1).
    latency_us: BTreeMap<usize, Vec<(f64, f64)>>,
    first_step_s: Option<f64>,
    pub compile_s: Option<f64>,
    pub build_s: Option<f64>,
    pub note: String,
}

impl Row {
    /// The median samples/s at `threads` (the lower middle of an even count).
    pub fn samples_at(&self, threads: usize) -> Option<f64> {
        self.samples.get(&threads).and_then(|v| median(v))
    }

    /// The largest of the per-thread-count median peak RSS.
    fn rss_max(&self) -> Option<f64> {
        self.rss_mb
            .values()
            .filter_map(|v| median(v))
            .reduce(f64::max)
    }

    /// Measurements per cell (the most of any thread count).
    fn runs(&self) -> usize {
        self.samples.values().map(Vec::len).max().unwrap_or(0)
    }

    /// The latency of the measurement with the median median latency at
    /// `threads`: (median, p99) in µs.
    fn latency_at(&self, threads: usize) -> Option<(f64, f64)> {
        let mut v = self.latency_us.get(&threads)?.clone();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v.get((v.len().max(1) - 1) / 2).copied()
    }

    pub fn new(framework: &str, workload: &str) -> Row {
        Row {
            framework: framework.into(),
            workload: workload.into(),
            samples: BTreeMap::new(),
            rss_mb: BTreeMap::new(),
            latency_us: BTreeMap::new(),
            first_step_s: None,
            compile_s: None,
            build_s: None,
            note: String::new(),
        }
    }

    pub fn record(&mut self, threads: usize, v: &Value) {
        if let Some(s) = v["samples_per_s"].as_f64().or(v["gflops"].as_f64()) {
            self.samples.entry(threads).or_default().push(s);
        }
        if let Some(r) = v["peak_rss_mb"].as_f64() {
            self.rss_mb.entry(threads).or_default().push(r);
        }
        if let (Some(m), Some(p)) = (
            v["latency_median_us"].as_f64(),
            v["latency_p99_us"].as_f64(),
        ) {
            self.latency_us.entry(threads).or_default().push((m, p));
        }
        if self.first_step_s.is_none() {
            self.first_step_s = v["first_step_s"].as_f64();
        }
        let size = v["n"].as_u64().map(|n| format!("{n}³"));
        let note = v["mode"]
            .as_str()
            .or(v["backend"].as_str())
            .or(v["notes"].as_str())
            .or(size.as_deref())
            .unwrap_or_default();
        if !note.is_empty() && !self.note.contains(note) {
            if !self.note.is_empty() {
                self.note.push_str("; ");
            }
            self.note.push_str(note);
        }
    }
}

/// The peers' rows on the selected workloads, and the ceiling rows of peer
/// libraries (workload `ceiling`).
pub fn read_peers(path: &Path, workloads: &[&Workload]) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows: Vec<Row> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
        let (Some(fw), Some(wl)) = (v["framework"].as_str(), v["workload"].as_str()) else {
            continue;
        };
        if !(wl == CEILING || workloads.iter().any(|w| w.id == wl)) || v.get("error").is_some() {
            continue;
        }
        let threads = v["threads"].as_u64().unwrap_or(1) as usize;
        let idx = match rows
            .iter()
            .position(|r| r.framework == fw && r.workload == wl)
        {
            Some(i) => i,
            None => {
                rows.push(Row::new(fw, wl));
                rows.len() - 1
            }
        };
        rows[idx].record(threads, &v);
    }
    Ok(rows.into_iter().partition(|r| r.workload != CEILING))
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let isa = if cfg!(target_arch = "x86_64") {
        let mut f = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                f.push("AVX2");
            }
            if std::arch::is_x86_feature_detected!("fma") {
                f.push("FMA");
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                f.push("AVX-512");
            } else {
                f.push("no AVX-512");
            }
        }
        f.join(", ")
    } else {
        std::env::consts::ARCH.to_string()
    };
    format!("{cpu}, {cores} cores available, {isa}")
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

pub fn print_table(
    machine: &str,
    ceiling: &Ceiling,
    workloads: &[&Workload],
    rows: &[Row],
    peers: &[Row],
    args: &Args,
) -> anyhow::Result<()> {
    println!("machine: {machine}");
    let ceil: Vec<String> = ceiling
        .by_threads
        .iter()
        .map(|(t, (g, by))| format!("{t} thread(s) {g:.1} GFLOP/s ({by})"))
        .collect();
    println!(
        "fastest f32 matrix multiply (square, sustained over --seconds, median of rounds): {}",
        ceil.join(", ")
    );
    println!("GFLOP/s per library: {}", ceiling.contenders.join("; "));
    if args.quick {
        println!("(--quick: a smoke test at tiny sizes, not a measurement)");
    }
    let threads = &args.threads;
    let mut header = vec!["workload".to_string(), "framework".to_string()];
    for t in threads {
        header.push(format!("samples/s {t}T"));
    }
    for t in threads {
        header.push(format!("% ceiling {t}T"));
    }
    header.extend(
        [
            "peak RSS MB",
            "first step s",
            "compile s",
            "build s",
            "notes",
        ]
        .map(String::from),
    );
    println!();
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for w in workloads {
        let per_sample = flops_per_sample(w)?;
        let batch1 = matches!(w.task, Task::Predict { batch: 1 });
        let mine: Vec<&Row> = rows.iter().filter(|r| r.workload == w.id).collect();
        let theirs: Vec<&Row> = peers.iter().filter(|r| r.workload == w.id).collect();
        for r in mine.iter().chain(&theirs) {
            let mut cells = vec![format!("{} {}", w.id, w.title), r.framework.clone()];
            for t in threads {
                cells.push(fmt_opt(r.samples_at(*t), 0));
            }
            for t in threads {
                let frac = r
                    .samples_at(*t)
                    .zip(ceiling.by_threads.get(t))
                    .map(|(s, (g, _))| 100.0 * s * per_sample / (g * 1e9));
                cells.push(fmt_opt(frac, 0));
            }
            cells.push(fmt_opt(r.rss_max(), 0));
            cells.push(fmt_opt(r.first_step_s, 2));
            cells.push(fmt_opt(r.compile_s, 3));
            cells.push(fmt_opt(r.build_s, 1));
            let runs = r.runs();
            let mut note = r.note.clone();
            for t in threads.iter().filter(|_| batch1) {
                if let Some((m, p)) = r.latency_at(*t) {
                    note.push_str(&format!("; {t}T latency median {m:.1} µs, p99 {p:.1} µs"));
                }
            }
            if runs > 1 {
                note.push_str(&format!("; median of {runs}"));
            }
            cells.push(note);
            println!("| {} |", cells.join(" | "));
        }
        if let (Some(me), false) = (mine.first(), theirs.is_empty()) {
            // At batch 1 the figure of merit is the latency of a call: the
            // ratio is the best peer's median latency over nnc's.
            let what = if batch1 {
                "**best peer's latency ÷ nnc's**"
            } else {
                "**nnc ÷ best peer**"
            };
            let mut cells = vec![format!("{}", w.id), what.to_string()];
            for t in threads {
                let ratio = if batch1 {
                    let best = theirs
                        .iter()
                        .filter_map(|r| r.latency_at(*t))
                        .map(|l| l.0)
                        .reduce(f64::min);
                    me.latency_at(*t).zip(best).map(|(m, b)| b / m.0)
                } else {
                    let best = theirs
                        .iter()
                        .filter_map(|r| r.samples_at(*t))
                        .fold(0.0f64, f64::max);
                    me.samples_at(*t).filter(|_| best > 0.0).map(|s| s / best)
                };
                cells.push(ratio.map_or("–".into(), |r| format!("{r:.2}×")));
            }
            for _ in threads {
                cells.push(String::new());
            }
            let least = theirs.iter().filter_map(|r| r.rss_max()).reduce(f64::min);
            let mine_rss = me.rss_max();
            cells.push(
                mine_rss
                    .zip(least)
                    .map_or("–".into(), |(a, b)| format!("{:.2}× least", a / b)),
            );
            cells.extend(["", "", "", ""].map(String::from));
            println!("| {} |", cells.join(" | "));
        }
    }
    Ok(())
}

/// FLOPs per sample of what the workload runs: a training step (forward
/// and backward), or the forward pass alone for inference.
fn flops_per_sample(w: &Workload) -> anyhow::Result<f64> {
    flops_per_sample_of(w.source, matches!(w.task, Task::Predict { .. }))
}

/// FLOPs per sample of the model at `source` (relative to the repository
/// root): its forward pass if `forward_only`, else a training step.
pub fn flops_per_sample_of(source: &str, forward_only: bool) -> anyhow::Result<f64> {
    let path = repo().join(source);
    let text = std::fs::read_to_string(&path)?;
    let src = nnc_compiler::SourceFile::new(source, text);
    let module = nnc_compiler::check_source(&src).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let net = &module.networks[0];
    if forward_only {
        let tg = nnc_compiler::driver::training_graph(&module, net)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        return Ok(tg.flops_per_sample().0 as f64);
    }
    let cfg = module.train_config(&net.name);
    let stats = nnc_compiler::driver::stats(net, &cfg, &Default::default())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(stats.flops as f64 / stats.batch as f64)
}
