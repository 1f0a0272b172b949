//! Post-training int8 quantization of the MNIST MLP and LeNet, measured:
//! trains each (f32, its `train` block's settings), calibrates on 300
//! training digits spread evenly over the set (as `nnc compile --calibrate`
//! and `int8-serve` do), quantizes (`quantize_int8`, generated from
//! `nnc compile --quantize int8`'s plan), saves and reloads the quantized
//! weights, and prints f32 and int8 test accuracy, the weights files'
//! sizes, the largest output difference, and the batch-256 inference
//! speed of int8 against f32 `predict` on one thread: the median over
//! interleaved rounds of the calling thread's on-CPU time (robust against
//! other processes on a shared machine; still one run's ratio, not a
//! benchmark).
//!
//! ```sh
//! cargo run --release -p nnc-example-mnist --bin int8
//! ```

#![deny(warnings)]

use anyhow::Context;
use nnc::runtime::checkpoint::save_weights;
use nnc::runtime::data::{load_mnist, Dataset};
use nnc::runtime::quant::Int8Model;
use nnc::runtime::train::fit;
use nnc::runtime::{evaluate, FitOptions, Model, TrainData};
use nnc_example_mnist::int8::{
    accuracy, calibration_set, median, timed, BATCH, CALIBRATION, CLASSES,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod mlp {
    nnc::include_model!("mnist_mlp");
}
mod lenet {
    nnc::include_model!("lenet");
}

/// Timed rounds of the speed comparison.
const ROUNDS: usize = 7;
/// The least duration of one timed round (f32 side), in seconds.
const ROUND_SECS: f64 = 0.2;

struct Report {
    f32_acc: f64,
    int8_acc: f64,
    f32_bytes: u64,
    int8_bytes: u64,
    max_diff: f32,
    f32_secs: f64,
    int8_secs: f64,
    /// Batches per timed round (passes × test batches).
    batches: usize,
}

/// Measures one trained model against its int8 form (`quantize` from
/// calibration inputs, `load` from a saved file).
fn measure<M: Model>(
    model: &mut M,
    quantize: impl FnOnce(&M, &[f32]) -> anyhow::Result<Int8Model>,
    load: impl FnOnce(&Path) -> anyhow::Result<Int8Model>,
    train: &Dataset,
    test: &Dataset,
    dir: &Path,
) -> anyhow::Result<Report> {
    let f32_acc = evaluate(&mut *model, test)?.accuracy().unwrap_or(f64::NAN);
    let q = quantize(&*model, &calibration_set(train)?)?;
    let f32_path = dir.join("f32.safetensors");
    let int8_path = dir.join("int8.safetensors");
    save_weights(&*model, &f32_path)?;
    q.save(&int8_path, &model.spec().params)?;
    let mut q = load(&int8_path)?;
    let x = test.f32_values("image").context("no image column")?;
    let labels = test.class_values("label").context("no digit column")?;
    let (classes, per) = (CLASSES, x.len() / test.len());
    let (mut yf, mut yq) = (
        vec![0.0; test.len() * classes],
        vec![0.0; test.len() * classes],
    );
    for (i, chunk) in x.chunks(BATCH * per).enumerate() {
        let b = chunk.len() / per;
        let range = i * BATCH * classes..(i * BATCH + b) * classes;
        Model::predict(model, &[chunk], &mut [&mut yf[range.clone()]])?;
        q.predict(chunk, &mut yq[range], b)?;
    }
    // Speed: whole batches only, on one thread, f32 and int8 alternating.
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let whole = &x[..x.len() / (BATCH * per) * BATCH * per];
    let (mut f32_times, mut int8_times) = (Vec::new(), Vec::new());
    let mut out = vec![0.0; BATCH * classes];
    // Passes over the test batches per round, so that a round lasts at
    // least ROUND_SECS: the kernel accounts a running thread's on-CPU time
    // in scheduler ticks (milliseconds), too coarse for one pass.
    let mut passes = 1;
    one.install(|| -> anyhow::Result<()> {
        let t = Instant::now();
        for chunk in whole.chunks(BATCH * per) {
            Model::predict(model, &[chunk], &mut [&mut out[..]])?;
        }
        passes = (ROUND_SECS / t.elapsed().as_secs_f64().max(1e-6)).ceil() as usize;
        for _ in 0..ROUNDS {
            f32_times.push(
                timed(&mut || {
                    for _ in 0..passes {
                        for chunk in whole.chunks(BATCH * per) {
                            Model::predict(model, &[chunk], &mut [&mut out[..]])?;
                        }
                    }
                    Ok(())
                })?
                .0,
            );
            int8_times.push(
                timed(&mut || {
                    for _ in 0..passes {
                        for chunk in whole.chunks(BATCH * per) {
                            q.predict(chunk, &mut out, BATCH)?;
                        }
                    }
                    Ok(())
                })?
                .0,
            );
        }
        Ok(())
    })?;
    let (f32_secs, int8_secs) = (median(f32_times), median(int8_times));
    let max_diff = yf
        .iter()
        .zip(&yq)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    Ok(Report {
        f32_acc,
        int8_acc: accuracy(&yq, labels),
        f32_bytes: std::fs::metadata(&f32_path)?.len(),
        int8_bytes: std::fs::metadata(&int8_path)?.len(),
        max_diff,
        f32_secs,
        int8_secs,
        batches: passes * whole.len() / (BATCH * per),
    })
}

fn main() -> anyhow::Result<()> {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k");
    let mnist = load_mnist(&data).with_context(|| format!("loading {}", data.display()))?;
    let dir = std::env::temp_dir().join(format!("nnc-int8-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let opts = FitOptions {
        progress: false,
        verbose: false,
        ..FitOptions::default()
    };
    let train = TrainData::new(&mnist.train);
    println!("int8 post-training quantization on {} ({} train, {} test digits; calibration: {CALIBRATION} train digits spread over the set; inference batch {BATCH}; int8 kernels: {})",
        data.display(), mnist.train.len(), mnist.test.len(), nnc::runtime::quant::kernel_family());
    println!("| model | f32 acc | int8 acc | Δ points | f32 file | int8 file | ratio | max |Δp| | int8 speed-up (1 thread) | f32 / int8 µs per batch |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut mlp = mlp::MnistMlp::try_new(BATCH)?;
    fit(&mut mlp, &train, &opts)?;
    let r = measure(
        &mut mlp,
        |m, c| Ok(m.quantize_int8(c, BATCH)?),
        |p| Ok(mlp::MnistMlp::load_int8(p)?),
        &mnist.train,
        &mnist.test,
        &dir,
    )?;
    row("MLP 784-128-128-10", &r);
    let mut lenet = lenet::LeNet::try_new(BATCH)?;
    fit(&mut lenet, &train, &opts)?;
    let r = measure(
        &mut lenet,
        |m, c| Ok(m.quantize_int8(c, BATCH)?),
        |p| Ok(lenet::LeNet::load_int8(p)?),
        &mnist.train,
        &mnist.test,
        &dir,
    )?;
    row("LeNet-5", &r);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn row(name: &str, r: &Report) {
    println!(
        "| {name} | {:.2}% | {:.2}% | {:+.2} | {} B | {} B | {:.3}x | {:.4} | {:.2}x | {:.0} / {:.0} |",
        100.0 * r.f32_acc,
        100.0 * r.int8_acc,
        100.0 * (r.int8_acc - r.f32_acc),
        r.f32_bytes,
        r.int8_bytes,
        r.int8_bytes as f64 / r.f32_bytes as f64,
        r.max_diff,
        r.f32_secs / r.int8_secs,
        r.f32_secs / r.batches as f64 * 1e6,
        r.int8_secs / r.batches as f64 * 1e6,
    );
}
