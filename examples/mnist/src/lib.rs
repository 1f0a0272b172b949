//! The MNIST example's training run, shared by its two binaries: `mnist`,
//! the one users run (`src/main.rs`), and `mpi-fault`, a test-only wrapper
//! that injects failures into an MPI job for `tests/mpi.rs`
//! (`src/bin/mpi-fault.rs`, built only with feature `mpi`). Keeping the
//! fault hooks in a binary of their own keeps them out of `mnist --help`
//! and out of the user's binary altogether. The int8 measurements
//! (`src/bin/int8.rs`, `src/bin/int8-serve.rs`) share [`int8`].
//!
//! The networks — `examples/models/mnist_mlp.nn`, LeNet-5 of
//! `examples/models/lenet.nn` and the batch norm + dropout MLP of
//! `examples/models/mnist_bn_dropout.nn` — are compiled by nnc in this
//! crate's build script.

#![deny(warnings)]

use anyhow::Context;
use nnc::runtime::collective::{Collective, Local};
use nnc::runtime::data::load_mnist;
use nnc::runtime::parallel::Strategy;
use nnc::runtime::train::fit_with;
use nnc::runtime::{evaluate, BatchSpec, FitOptions, Model, TrainData};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[cfg(feature = "mpi")]
pub mod distributed;
pub mod int8;

// Each model in its own module: generated kernels are free functions.
mod mlp {
    nnc::include_model!("mnist_mlp");
}
mod lenet {
    nnc::include_model!("lenet");
}
mod bn_dropout {
    nnc::include_model!("mnist_bn_dropout");
}

/// The compiled networks this example trains.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Net {
    /// 784 → 128 → 128 → 10 MLP (examples/models/mnist_mlp.nn).
    Mlp,
    /// LeNet-5 (examples/models/lenet.nn).
    Lenet,
    /// 784 → 256 → 128 → 10 MLP with batch norm and dropout
    /// (examples/models/mnist_bn_dropout.nn).
    BnDropout,
}

/// The options of a training run: every flag of `mnist`. The doc comments
/// of the fields are its `--help`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Which network to train.
    #[arg(long, value_enum, default_value = "mlp")]
    pub model: Net,
    /// Directory with the four MNIST IDX files (gzip or raw). Defaults to the
    /// bundled subset in data/mnist-10k.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Epochs (default: the model's train block).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Mini-batch size (default: the model's train block).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Fraction of the training set held out for validation, in [0, 1);
    /// 0 trains on all of it without validation.
    #[arg(long, default_value_t = 0.1)]
    pub validation: f64,
    /// Write last.safetensors and best.safetensors here after every epoch.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from a checkpoint written by --checkpoint-dir.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
    /// Threads for training (default: one per core, or RAYON_NUM_THREADS).
    /// More than 4 per core only oversubscribes the machine: larger values
    /// are capped at 4 per core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// How a step uses the threads: auto, data, data:N (N shards) or
    /// intra-op. Results are bit-identical for any --threads.
    #[arg(long, default_value = "auto")]
    pub parallel: Strategy,
    /// Stop after this many optimizer steps in total (a checkpoint is
    /// written if --checkpoint-dir is given; --resume continues the run).
    #[arg(long)]
    pub max_steps: Option<u64>,
}

/// The processes of this run: the MPI job when started by an MPI launcher
/// (and built with feature `mpi`), else this process alone.
fn collective() -> anyhow::Result<Box<dyn Collective>> {
    #[cfg(feature = "mpi")]
    if nnc::runtime::collective::Mpi::launched() {
        return Ok(Box::new(nnc::runtime::collective::Mpi::init()?));
    }
    Ok(Box::new(Local))
}

/// Joins the run's processes, runs `job` on them and turns its outcome into
/// the exit status. An error on one of several ranks aborts the whole job:
/// the other ranks may be waiting for this one in a collective, and must not
/// be left hanging.
pub fn main_with(job: impl FnOnce(&dyn Collective) -> anyhow::Result<()>) -> ExitCode {
    let comm = match collective() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match job(comm.as_ref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if comm.size() > 1 => {
            eprintln!("error on rank {}: {e:#}", comm.rank());
            comm.abort(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Trains `args.model` on this rank of `comm`, then evaluates it on the test
/// set; rank 0 prints the summary. `before_fit` runs once the data and the
/// model are ready, right before training starts (the test binary's fault
/// hook; `mnist` passes a no-op).
pub fn run(
    args: TrainArgs,
    comm: &dyn Collective,
    before_fit: impl FnOnce(),
) -> anyhow::Result<()> {
    let lead = comm.rank() == 0;
    let dir = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k"));
    let mnist =
        load_mnist(&dir).with_context(|| format!("loading MNIST from {}", dir.display()))?;
    // The same 784 pixels per digit feed a row for the MLP and one 28x28
    // channel for LeNet: columns match inputs by their element count.
    let spec = match args.model {
        Net::Mlp => &mlp::MNIST_MLP_SPEC,
        Net::Lenet => &lenet::LE_NET_SPEC,
        Net::BnDropout => &bn_dropout::MNIST_BN_DROPOUT_SPEC,
    };
    let test = mnist.test;
    let (train, validation) = if args.validation == 0.0 {
        (mnist.train, None)
    } else {
        let (t, v) =
            nnc::runtime::train::split_validation(&mnist.train, args.validation, spec.train.seed)?;
        (t, Some(v))
    };

    // A batch larger than the data trains on all of it at once (`fit` caps
    // it the same way): no buffer is sized for rows that never come.
    let batch = args
        .batch
        .unwrap_or(match spec.train.batch {
            BatchSpec::Size(n) => n,
            BatchSpec::Full => train.len(),
        })
        .min(train.len());
    let mut model: Box<dyn Model> = match args.model {
        // A batch from the command line may not fit in memory: an error.
        Net::Mlp => Box::new(mlp::MnistMlp::try_new(batch)?),
        Net::Lenet => Box::new(lenet::LeNet::try_new(batch)?),
        Net::BnDropout => Box::new(bn_dropout::MnistBnDropout::try_new(batch)?),
    };
    if lead {
        println!(
        "{} from {}: {} parameters; {} training, {} validation, {} test digits from {}; {} rank(s)",
        spec.name,
        spec.source,
        model.params().len(),
        train.len(),
        validation.as_ref().map_or(0, |v| v.len()),
        test.len(),
        dir.display(),
        comm.size()
    );
    }
    let opts = FitOptions {
        epochs: args.epochs,
        batch: args.batch.map(BatchSpec::Size),
        checkpoint_dir: args.checkpoint_dir,
        resume: args.resume,
        progress: !args.quiet,
        verbose: !args.quiet,
        max_steps: args.max_steps,
        threads: args.threads,
        parallel: args.parallel,
        ..FitOptions::default()
    };
    before_fit();
    let start = Instant::now();
    let data = match &validation {
        Some(v) => TrainData::new(&train).with_validation(v),
        None => TrainData::new(&train),
    };
    let history = fit_with(model.as_mut(), &data, &opts, comm)?;
    let elapsed = start.elapsed().as_secs_f64();
    let eval = evaluate(model.as_mut(), &test)?;
    if !lead {
        return Ok(());
    }
    // The samples this run stepped through (not steps x batch: the last
    // batch of an epoch, or a batch larger than the data, is smaller).
    println!(
        "trained {} epochs ({} steps, {} samples) in {elapsed:.2} s, {:.0} samples/s",
        history.epochs.len(),
        history.steps,
        history.samples,
        history.samples as f64 / elapsed
    );
    println!(
        "test: loss {:.4}, accuracy {:.2}%",
        eval.loss,
        100.0 * eval.accuracy().unwrap_or(f64::NAN)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use nnc::runtime::StepError;

    /// A batch whose workspace overflows the address space (2^64 − 1) is
    /// an error from the generated `try_new`, never a panic. (A batch that
    /// only the allocator refuses is refused when the first step sizes the
    /// workspace; the binary never asks for one: it caps the batch at the
    /// data, tests/batch.rs.)
    #[test]
    fn try_new_refuses_a_batch_that_overflows_the_address_space() {
        match super::lenet::LeNet::try_new(usize::MAX) {
            Err(StepError::Memory { what, .. }) => assert_eq!(what, "workspace"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a batch of 2^64 - 1 allocated"),
        }
    }
}
