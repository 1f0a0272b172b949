//! Trains the MNIST classifier of `examples/models/mnist_mlp.nn` (or, with
//! `--model lenet`, the LeNet-5 of `examples/models/lenet.nn`; with
//! `--model bn-dropout`, the batch norm + dropout MLP of
//! `examples/models/mnist_bn_dropout.nn`) — compiled by
//! nnc in this crate's build script — on the bundled 10,000-digit MNIST
//! subset, or on the full 60,000-digit set with `--data DIR`.
//!
//! ```sh
//! cargo run --release -p nnc-example-mnist
//! cargo run --release -p nnc-example-mnist -- --model lenet
//! ```
//!
//! Built with `--features mpi` and started by `mpirun`, every rank joins
//! one data-parallel run (see `nnc::runtime::collective`); run plainly it
//! trains alone:
//!
//! ```sh
//! cargo build --release -p nnc-example-mnist --features mpi
//! mpirun -np 2 target/release/mnist --threads 1
//! ```

#![deny(warnings)]

use anyhow::Context;
use clap::Parser;
use nnc::runtime::collective::{Collective, Local};
use nnc::runtime::data::load_mnist;
use nnc::runtime::parallel::Strategy;
use nnc::runtime::train::fit_with;
use nnc::runtime::{evaluate, BatchSpec, FitOptions, Model, TrainData};
use std::path::PathBuf;
use std::time::Instant;

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
enum Net {
    /// 784 → 128 → 128 → 10 MLP (examples/models/mnist_mlp.nn).
    Mlp,
    /// LeNet-5 (examples/models/lenet.nn).
    Lenet,
    /// 784 → 256 → 128 → 10 MLP with batch norm and dropout
    /// (examples/models/mnist_bn_dropout.nn).
    BnDropout,
}

/// Train the nnc-compiled MNIST classifier (784 → 128 → 128 → 10, Adam).
#[derive(Parser)]
struct Args {
    /// Which network to train.
    #[arg(long, value_enum, default_value = "mlp")]
    model: Net,
    /// Directory with the four MNIST IDX files (gzip or raw). Defaults to the
    /// bundled subset in data/mnist-10k.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Epochs (default: the model's train block).
    #[arg(long)]
    epochs: Option<u64>,
    /// Mini-batch size (default: the model's train block).
    #[arg(long)]
    batch: Option<usize>,
    /// Fraction of the training set held out for validation.
    #[arg(long, default_value_t = 0.1)]
    validation: f64,
    /// Write last.safetensors and best.safetensors here after every epoch.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Continue from a checkpoint written by --checkpoint-dir.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    quiet: bool,
    /// Threads for training (default: one per core, or RAYON_NUM_THREADS).
    #[arg(long)]
    threads: Option<usize>,
    /// How a step uses the threads: auto, data, data:N (N shards) or
    /// intra-op. Results are bit-identical for any --threads.
    #[arg(long, default_value = "auto")]
    parallel: Strategy,
    /// Stop after this many optimizer steps in total (a checkpoint is
    /// written if --checkpoint-dir is given; --resume continues the run).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Test hook: this rank exits abruptly (status 3, without leaving MPI
    /// cleanly) `--test-die-after-ms` after training starts.
    #[arg(long, hide = true)]
    test_die_rank: Option<usize>,
    /// Test hook: milliseconds before `--test-die-rank` exits.
    #[arg(long, hide = true, default_value_t = 1000)]
    test_die_after_ms: u64,
    /// Test hook: the last rank trains this network instead of --model.
    #[arg(long, hide = true, value_enum)]
    test_last_rank_model: Option<Net>,
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

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let comm = match collective() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match run(args, comm.as_ref()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if comm.size() > 1 => {
            eprintln!("error on rank {}: {e:#}", comm.rank());
            // The other ranks may be waiting for this one in a collective:
            // end the whole job rather than leave them hanging.
            comm.abort(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args, comm: &dyn Collective) -> anyhow::Result<()> {
    let lead = comm.rank() == 0;
    let net = match args.test_last_rank_model {
        Some(other) if comm.size() > 1 && comm.rank() + 1 == comm.size() => other,
        _ => args.model,
    };
    let dir = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k"));
    let mnist =
        load_mnist(&dir).with_context(|| format!("loading MNIST from {}", dir.display()))?;
    // The same 784 pixels per digit: a row for the MLP, one 28x28 channel
    // for LeNet.
    let (spec, shape) = match net {
        Net::Mlp => (&mlp::MNIST_MLP_SPEC, vec![784]),
        Net::Lenet => (&lenet::LE_NET_SPEC, vec![1, 28, 28]),
        Net::BnDropout => (&bn_dropout::MNIST_BN_DROPOUT_SPEC, vec![784]),
    };
    let train = mnist.train.with_sample_shape(shape.clone())?;
    let test = mnist.test.with_sample_shape(shape)?;
    let (train, validation) =
        nnc::runtime::train::split_validation(&train, args.validation, spec.train.seed)?;

    let batch = args.batch.unwrap_or(match spec.train.batch {
        BatchSpec::Size(n) => n,
        BatchSpec::Full => train.len(),
    });
    let mut model: Box<dyn Model> = match net {
        Net::Mlp => Box::new(mlp::MnistMlp::new(batch)),
        Net::Lenet => Box::new(lenet::LeNet::new(batch)),
        Net::BnDropout => Box::new(bn_dropout::MnistBnDropout::new(batch)),
    };
    if lead {
        println!(
        "{} from {}: {} parameters; {} training, {} validation, {} test digits from {}; {} rank(s)",
        spec.name,
        spec.source,
        model.params().len(),
        train.len(),
        validation.len(),
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
    if args.test_die_rank == Some(comm.rank()) {
        let after = std::time::Duration::from_millis(args.test_die_after_ms);
        std::thread::spawn(move || {
            std::thread::sleep(after);
            eprintln!("test hook: rank exits abruptly");
            std::process::exit(3);
        });
    }
    let start = Instant::now();
    let history = fit_with(
        model.as_mut(),
        &TrainData::new(&train).with_validation(&validation),
        &opts,
        comm,
    )?;
    let elapsed = start.elapsed().as_secs_f64();
    let eval = evaluate(model.as_mut(), &test)?;
    let samples = history.steps as f64 * batch as f64;
    if !lead {
        return Ok(());
    }
    println!(
        "trained {} epochs ({} steps) in {elapsed:.2} s, {:.0} samples/s",
        history.epochs.len(),
        history.steps,
        samples / elapsed
    );
    println!(
        "test: loss {:.4}, accuracy {:.2}%",
        eval.loss,
        100.0 * eval.accuracy.unwrap_or(f64::NAN)
    );
    Ok(())
}
