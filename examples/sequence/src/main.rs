//! Trains the transformer of `examples/models/transformer.nn` (2 pre-LN
//! blocks, 4 heads, width 64), compiled by nnc in this crate's build
//! script, to reverse sequences of 16 digits generated in code from a
//! seeded generator, and reports token accuracy on held-out sequences.
//!
//! ```sh
//! cargo run --release -p sequence
//! ```

#![deny(warnings)]

use anyhow::{anyhow, Context};
use clap::Parser;
use nnc::runtime::kernels::with_parallel_gemm;
use nnc::runtime::rng::Rng;
use nnc::runtime::{Batch, Model};
use std::time::Instant;

mod transformer {
    nnc::include_model!("transformer");
}
use transformer::Transformer;

/// Tokens per sequence (the model's `class[batch, 16]`).
const LEN: usize = 16;
/// Distinct digits.
const DIGITS: u64 = 10;

/// Train the nnc-compiled transformer to reverse digit sequences.
#[derive(Parser)]
struct Args {
    /// Optimizer steps (default: the train block's epochs × steps per epoch).
    #[arg(long)]
    steps: Option<u64>,
    /// Training sequences per epoch, drawn fresh each epoch.
    #[arg(long, default_value_t = 8192)]
    train: usize,
    /// Held-out sequences (a separate stream of the generator).
    #[arg(long, default_value_t = 2048)]
    test: usize,
    /// Seed of the data generator (the model's own seed initialises it).
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// `n` random digit sequences and their reversals, flattened row-major.
fn sequences(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::with_capacity(n * LEN);
    let mut y = vec![0u32; n * LEN];
    for s in 0..n {
        for i in 0..LEN {
            let d = rng.below(DIGITS) as u32;
            x.push(d as f32);
            y[s * LEN + LEN - 1 - i] = d;
        }
    }
    (x, y)
}

/// Token accuracy of `model` on `(x, y)`, predicting in batches of `bs`.
fn accuracy(model: &mut Transformer, x: &[f32], y: &[u32], bs: usize) -> anyhow::Result<f64> {
    let mut logits = vec![0f32; bs * LEN * DIGITS as usize];
    let mut correct = 0usize;
    for (xb, yb) in x.chunks(bs * LEN).zip(y.chunks(bs * LEN)) {
        let n = xb.len() / LEN;
        let out = &mut logits[..n * LEN * DIGITS as usize];
        model.predict(xb, out)?;
        for (row, &label) in out.chunks_exact(DIGITS as usize).zip(yb) {
            let argmax = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0;
            correct += usize::from(argmax as u32 == label);
        }
    }
    Ok(correct as f64 / y.len().max(1) as f64)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec = &transformer::TRANSFORMER_SPEC;
    let bs = match spec.train.batch {
        nnc::runtime::BatchSpec::Size(b) => b,
        nnc::runtime::BatchSpec::Full => args.train,
    };
    let per_epoch = args.train.div_ceil(bs) as u64;
    let steps = args.steps.unwrap_or(spec.train.epochs * per_epoch);
    let mut model = Transformer::new(bs);
    model
        .init_params(spec.train.seed)
        .map_err(|e| anyhow!("{e}"))?;
    let mut opt = spec
        .train
        .optimizer
        .build(model.params().len())
        .map_err(|e| anyhow!("{e}"))?;
    let schedule = spec.train.schedule(steps);
    // The gradients are copied out so the optimizer can borrow the
    // parameters mutably (one preallocated buffer).
    let mut grads = vec![0f32; spec.param_count];
    let mut data = Rng::new(args.seed);
    let mut held_out_rng = Rng::new(args.seed ^ 0x005E_ED0F_7E57);
    let (test_x, test_y) = sequences(&mut held_out_rng, args.test);
    println!(
        "transformer: {} parameters, batch {bs}, {steps} steps of Adam (lr {}), {} training sequences per epoch",
        spec.param_count, spec.train.lr, args.train
    );
    let start = Instant::now();
    let mut step = 0u64;
    let mut epoch = 0;
    while step < steps {
        epoch += 1;
        let (x, y) = sequences(&mut data, args.train);
        let mut total = 0.0f64;
        let mut batches = 0usize;
        for (xb, yb) in x.chunks(bs * LEN).zip(y.chunks(bs * LEN)) {
            if step == steps {
                break;
            }
            let loss = with_parallel_gemm(|| {
                Model::train_step(
                    &mut model,
                    &Batch {
                        inputs: &[xb],
                        labels: &[yb],
                    },
                )
            })
            .context("training step")?;
            let lr = schedule.lr_at(spec.train.lr, step);
            grads.copy_from_slice(model.grads());
            opt.step(model.params_mut(), &grads, lr)
                .map_err(|e| anyhow!("{e}"))?;
            total += f64::from(loss);
            batches += 1;
            step += 1;
        }
        let acc = accuracy(&mut model, &test_x, &test_y, bs)?;
        println!(
            "epoch {epoch:>2}  step {step:>5}  train loss {:.4}  held-out token accuracy {:.2}%  ({:.1} s)",
            total / batches.max(1) as f64,
            100.0 * acc,
            start.elapsed().as_secs_f64()
        );
    }
    let acc = accuracy(&mut model, &test_x, &test_y, bs)?;
    println!(
        "final held-out token accuracy {:.2}% on {} sequences of {LEN} digits after {step} steps, {:.1} s",
        100.0 * acc,
        args.test,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
