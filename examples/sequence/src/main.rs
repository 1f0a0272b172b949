//! Trains the transformer of `examples/models/transformer.nn` (2 pre-LN
//! blocks, 4 heads, width 64), compiled by nnc in this crate's build
//! script, to reverse sequences of 16 digits generated in code from a
//! seeded generator, and reports token accuracy on held-out sequences.
//!
//! The data is two named columns, `tokens` and `target`, matched to the
//! model's input and label by name; `fit` does the rest (Adam with the
//! `train` block's warmup and cosine schedule, token accuracy on the
//! held-out set after every epoch).
//!
//! ```sh
//! cargo run --release -p sequence
//! ```

#![deny(warnings)]

use anyhow::Context;
use clap::Parser;
use nnc::runtime::data::synthetic::reversed_sequences;
use nnc::runtime::data::{Column, Dataset};
use nnc::runtime::rng::Rng;
use nnc::runtime::{evaluate, fit, FitOptions, TrainData};

mod transformer {
    nnc::include_model!("transformer");
}
use transformer::Transformer;

/// Tokens per sequence (the model's `class[batch, 16]`).
const LEN: usize = 16;
/// Distinct digits.
const DIGITS: u32 = 10;

/// Train the nnc-compiled transformer to reverse digit sequences.
#[derive(Parser)]
struct Args {
    /// Passes over the training set (default: the train block's epochs).
    #[arg(long)]
    epochs: Option<u64>,
    /// Training sequences.
    #[arg(long, default_value_t = 8192)]
    train: usize,
    /// Held-out sequences (a separate stream of the generator).
    #[arg(long, default_value_t = 2048)]
    test: usize,
    /// Seed of the data generator (the model's own seed initialises it).
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// `n` random digit sequences (`tokens`) and their reversals (`target`).
fn sequences(rng: &mut Rng, n: usize) -> anyhow::Result<Dataset> {
    let (x, y) = reversed_sequences(rng, n, LEN, DIGITS);
    Ok(Dataset::new(vec![
        Column::classes("tokens", &[LEN], x, DIGITS),
        Column::classes("target", &[LEN], y, DIGITS),
    ])?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut model = Transformer::default();
    let train = sequences(&mut Rng::new(args.seed), args.train)?;
    let test = sequences(&mut Rng::new(args.seed ^ 0x005E_ED0F_7E57), args.test)?;
    println!(
        "transformer: {} parameters, {} training and {} held-out sequences of {LEN} digits",
        transformer::TRANSFORMER_SPEC.param_count,
        args.train,
        args.test
    );
    let opts = FitOptions {
        epochs: args.epochs,
        ..FitOptions::default()
    };
    fit(
        &mut model,
        &TrainData::new(&train).with_validation(&test),
        &opts,
    )
    .context("training")?;
    let eval = evaluate(&mut model, &test)?;
    println!(
        "final held-out token accuracy {:.2}% on {} sequences",
        100.0 * eval.accuracy().unwrap_or(0.0),
        args.test
    );
    Ok(())
}
