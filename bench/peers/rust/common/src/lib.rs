//! Shared plumbing for the Rust peer benchmarks: command-line options, the
//! bundled MNIST (IDX gz) loader, the timing loop and the JSON result line.
//!
//! Every binary prints exactly one JSON object on stdout (diagnostics go to
//! stderr); `bench/peers/run.sh` appends it to `results.jsonl`.

use std::io::Read;
use std::time::Instant;

/// The three workloads, identical to the Python peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// MLP 784-128-128-10, batch 128.
    W1,
    /// MLP 784-2048-2048-10, batch 512.
    W2,
    /// LeNet-5, batch 128.
    W3,
}

impl Workload {
    pub fn parse(s: &str) -> Workload {
        match s {
            "W1" => Workload::W1,
            "W2" => Workload::W2,
            "W3" => Workload::W3,
            _ => panic!("unknown workload {s:?} (expected W1, W2 or W3)"),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
        }
    }
    pub fn batch(self) -> usize {
        match self {
            Workload::W2 => 512,
            _ => 128,
        }
    }
    /// Hidden width of the MLP workloads.
    pub fn hidden(self) -> usize {
        match self {
            Workload::W1 => 128,
            Workload::W2 => 2048,
            Workload::W3 => 0,
        }
    }
}

pub struct Options {
    pub workload: Workload,
    pub threads: usize,
    pub data_dir: String,
    /// Warm-up steps (not timed, except the first one for `first_step_s`).
    pub warmup: usize,
    /// Exact number of timed steps; 0 means "time for `seconds`".
    pub steps: usize,
    pub seconds: f64,
}

impl Options {
    pub fn from_args() -> Options {
        let mut o = Options {
            workload: Workload::W1,
            threads: 1,
            data_dir: "data/mnist-10k".to_string(),
            warmup: 20,
            steps: 0,
            seconds: 3.0,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let v = args.get(i + 1).cloned().unwrap_or_default();
            match args[i].as_str() {
                "--workload" => o.workload = Workload::parse(&v),
                "--threads" => o.threads = v.parse().expect("--threads"),
                "--data" => o.data_dir = v,
                "--warmup" => o.warmup = v.parse().expect("--warmup"),
                "--steps" => o.steps = v.parse().expect("--steps"),
                "--seconds" => o.seconds = v.parse().expect("--seconds"),
                other => panic!("unknown argument {other:?}"),
            }
            i += 2;
        }
        o.warmup = o.warmup.max(1);
        o
    }
}

fn read_gz(path: &str) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    out
}

fn be_u32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// The training split: images as float32 in [0,1] (n*784, row-major) and labels.
pub struct Mnist {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    pub n: usize,
}

pub fn load_train(data_dir: &str) -> Mnist {
    let img = read_gz(&format!("{data_dir}/train-images-idx3-ubyte.gz"));
    let lab = read_gz(&format!("{data_dir}/train-labels-idx1-ubyte.gz"));
    assert_eq!(be_u32(&img, 0), 2051, "bad image magic");
    assert_eq!(be_u32(&lab, 0), 2049, "bad label magic");
    let n = be_u32(&img, 4);
    let (rows, cols) = (be_u32(&img, 8), be_u32(&img, 12));
    assert_eq!((rows, cols), (28, 28));
    assert_eq!(be_u32(&lab, 4), n);
    let images = img[16..16 + n * 784].iter().map(|&p| p as f32 / 255.0).collect();
    let labels = lab[8..8 + n].to_vec();
    Mnist { images, labels, n }
}

impl Mnist {
    /// Number of full batches (the last partial batch is dropped).
    pub fn num_batches(&self, batch: usize) -> usize {
        self.n / batch
    }
    /// Batch `i` (in order): its images (batch*784) and labels.
    pub fn batch(&self, batch: usize, i: usize) -> (&[f32], &[u8]) {
        let s = i * batch;
        (&self.images[s * 784..(s + batch) * 784], &self.labels[s..s + batch])
    }
}

/// Peak resident set size of this process in MiB (VmHWM).
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmHWM:") {
            let kb: f64 = rest.trim().trim_end_matches("kB").trim().parse().unwrap_or(0.0);
            return kb / 1024.0;
        }
    }
    0.0
}

pub struct Measurement {
    pub first_step_s: f64,
    pub first_loss: f32,
    pub steps_timed: usize,
    pub seconds_timed: f64,
    pub samples_per_s: f64,
    pub final_loss: f32,
}

/// Runs the protocol shared by all peers.
///
/// `build` constructs the model and optimizer (its time counts towards
/// `first_step_s`); `step(state, batch_index)` performs one full training
/// step (forward, backward, Adam update) on the given batch and returns the
/// loss as an f32 (reading the loss also synchronises the backend).
pub fn measure<S>(
    opts: &Options,
    num_batches: usize,
    build: impl FnOnce() -> S,
    mut step: impl FnMut(&mut S, usize) -> f32,
) -> Measurement {
    let batch = opts.workload.batch();
    let t0 = Instant::now();
    let mut state = build();
    let first_loss = step(&mut state, 0);
    let first_step_s = t0.elapsed().as_secs_f64();
    let mut b = 1 % num_batches;
    for _ in 1..opts.warmup {
        step(&mut state, b);
        b = (b + 1) % num_batches;
    }
    let t = Instant::now();
    let mut n = 0usize;
    let mut loss;
    loop {
        loss = step(&mut state, b);
        b = (b + 1) % num_batches;
        n += 1;
        let done = if opts.steps > 0 {
            n >= opts.steps
        } else {
            n >= 10 && t.elapsed().as_secs_f64() >= opts.seconds
        };
        if done {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    Measurement {
        first_step_s,
        first_loss,
        steps_timed: n,
        seconds_timed: secs,
        samples_per_s: (n * batch) as f64 / secs,
        final_loss: loss,
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".to_string()
    }
}

/// Prints the result line (one JSON object) on stdout.
pub fn report(framework: &str, version: &str, backend: &str, notes: &str, opts: &Options, m: &Measurement) {
    println!(
        "{{\"framework\": {}, \"version\": {}, \"workload\": {}, \"threads\": {}, \"batch\": {}, \
         \"samples_per_s\": {}, \"peak_rss_mb\": {}, \"first_step_s\": {}, \"steps_timed\": {}, \
         \"seconds_timed\": {}, \"warmup_steps\": {}, \"first_loss\": {}, \"final_loss\": {}, \
         \"backend\": {}, \"notes\": {}}}",
        json_str(framework),
        json_str(version),
        json_str(opts.workload.name()),
        opts.threads,
        opts.workload.batch(),
        json_num((m.samples_per_s * 10.0).round() / 10.0),
        json_num((peak_rss_mb() * 10.0).round() / 10.0),
        json_num((m.first_step_s * 1e4).round() / 1e4),
        m.steps_timed,
        json_num((m.seconds_timed * 1e3).round() / 1e3),
        opts.warmup,
        json_num(m.first_loss as f64),
        json_num(m.final_loss as f64),
        json_str(backend),
        json_str(notes),
    );
}

/// Prints an "unsupported" result line for a workload a framework cannot run.
pub fn report_unsupported(framework: &str, version: &str, opts: &Options, reason: &str) {
    println!(
        "{{\"framework\": {}, \"version\": {}, \"workload\": {}, \"threads\": {}, \"unsupported\": true, \"error\": {}}}",
        json_str(framework),
        json_str(version),
        json_str(opts.workload.name()),
        opts.threads,
        json_str(reason)
    );
}
