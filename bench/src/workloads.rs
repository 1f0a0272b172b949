//! The workloads and one measurement of one of them (the `--child` run):
//! training steps through the shared `Trainer` (W1–W4L), or `predict`
//! calls (W5).

use crate::{repo, Args};
use anyhow::{bail, Context};
use nnc::runtime::data::synthetic::reversed_sequences;
use nnc::runtime::rng::Rng;
use nnc::runtime::Trainer;
use nnc::runtime::{Batch, Model, ModelSpec};
use serde_json::{json, Value};
use std::time::Instant;

// Each model in its own module, as a user's crate would hold them.
mod w1 {
    nnc::include_model!("mnist_mlp");
}
mod w2 {
    nnc::include_model!("mlp_wide");
}
// W2 at the other widths of the scaling series (`--scaling`).
mod w2_512 {
    nnc::include_model!("mlp_wide_512");
}
mod w2_1024 {
    nnc::include_model!("mlp_wide_1024");
}
mod w2_4096 {
    nnc::include_model!("mlp_wide_4096");
}
mod w3 {
    nnc::include_model!("lenet");
}
mod w4 {
    nnc::include_model!("transformer");
}
mod w4l {
    nnc::include_model!("transformer_large");
}

/// What a workload measures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Training steps over the bundled MNIST training images, in order.
    TrainImages,
    /// Training steps over the sequence-reversal task of
    /// `examples/sequence` (the model's sequence length, digits 0–9):
    /// [`SEQUENCE_BATCHES`] fixed batches from a seeded generator, cycled.
    TrainSequences,
    /// `predict` calls at this batch over the MNIST training images: the
    /// latency of one call (median and p99) and the throughput.
    Predict {
        /// Samples per call.
        batch: usize,
    },
}

/// Batches of the sequence task, drawn once and cycled (the peers draw as
/// many: bench/peers/transformer.py).
pub const SEQUENCE_BATCHES: usize = 32;

/// One benchmark workload.
pub struct Workload {
    /// Short name, as in the peers' results.jsonl.
    pub id: &'static str,
    /// What it is, for the table.
    pub title: &'static str,
    /// Model source, relative to the repository root.
    pub source: &'static str,
    /// The compiled model's description.
    pub spec: &'static ModelSpec,
    /// What is measured.
    pub task: Task,
}

impl Workload {
    /// Samples per step or call.
    pub fn batch(&self) -> usize {
        match (self.task, &self.spec.train.batch) {
            (Task::Predict { batch }, _) => batch,
            (_, nnc::runtime::BatchSpec::Size(b)) => *b,
            (_, nnc::runtime::BatchSpec::Full) => 8000,
        }
    }

    fn model(&self, batch: usize) -> Box<dyn Model> {
        match self.id {
            "W1" | "W5-MLP-1" | "W5-MLP-256" => Box::new(w1::MnistMlp::new(batch)),
            "W2" => Box::new(w2::MlpWide::new(batch)),
            "W4" => Box::new(w4::Transformer::new(batch)),
            "W4L" => Box::new(w4l::TransformerLarge::new(batch)),
            _ => Box::new(w3::LeNet::new(batch)),
        }
    }
}

/// W2's model with hidden layers of `width` (512, 1024, 2048 or 4096) for
/// batches of up to `batch`, and its source (for its FLOPs): the scaling
/// series' models.
pub fn wide_mlp(width: usize, batch: usize) -> anyhow::Result<(Box<dyn Model>, &'static str)> {
    Ok(match width {
        512 => (
            Box::new(w2_512::MlpWide512::new(batch)),
            "bench/models/mlp_wide_512.nn",
        ),
        1024 => (
            Box::new(w2_1024::MlpWide1024::new(batch)),
            "bench/models/mlp_wide_1024.nn",
        ),
        2048 => (
            Box::new(w2::MlpWide::new(batch)),
            "bench/models/mlp_wide.nn",
        ),
        4096 => (
            Box::new(w2_4096::MlpWide4096::new(batch)),
            "bench/models/mlp_wide_4096.nn",
        ),
        _ => bail!("no wide MLP of width {width} (512, 1024, 2048 or 4096)"),
    })
}

/// Every workload, in table order.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        id: "W1",
        title: "MLP 784-128-128-10, Adam, batch 128",
        source: "examples/models/mnist_mlp.nn",
        spec: &w1::MNIST_MLP_SPEC,
        task: Task::TrainImages,
    },
    Workload {
        id: "W2",
        title: "MLP 784-2048-2048-10, Adam, batch 512",
        source: "bench/models/mlp_wide.nn",
        spec: &w2::MLP_WIDE_SPEC,
        task: Task::TrainImages,
    },
    Workload {
        id: "W3",
        title: "LeNet-5, Adam, batch 128",
        source: "examples/models/lenet.nn",
        spec: &w3::LE_NET_SPEC,
        task: Task::TrainImages,
    },
    Workload {
        id: "W4",
        title: "transformer encoder T16 D64 H4 ×2, Adam, batch 64",
        source: "examples/models/transformer.nn",
        spec: &w4::TRANSFORMER_SPEC,
        task: Task::TrainSequences,
    },
    Workload {
        id: "W4L",
        title: "transformer encoder T128 D256 H8 ×4, Adam, batch 32",
        source: "bench/models/transformer_large.nn",
        spec: &w4l::TRANSFORMER_LARGE_SPEC,
        task: Task::TrainSequences,
    },
    Workload {
        id: "W5-MLP-1",
        title: "predict, W1's MLP, batch 1",
        source: "examples/models/mnist_mlp.nn",
        spec: &w1::MNIST_MLP_SPEC,
        task: Task::Predict { batch: 1 },
    },
    Workload {
        id: "W5-MLP-256",
        title: "predict, W1's MLP, batch 256",
        source: "examples/models/mnist_mlp.nn",
        spec: &w1::MNIST_MLP_SPEC,
        task: Task::Predict { batch: 256 },
    },
    Workload {
        id: "W5-LeNet-1",
        title: "predict, LeNet-5, batch 1",
        source: "examples/models/lenet.nn",
        spec: &w3::LE_NET_SPEC,
        task: Task::Predict { batch: 1 },
    },
    Workload {
        id: "W5-LeNet-256",
        title: "predict, LeNet-5, batch 256",
        source: "examples/models/lenet.nn",
        spec: &w3::LE_NET_SPEC,
        task: Task::Predict { batch: 256 },
    },
];

/// The workload named `id` (any case).
pub fn workload(id: &str) -> anyhow::Result<&'static Workload> {
    WORKLOADS
        .iter()
        .find(|w| w.id.eq_ignore_ascii_case(id))
        .with_context(|| {
            let known: Vec<&str> = WORKLOADS.iter().map(|w| w.id).collect();
            format!("unknown workload `{id}`; known: {}", known.join(", "))
        })
}

/// A workload's data, one sample after another: the values of its one
/// input (pixels, or token ids as f32) and of its one label.
struct Data {
    values: Values,
    input_width: usize,
    label_width: usize,
}

/// Where the values live: MNIST stays in its loaded data set (not copied,
/// as the peers hold it once); sequences are made here.
enum Values {
    Mnist(nnc::runtime::data::Dataset),
    Owned(Vec<f32>, Vec<u32>),
}

impl Data {
    fn all(&self) -> (&[f32], &[u32]) {
        use nnc::runtime::data::Values as V;
        match &self.values {
            Values::Owned(x, y) => (x, y),
            Values::Mnist(d) => match (d.columns()[0].values(), d.columns()[1].values()) {
                (V::F32(x), V::Classes { values: y, .. }) => (x, y),
                _ => (&[], &[]),
            },
        }
    }

    /// Batch `k` (cycled) of `batch` samples.
    fn batch(&self, k: usize, batch: usize) -> (&[f32], &[u32]) {
        let (x, y) = self.all();
        let k = k % (y.len() / self.label_width / batch).max(1);
        let (i, l) = (self.input_width * batch, self.label_width * batch);
        (&x[k * i..(k + 1) * i], &y[k * l..(k + 1) * l])
    }
}

/// The MNIST training images as the peers hold them: f32 pixels in [0, 1]
/// and u32 labels.
fn mnist() -> anyhow::Result<Data> {
    let dir = repo().join("data/mnist-10k");
    let data = nnc::runtime::data::load_mnist(&dir)
        .with_context(|| format!("loading MNIST from {}", dir.display()))?;
    let data = Data {
        values: Values::Mnist(data.train),
        input_width: 784,
        label_width: 1,
    };
    if data.all().1.is_empty() {
        bail!("MNIST is not images and classes");
    }
    Ok(data)
}

/// [`SEQUENCE_BATCHES`] batches of digit sequences of the model's length,
/// each labelled with its reverse.
fn sequences(w: &Workload) -> anyhow::Result<Data> {
    let t = w
        .spec
        .inputs
        .first()
        .map(|i| i.per_sample)
        .context("the model has no input")?;
    let n = SEQUENCE_BATCHES * w.batch();
    let (tokens, labels) = reversed_sequences(&mut Rng::new(0), n, t, 10);
    Ok(Data {
        values: Values::Owned(tokens.iter().map(|&d| d as f32).collect(), labels),
        input_width: t,
        label_width: t,
    })
}

/// Runs in the child: one measurement of `w` at `threads` threads.
pub fn child(w: &Workload, threads: usize, args: &Args) -> anyhow::Result<Value> {
    let data = match w.task {
        Task::TrainSequences => sequences(w)?,
        _ => mnist()?,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut out = pool.install(|| match w.task {
        Task::Predict { batch } => predict(w, &data, batch, args),
        _ => train(w, &data, args),
    })?;
    out["workload"] = json!(w.id);
    out["threads"] = json!(threads);
    out["peak_rss_mb"] = json!(peak_rss_mb());
    Ok(out)
}

/// Model construction, the first step, warm-up, then timed steps (forward,
/// backward, Adam) through the `Trainer` `fit` uses.
fn train(w: &Workload, data: &Data, args: &Args) -> anyhow::Result<Value> {
    let batch = w.batch();
    let warmup = if args.quick { 2 } else { 20 };
    train_model(w.id, || w.model(batch), batch, warmup, data, args)
}

/// [`train`] of the model `make` builds, at `batch`, after `warmup` steps.
fn train_model(
    id: &str,
    make: impl FnOnce() -> Box<dyn Model>,
    batch: usize,
    warmup: usize,
    data: &Data,
    args: &Args,
) -> anyhow::Result<Value> {
    let start = Instant::now();
    let mut model = make();
    let mut trainer = Trainer::single(&*model, batch, u64::MAX, args.parallel)?;
    let mut step = |i: usize, model: &mut Box<dyn Model>| -> anyhow::Result<f32> {
        let (x, y) = data.batch(i, batch);
        let (xs, ys) = ([x], [y]);
        let batch = Batch {
            inputs: &xs,
            labels: &ys,
        };
        Ok(trainer.step(&mut **model, &batch)?)
    };
    let first_loss = step(0, &mut model)?;
    let first_step_s = start.elapsed().as_secs_f64();
    for i in 1..=warmup {
        step(i, &mut model)?;
    }
    let seconds = if args.quick { 0.0 } else { args.seconds };
    let timed = Instant::now();
    let mut steps = 0usize;
    let mut loss = first_loss;
    let least = if args.quick { 1 } else { 3 };
    while steps < least || timed.elapsed().as_secs_f64() < seconds {
        loss = step(warmup + 1 + steps, &mut model)?;
        steps += 1;
    }
    let elapsed = timed.elapsed().as_secs_f64();
    if !loss.is_finite() {
        bail!("{id}: training diverged (loss {loss})");
    }
    Ok(json!({
        "samples_per_s": (steps * batch) as f64 / elapsed,
        "first_step_s": first_step_s,
        "steps_timed": steps,
        "first_loss": first_loss,
        "final_loss": loss,
        "mode": format!("{:?}", trainer.mode()),
    }))
}

/// Runs in the child: one point of the scaling series, W2's MLP at hidden
/// width `width` and batch `batch` on `threads` threads. Warm-up is 3
/// steps (a step at width 4096 or batch 2048 takes most of a second).
pub fn scaling_child(
    width: usize,
    batch: usize,
    threads: usize,
    args: &Args,
) -> anyhow::Result<Value> {
    let data = mnist()?;
    let (x, _) = data.all();
    if x.len() / 784 < batch {
        bail!(
            "batch {batch} is more than the {} MNIST images",
            x.len() / 784
        );
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let warmup = if args.quick { 1 } else { 3 };
    let id = format!("W2 width {width} batch {batch}");
    let mut out = pool.install(|| {
        let (model, _) = wide_mlp(width, batch)?;
        train_model(&id, || model, batch, warmup, &data, args)
    })?;
    out["width"] = json!(width);
    out["batch"] = json!(batch);
    out["threads"] = json!(threads);
    out["peak_rss_mb"] = json!(peak_rss_mb());
    Ok(out)
}

/// Model construction and the first call, warm-up, then timed `predict`
/// calls one by one: at least `--calls` at batch 1, else for `--seconds`.
/// The weights are the model's seeded initial values (speed does not
/// depend on them).
fn predict(w: &Workload, data: &Data, batch: usize, args: &Args) -> anyhow::Result<Value> {
    let start = Instant::now();
    let mut model = w.model(batch);
    let widths: Vec<usize> = w.spec.outputs.iter().map(|o| o.per_sample).collect();
    let mut buffers: Vec<Vec<f32>> = widths.iter().map(|&n| vec![0.0; n * batch]).collect();
    // The output slices are gathered once: a call allocates nothing, as a
    // user's serving loop would not.
    let mut outs: Vec<&mut [f32]> = buffers.iter_mut().map(Vec::as_mut_slice).collect();
    let mut call = |i: usize| -> anyhow::Result<()> {
        let (x, _) = data.batch(i, batch);
        model.predict(&[x], &mut outs)?;
        Ok(())
    };
    call(0)?;
    let first_step_s = start.elapsed().as_secs_f64();
    let warmup = if args.quick { 2 } else { 100 };
    for i in 1..=warmup {
        call(i)?;
    }
    let (calls, seconds) = if args.quick {
        (3, 0.0)
    } else if batch == 1 {
        (args.calls.max(1), 0.0)
    } else {
        (10, args.seconds)
    };
    let mut latencies = Vec::with_capacity(calls.max(1024));
    let timed = Instant::now();
    while latencies.len() < calls || timed.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        call(warmup + 1 + latencies.len())?;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let elapsed = timed.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Ok(json!({
        "samples_per_s": (latencies.len() * batch) as f64 / elapsed,
        "latency_median_us": at(0.5),
        "latency_p99_us": at(0.99),
        "first_step_s": first_step_s,
        "steps_timed": latencies.len(),
        "mode": "predict",
    }))
}

/// The process's peak resident set (VmHWM), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
