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

use clap::Parser;
use nnc_example_mnist::{main_with, run, TrainArgs};

/// Train the nnc-compiled MNIST classifier (784 → 128 → 128 → 10, Adam).
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    train: TrainArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    main_with(|comm| run(args.train, comm, || {}))
}
