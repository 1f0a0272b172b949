//! The MNIST classifier of `examples/models/mnist_mlp.nn`, declared inside
//! this file with `nnc::network!` — no build script, no `.nn` file — and
//! trained on the bundled 10,000-digit MNIST subset, or on the full
//! 60,000-digit set with `--data DIR`.
//!
//! ```sh
//! cargo run --release -p nnc-example-mnist-macro
//! ```
//!
//! The macro expands to the code `nnc compile` emits for the same text; a
//! mistake in the model (a wrong shape, an unknown name) is a `cargo build`
//! error on the offending tokens.

#![deny(warnings)]

use anyhow::Context;
use clap::Parser;
use nnc::runtime::data::load_mnist;
use nnc::runtime::{evaluate, fit, BatchSpec, FitOptions, Model, TrainData};
use std::path::PathBuf;
use std::time::Instant;

nnc::network! {
    // The classic MNIST classifier: 784 → 128 → 128 → 10, ReLU, Adam,
    // sparse categorical cross-entropy.
    network MnistMlp {
        input  image: f32[batch, 784];
        label  digit: class[batch] of 10;

        h1     = dense(image, 128) |> relu;
        h2     = dense(h1, 128) |> relu;
        logits = dense(h2, 10);

        output probs = softmax(logits);
        loss   cross_entropy(logits, digit);
    }

    train MnistMlp {
        optimizer: adam(lr: 1e-3);
        batch: 128;
        epochs: 10;
        seed: 42;
    }
}

/// Train the MNIST classifier declared with `nnc::network!`.
#[derive(Parser)]
struct Args {
    /// Directory with the four MNIST IDX files (gzip or raw). Defaults to the
    /// bundled subset in data/mnist-10k.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Epochs (default: the model's train block).
    #[arg(long)]
    epochs: Option<u64>,
    /// Fraction of the training set held out for validation.
    #[arg(long, default_value_t = 0.1)]
    validation: f64,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k"));
    let mnist =
        load_mnist(&dir).with_context(|| format!("loading MNIST from {}", dir.display()))?;
    let train = mnist.train;
    let test = mnist.test;
    let spec = &MNIST_MLP_SPEC;
    let (train, validation) =
        nnc::runtime::train::split_validation(&train, args.validation, spec.train.seed)?;

    let batch = match spec.train.batch {
        BatchSpec::Size(n) => n,
        BatchSpec::Full => train.len(),
    };
    let mut model = MnistMlp::new(batch);
    println!(
        "{} (declared with network! in {}): {} parameters; {} training, {} validation, {} test digits",
        spec.name,
        spec.source,
        model.params().len(),
        train.len(),
        validation.len(),
        test.len(),
    );
    let opts = FitOptions {
        epochs: args.epochs,
        progress: !args.quiet,
        verbose: !args.quiet,
        ..FitOptions::default()
    };
    let start = Instant::now();
    let history = fit(
        &mut model,
        &TrainData::new(&train).with_validation(&validation),
        &opts,
    )?;
    let elapsed = start.elapsed().as_secs_f64();
    let eval = evaluate(&mut model, &test)?;
    println!(
        "trained {} epochs ({} steps) in {elapsed:.2} s",
        history.epochs.len(),
        history.steps,
    );
    println!(
        "test: loss {:.4}, accuracy {:.2}%",
        eval.loss,
        100.0 * eval.accuracy().unwrap_or(f64::NAN)
    );
    Ok(())
}
