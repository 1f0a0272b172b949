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
use clap::Parser;
use nnc::runtime::gemm::{sgemm, MatRef, Parallelism};
use nnc::runtime::parallel::Strategy;
use nnc::runtime::Trainer;
use nnc::runtime::{Batch, Model, ModelSpec};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

// Each model in its own module: generated kernels are free functions.
mod w1 {
    nnc::include_model!("mnist_mlp");
}
mod w2 {
    nnc::include_model!("mlp_wide");
}
mod w3 {
    nnc::include_model!("lenet");
}

/// Benchmark nnc on the reference workloads.
#[derive(Parser)]
struct Args {
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
    /// Workloads to run (W1, W2, W3).
    #[arg(long, value_delimiter = ',', default_values_t = ["W1".to_string(), "W2".to_string(), "W3".to_string()])]
    workloads: Vec<String>,
    /// How a step uses the threads (auto, data, data:N, intra-op).
    #[arg(long, default_value = "auto")]
    parallel: Strategy,
    /// Skip timing the build of the generated code (it runs cargo).
    #[arg(long)]
    no_build_time: bool,
    /// Internal: run one measurement of this workload (or of the ceiling,
    /// `ceiling`) and print it as JSON.
    #[arg(long, hide = true)]
    child: Option<String>,
}

/// One benchmark workload.
struct Workload {
    id: &'static str,
    title: &'static str,
    /// Model source, relative to the repository root.
    source: &'static str,
    spec: &'static ModelSpec,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        id: "W1",
        title: "MLP 784-128-128-10, Adam, batch 128",
        source: "examples/models/mnist_mlp.nn",
        spec: &w1::MNIST_MLP_SPEC,
    },
    Workload {
        id: "W2",
        title: "MLP 784-2048-2048-10, Adam, batch 512",
        source: "bench/models/mlp_wide.nn",
        spec: &w2::MLP_WIDE_SPEC,
    },
    Workload {
        id: "W3",
        title: "LeNet-5, Adam, batch 128",
        source: "examples/models/lenet.nn",
        spec: &w3::LE_NET_SPEC,
    },
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(id) = &args.child {
        let threads = *args.threads.first().unwrap_or(&1);
        let result = if id == CEILING {
            ceiling_child(threads, &args)
        } else {
            child(workload(id)?, threads, &args)?
        };
        println!("{result}");
        return Ok(());
    }
    let mut workloads = Vec::new();
    for id in &args.workloads {
        workloads.push(workload(id)?);
    }
    let machine = machine();
    let mut ceiling = Row::new("nnc sgemm", CEILING);
    let mut rows: Vec<Row> = Vec::new();
    for w in &workloads {
        let compile_s = compile_time(w, if args.quick { 1 } else { 5 })?;
        let build_s = if args.quick || args.no_build_time {
            None
        } else {
            Some(build_time(w)?)
        };
        let mut row = Row::new("nnc", w.id);
        row.compile_s = Some(compile_s);
        row.build_s = build_s;
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

fn workload(id: &str) -> anyhow::Result<&'static Workload> {
    WORKLOADS
        .iter()
        .find(|w| w.id.eq_ignore_ascii_case(id))
        .with_context(|| {
            let known: Vec<&str> = WORKLOADS.iter().map(|w| w.id).collect();
            format!("unknown workload `{id}`; known: {}", known.join(", "))
        })
}

// ------------------------------------------------------------- one child run

/// The training data, in memory as the peers hold it: f32 pixels in [0, 1]
/// and u32 labels (loaded once, not copied).
fn mnist() -> anyhow::Result<nnc::runtime::data::Dataset> {
    let dir = repo().join("data/mnist-10k");
    let data = nnc::runtime::data::load_mnist(&dir)
        .with_context(|| format!("loading MNIST from {}", dir.display()))?;
    Ok(data.train)
}

fn build_model(w: &Workload, batch: usize) -> Box<dyn Model> {
    match w.id {
        "W1" => Box::new(w1::MnistMlp::new(batch)),
        "W2" => Box::new(w2::MlpWide::new(batch)),
        _ => Box::new(w3::LeNet::new(batch)),
    }
}

/// Runs in the child: model construction, the first step, warm-up, then
/// timed steps (forward, backward, Adam) over the training set in order.
fn child(w: &Workload, threads: usize, args: &Args) -> anyhow::Result<Value> {
    let train = mnist()?;
    let columns = train.columns();
    let (nnc::runtime::data::Values::F32(x), nnc::runtime::data::Values::Classes { values: y, .. }) =
        (columns[0].values(), columns[1].values())
    else {
        bail!("MNIST is not images and classes");
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| -> anyhow::Result<Value> {
        let batch = match w.spec.train.batch {
            nnc::runtime::BatchSpec::Size(b) => b,
            nnc::runtime::BatchSpec::Full => y.len(),
        };
        let batches = y.len() / batch;
        let start = Instant::now();
        let mut model = build_model(w, batch);
        // The step `fit` takes, through the same `Trainer`.
        let mut trainer = Trainer::single(&*model, batch, u64::MAX, args.parallel)?;
        let mut step = |i: usize, model: &mut Box<dyn Model>| -> anyhow::Result<f32> {
            let k = i % batches;
            let xs = [&x[k * batch * 784..(k + 1) * batch * 784]];
            let ys = [&y[k * batch..(k + 1) * batch]];
            let batch = Batch {
                inputs: &xs,
                labels: &ys,
            };
            Ok(trainer.step(&mut **model, &batch)?)
        };
        let first_loss = step(0, &mut model)?;
        let first_step_s = start.elapsed().as_secs_f64();
        let warmup = if args.quick { 2 } else { 20 };
        for i in 1..=warmup {
            step(i, &mut model)?;
        }
        let seconds = if args.quick { 0.0 } else { args.seconds };
        let timed = Instant::now();
        let mut steps = 0usize;
        let mut loss = first_loss;
        while steps < 3 || timed.elapsed().as_secs_f64() < seconds {
            loss = step(warmup + 1 + steps, &mut model)?;
            steps += 1;
        }
        let elapsed = timed.elapsed().as_secs_f64();
        if !loss.is_finite() {
            bail!("{}: training diverged (loss {loss})", w.id);
        }
        Ok(json!({
            "workload": w.id,
            "threads": threads,
            "samples_per_s": (steps * batch) as f64 / elapsed,
            "first_step_s": first_step_s,
            "peak_rss_mb": peak_rss_mb(),
            "steps_timed": steps,
            "first_loss": first_loss,
            "final_loss": loss,
            "mode": format!("{:?}", trainer.mode()),
        }))
    })
}

/// The process's peak resident set (VmHWM), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn run_child(w: &Workload, threads: usize, args: &Args) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["--child", w.id, "--threads", &threads.to_string()])
        .args(["--seconds", &args.seconds.to_string()])
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

// ------------------------------------------------------------ the ceiling

/// The `--child` name of the matrix-multiply ceiling, and its workload name
/// in the peers' results.jsonl (bench/peers/rust/gemm-bench).
const CEILING: &str = "ceiling";

/// The fastest f32 matrix multiply measured here, per thread count: its
/// GFLOP/s (median over rounds) and which library reached it.
struct Ceiling {
    by_threads: BTreeMap<usize, (f64, String)>,
    /// Every library's medians, for the record:
    /// `"gemm 1T 82.0, 2T 110.5 (fastest size: 512³; 1024³)"`.
    contenders: Vec<String>,
}

impl Ceiling {
    /// Per thread count, the library with the highest median GFLOP/s among
    /// `rows` (nnc's `sgemm` and any peer library that reported a ceiling).
    fn fastest<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Ceiling {
        let mut by_threads: BTreeMap<usize, (f64, String)> = BTreeMap::new();
        let mut contenders = Vec::new();
        for row in rows {
            let mut medians = Vec::new();
            for (&t, g) in row
                .samples
                .keys()
                .filter_map(|t| Some((t, row.samples_at(*t)?)))
            {
                medians.push(format!("{t}T {g:.1}"));
                let best = by_threads.entry(t).or_insert((g, row.framework.clone()));
                if g > best.0 {
                    *best = (g, row.framework.clone());
                }
            }
            contenders.push(format!(
                "{} {} (fastest size: {})",
                row.framework,
                medians.join(", "),
                row.note
            ));
        }
        Ceiling {
            by_threads,
            contenders,
        }
    }
}

/// Runs in the child: the ceiling by the protocol every workload gets (a
/// fresh process, untimed products first, then a sustained rate over
/// `--seconds`), so a workload's share of it compares like with like. A
/// best-of-5 single product would catch a short fast spell the training
/// runs, timed over seconds, cannot have. Square products; the faster size
/// counts. The peers' `gemm-bench` measures the `gemm` crate the same way.
fn ceiling_child(threads: usize, args: &Args) -> Value {
    let sizes: &[usize] = if args.quick {
        &[64]
    } else if threads == 1 {
        &[512, 1024]
    } else {
        &[1024, 2048]
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    let par = if threads == 1 {
        Parallelism::Sequential
    } else {
        Parallelism::Rayon(threads)
    };
    let mut best = (0.0f64, 0usize);
    for &n in sizes {
        let a = vec![0.5f32; n * n];
        let b = vec![0.25f32; n * n];
        let mut c = vec![0.0f32; n * n];
        let gflops = pool.install(|| {
            let mut product = || {
                sgemm(
                    par,
                    n,
                    n,
                    n,
                    1.0,
                    MatRef::new(&a, n),
                    MatRef::new(&b, n),
                    0.0,
                    &mut c,
                    n,
                )
                .expect("square product")
            };
            product();
            product();
            let budget = if args.quick {
                0.0
            } else {
                args.seconds / sizes.len() as f64
            };
            let t = Instant::now();
            let mut count = 0usize;
            while count < 3 || t.elapsed().as_secs_f64() < budget {
                product();
                count += 1;
            }
            2.0 * (n * n * n) as f64 * count as f64 / t.elapsed().as_secs_f64() / 1e9
        });
        if gflops > best.0 {
            best = (gflops, n);
        }
    }
    json!({
        "workload": CEILING,
        "threads": threads,
        "gflops": best.0,
        "n": best.1,
    })
}

fn run_ceiling_child(threads: usize, args: &Args) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["--child", CEILING, "--threads", &threads.to_string()])
        .args(["--seconds", &args.seconds.to_string()]);
    if args.quick {
        cmd.arg("--quick");
    }
    child_output(cmd, &format!("the ceiling at {threads} threads"))
}

// ----------------------------------------------------------------- the table

/// The median of `v` (the lower middle of an even count), if any.
fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get((s.len().max(1) - 1) / 2).copied()
}

/// One framework's results on one workload (or one library's on the
/// matrix-multiply ceiling).
struct Row {
    framework: String,
    workload: String,
    /// Every measurement per thread count (several with `--repeat`):
    /// samples/s, or GFLOP/s on a ceiling row.
    samples: BTreeMap<usize, Vec<f64>>,
    rss_mb: BTreeMap<usize, Vec<f64>>,
    first_step_s: Option<f64>,
    compile_s: Option<f64>,
    build_s: Option<f64>,
    note: String,
}

impl Row {
    /// The median samples/s at `threads` (the lower middle of an even count).
    fn samples_at(&self, threads: usize) -> Option<f64> {
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

    fn new(framework: &str, workload: &str) -> Row {
        Row {
            framework: framework.into(),
            workload: workload.into(),
            samples: BTreeMap::new(),
            rss_mb: BTreeMap::new(),
            first_step_s: None,
            compile_s: None,
            build_s: None,
            note: String::new(),
        }
    }

    fn record(&mut self, threads: usize, v: &Value) {
        if let Some(s) = v["samples_per_s"].as_f64().or(v["gflops"].as_f64()) {
            self.samples.entry(threads).or_default().push(s);
        }
        if let Some(r) = v["peak_rss_mb"].as_f64() {
            self.rss_mb.entry(threads).or_default().push(r);
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
fn read_peers(path: &Path, workloads: &[&Workload]) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
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

fn machine() -> String {
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

fn print_table(
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
        let flops = step_flops(w)?;
        let batch = match w.spec.train.batch {
            nnc::runtime::BatchSpec::Size(b) => b as f64,
            nnc::runtime::BatchSpec::Full => 8000.0,
        };
        let per_sample = flops / batch;
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
            cells.push(if runs > 1 {
                format!("{}; median of {runs}", r.note)
            } else {
                r.note.clone()
            });
            println!("| {} |", cells.join(" | "));
        }
        if let (Some(me), false) = (mine.first(), theirs.is_empty()) {
            let mut cells = vec![format!("{}", w.id), "**nnc ÷ best peer**".to_string()];
            for t in threads {
                let best = theirs
                    .iter()
                    .filter_map(|r| r.samples_at(*t))
                    .fold(0.0f64, f64::max);
                let ratio = me.samples_at(*t).filter(|_| best > 0.0).map(|s| s / best);
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

/// FLOPs of one training step of the workload at its batch size.
fn step_flops(w: &Workload) -> anyhow::Result<f64> {
    let path = repo().join(w.source);
    let text = std::fs::read_to_string(&path)?;
    let src = nnc_compiler::SourceFile::new(w.source, text);
    let module = nnc_compiler::check_source(&src).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let net = &module.networks[0];
    let cfg = module.train_config(&net.name);
    let stats = nnc_compiler::driver::stats(net, &cfg, &Default::default())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(stats.flops as f64)
}
