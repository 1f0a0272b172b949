//! The benchmark: training throughput, peak memory and compile times of nnc
//! on the reference workloads, next to the fastest f32 matrix multiply on
//! the machine and to the peer frameworks (`bench/peers/run.sh`).
//!
//! `cargo run --release -p nnc-bench` prints one table. Every throughput
//! and memory figure comes from a fresh child process (this binary with
//! `--child`), so one measurement's memory never counts towards another's.
//! `--quick` runs everything at a tiny size: a smoke test (CI runs it), not
//! a measurement.

use anyhow::{bail, Context};
use ceiling::{ceiling_child, run_ceiling_child, Ceiling, CEILING};
use clap::Parser;
use nnc::runtime::parallel::Strategy;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use table::{machine, print_table, read_peers, Row};
use workloads::{child, workload, Task, Workload};

mod ceiling;
mod scaling;
mod table;
mod workloads;

/// Benchmark nnc on the reference workloads.
#[derive(Parser)]
pub struct Args {
    /// Tiny sizes and a few steps: a smoke test, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Peer results written by bench/peers/run.sh, merged into the table.
    #[arg(long)]
    peers: Option<PathBuf>,
    /// Seconds of timed training per measurement, after warm-up.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Fresh processes per (workload, threads); the table shows the median
    /// (peers' repeated lines in results.jsonl are reduced the same way).
    /// The matrix-multiply ceiling is measured the same way, once per round
    /// and thread count.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    threads: Vec<usize>,
    /// Workloads to run: W1, W2, W3 (training on MNIST), W4, W4L
    /// (transformer training), W5-MLP-1, W5-MLP-256, W5-LeNet-1,
    /// W5-LeNet-256 (inference); all by default.
    #[arg(long, value_delimiter = ',', default_values_t = workloads::WORKLOADS.iter().map(|w| w.id.to_string()))]
    workloads: Vec<String>,
    /// Timed `predict` calls of a batch-1 inference workload (its latency
    /// median and p99 are over these).
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// How a step uses the threads (auto, data, data:N, intra-op).
    #[arg(long, default_value = "auto")]
    parallel: Strategy,
    /// Skip timing the build of the generated code (it runs cargo).
    #[arg(long)]
    no_build_time: bool,
    /// Run W2's scaling series instead of the table: widths 512–4096 at
    /// batch 512 and batches 32–2048 at width 2048, each point's share of
    /// the ceiling, written as CSV, markdown and an SVG plot into
    /// `--scaling-out` (`--threads`, `--seconds`, `--repeat` apply).
    #[arg(long)]
    scaling: bool,
    /// Where `--scaling` writes `w2_scaling.{csv,md,svg}` (a relative path
    /// is taken from the repository root).
    #[arg(long, default_value = "bench/scaling")]
    scaling_out: PathBuf,
    /// Internal: the hidden width of a `--child scaling` point.
    #[arg(long, hide = true, default_value_t = 2048)]
    width: usize,
    /// Internal: the batch of a `--child scaling` point.
    #[arg(long, hide = true, default_value_t = 512)]
    batch: usize,
    /// Internal: run one measurement of this workload (or of the ceiling,
    /// `ceiling`, or of a scaling point, `scaling`) and print it as JSON.
    #[arg(long, hide = true)]
    child: Option<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(id) = &args.child {
        let threads = *args.threads.first().unwrap_or(&1);
        let result = if id == CEILING {
            ceiling_child(threads, &args)
        } else if id == "scaling" {
            workloads::scaling_child(args.width, args.batch, threads, &args)?
        } else {
            child(workload(id)?, threads, &args)?
        };
        println!("{result}");
        return Ok(());
    }
    if args.scaling {
        // Relative to the repository, like every other path here, not to
        // wherever cargo was started.
        let out = if args.scaling_out.is_relative() {
            repo().join(&args.scaling_out)
        } else {
            args.scaling_out.clone()
        };
        return scaling::run(&args, &out);
    }
    let mut workloads = Vec::new();
    for id in &args.workloads {
        workloads.push(workload(id)?);
    }
    let machine = machine();
    let mut ceiling = Row::new("nnc sgemm", CEILING);
    let mut rows: Vec<Row> = Vec::new();
    for w in &workloads {
        let mut row = Row::new("nnc", w.id);
        // Inference runs a training workload's model: its compile and
        // build are that workload's.
        if !matches!(w.task, Task::Predict { .. }) {
            row.compile_s = Some(compile_time(w, if args.quick { 1 } else { 5 })?);
            if !(args.quick || args.no_build_time) {
                row.build_s = Some(build_time(w)?);
            }
        }
        rows.push(row);
    }
    // Rounds outermost, as in bench/peers/run.sh: a slow spell of the
    // shared machine then lands on one round of everything, which the
    // median discards, rather than on every round of one cell.
    for _ in 0..args.repeat.max(1) {
        for &t in &args.threads {
            ceiling.record(t, &run_ceiling_child(t, &args)?);
        }
        for (w, row) in workloads.iter().zip(&mut rows) {
            for &t in &args.threads {
                let out = run_child(w, t, &args)?;
                row.record(t, &out);
            }
        }
    }
    let (peers, peer_ceilings) = match &args.peers {
        Some(p) => read_peers(p, &workloads)?,
        None => {
            let default = repo().join("bench/peers/results.jsonl");
            if default.exists() {
                read_peers(&default, &workloads)?
            } else {
                Default::default()
            }
        }
    };
    let ceiling = Ceiling::fastest(std::iter::once(&ceiling).chain(&peer_ceilings));
    print_table(&machine, &ceiling, &workloads, &rows, &peers, &args)?;
    Ok(())
}

fn run_child(w: &Workload, threads: usize, args: &Args) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["--child", w.id, "--threads", &threads.to_string()])
        .args(["--seconds", &args.seconds.to_string()])
        .args(["--calls", &args.calls.to_string()])
        .args(["--parallel", &strategy_arg(args.parallel)]);
    if args.quick {
        cmd.arg("--quick");
    }
    child_output(cmd, &format!("{} at {threads} threads", w.id))
}

/// Runs a child measurement and parses the JSON line it prints last.
fn child_output(mut cmd: Command, what: &str) -> anyhow::Result<Value> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("child printed `{line}`"))
}

fn strategy_arg(s: Strategy) -> String {
    match s {
        Strategy::Auto => "auto".into(),
        Strategy::Data { shards: None } => "data".into(),
        Strategy::Data { shards: Some(n) } => format!("data:{n}"),
        Strategy::IntraOp => "intra-op".into(),
    }
}

// ------------------------------------------------------- compile and build

/// Median seconds of `nnc compile` (parse, check, autodiff, passes, codegen,
/// formatting) of the workload, in process.
fn compile_time(w: &Workload, runs: usize) -> anyhow::Result<f64> {
    let path = repo().join(w.source);
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        nnc_compiler::build::compile_to_string(&path, &Default::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Seconds `cargo build --release` takes to compile the generated code of
/// the workload as its own crate against `nnc-runtime`, dependencies
/// already built (what a user waits for after editing a model).
fn build_time(w: &Workload) -> anyhow::Result<f64> {
    let root = repo();
    let dir = root
        .join("target/nnc-bench-build")
        .join(w.id.to_lowercase());
    std::fs::create_dir_all(&dir)?;
    let runtime = root.join("runtime").canonicalize()?;
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"generated-{}\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [lib]\npath = \"lib.rs\"\n\n[dependencies]\nnnc-runtime = {{ path = {:?} }}\n\n[workspace]\n",
            w.id.to_lowercase(),
            runtime.display().to_string()
        ),
    )?;
    // The repository's lock file pins the same dependency versions offline.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))?;
    let opts = nnc_compiler::codegen::Options {
        runtime: "::nnc_runtime".into(),
        ..Default::default()
    };
    let code = nnc_compiler::build::compile_to_string(&root.join(w.source), &opts)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let build = |tag: usize| -> anyhow::Result<f64> {
        std::fs::write(
            dir.join("lib.rs"),
            format!("#![allow(dead_code)]\n{code}\n// build {tag}\n"),
        )?;
        let t = Instant::now();
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--offline", "--quiet"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .status()?;
        if !status.success() {
            bail!("building the generated code of {} failed", w.id);
        }
        Ok(t.elapsed().as_secs_f64())
    };
    build(0)?; // dependencies
    build(1)
}
