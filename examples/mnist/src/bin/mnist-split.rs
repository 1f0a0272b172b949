//! `examples/models/mnist_split.nn` (the MNIST MLP with `h1` split by
//! columns and `h2` by rows) trained by the split-layer driver
//! (`nnc::runtime::split`): under `mpirun -np 2` one shard per rank,
//! started alone both shards in this process, or with `--whole` the
//! unsplit network (the reference). Trains `--steps` Adam steps on the
//! first batches of the bundled MNIST subset in order and, with `--out P`,
//! rank 0 writes the losses (`P.losses`) and the whole network's
//! parameters assembled from the slices (`P.params`) as f32 bit patterns,
//! one a line, for `tests/mpi.rs` to compare. Built only with feature `mpi`.

#![deny(warnings)]

use anyhow::{bail, Context};
use clap::Parser;
use nnc::runtime::collective::{Collective, Local, Mpi};
use nnc::runtime::data::{load_mnist, Values};
use nnc::runtime::split::{place_params, slice_params, SplitLayers};
use nnc::runtime::{Batch, Model};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

mod net {
    nnc::include_model!("mnist_split");
}
use net::{MnistSplit, MnistSplitShard, MnistSplitTail};

/// The ranks `mnist_split.nn` is split for (`split_ranks: 2`).
const RANKS: usize = 2;

/// Split-layer training of the MNIST MLP across two ranks.
#[derive(Parser)]
struct Args {
    /// Global batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Adam steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Train the unsplit network instead.
    #[arg(long)]
    whole: bool,
    /// Write losses and parameters under this path prefix.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Test hook: the last rank believes the network is split across this
    /// many ranks (a different split layout).
    #[arg(long, hide = true)]
    test_last_rank_ranks: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if Mpi::launched() {
        match Mpi::init() {
            Ok(mpi) => run(&args, &mpi).map_err(|e| (e, mpi.size() > 1, Some(mpi))),
            Err(e) => Err((e.into(), false, None)),
        }
    } else {
        run(&args, &Local).map_err(|e| (e, false, None))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, true, Some(mpi))) => {
            eprintln!("error on rank {}: {e:#}", mpi.rank());
            mpi.abort(1)
        }
        Err((e, _, _)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `values` as f32 bit patterns, one a line.
fn write_bits(path: PathBuf, values: &[f32]) -> anyhow::Result<()> {
    let text: String = values
        .iter()
        .map(|v| format!("{:08x}\n", v.to_bits()))
        .collect();
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn run(args: &Args, comm: &dyn Collective) -> anyhow::Result<()> {
    let (rank, size) = (comm.rank(), comm.size());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k");
    let mnist =
        load_mnist(&dir).with_context(|| format!("loading MNIST from {}", dir.display()))?;
    let (Some(images), Some(labels)) = (mnist.train.column("image"), mnist.train.column("label"))
    else {
        bail!("MNIST without image and label columns");
    };
    let (Values::F32(images), Values::Classes { values: labels, .. }) =
        (images.values(), labels.values())
    else {
        bail!("MNIST columns of unexpected types");
    };
    let b = args.batch;
    if b == 0 || args.steps.checked_mul(b).is_none_or(|n| n > labels.len()) {
        bail!(
            "--steps × --batch must be between 1 and {} samples",
            labels.len()
        );
    }
    let batch = |step: usize| {
        (
            &images[step * b * 784..][..b * 784],
            &labels[step * b..][..b],
        )
    };
    // Every rank starts from the same parameters: the whole network's
    // initialisation, each rank taking its slices.
    let mut whole = MnistSplit::try_new(b)?;
    whole.init_params(whole.spec().train.seed)?;
    let lr = whole.spec().train.lr;
    let mut losses = Vec::with_capacity(args.steps);
    let began = Instant::now();
    if args.whole {
        let mut opt =
            nnc::runtime::optim::build(&whole.spec().train.optimizer, whole.spec().param_count)?;
        for step in 0..args.steps {
            let (x, y) = batch(step);
            let loss = Model::train_step(
                &mut whole,
                &Batch {
                    inputs: &[x],
                    labels: &[y],
                },
            )?;
            let grads = whole.grads().to_vec();
            opt.step(whole.params_mut(), &grads, lr)?;
            losses.push(loss);
        }
        println!(
            "whole network: {:.2} ms a step",
            1e3 * began.elapsed().as_secs_f64() / args.steps as f64
        );
        return finish(args, &losses, whole.params());
    }
    let ranks = match args.test_last_rank_ranks {
        Some(r) if rank + 1 == size && size > 1 => r,
        _ => RANKS,
    };
    let mut s0 = MnistSplitShard::try_new(b)?;
    let mut s1 = MnistSplitShard::try_new(b)?;
    let mut tail = MnistSplitTail::try_new(b)?;
    slice_params(&whole, &mut tail, 0, RANKS)?;
    let mine: Vec<(usize, &mut dyn Model)> = match size {
        1 => vec![(0, &mut s0), (1, &mut s1)],
        _ => vec![(rank, &mut s0)],
    };
    let mut local: Vec<&mut dyn Model> = Vec::new();
    let mut slots = Vec::new();
    for (r, m) in mine {
        slice_params(&whole, m, r, RANKS)?;
        slots.push(r);
        local.push(m);
    }
    let mut split = SplitLayers::new(local, &mut tail, ranks, comm)?;
    for step in 0..args.steps {
        let (x, y) = batch(step);
        losses.push(split.step(&[("image", x)], &[("digit", y)], b, lr)?);
    }
    println!(
        "rank {rank}: {} shard(s) of {RANKS}, {} bytes a step into the all-reduce, {:.2} ms a step",
        slots.len(),
        split.bytes_per_step(b),
        1e3 * began.elapsed().as_secs_f64() / args.steps as f64
    );
    // Assemble the whole network: every rank places its slices into a
    // zeroed buffer (rank 0 the replicated tail too); the sum over ranks
    // is the whole (an all-gather; x + 0 = x exactly).
    let spec = whole.spec();
    let mut params = vec![0.0f32; spec.param_count];
    for (&r, shard) in slots.iter().zip(split.shards()) {
        place_params(spec, shard, r, RANKS, &mut params)?;
    }
    if rank == 0 {
        place_params(spec, split.tail(), 0, RANKS, &mut params)?;
    }
    comm.all_reduce_sum(&mut params)?;
    if rank == 0 {
        finish(args, &losses, &params)?;
    }
    Ok(())
}

/// Prints the last loss and writes the run's results (`--out`).
fn finish(args: &Args, losses: &[f32], params: &[f32]) -> anyhow::Result<()> {
    if let Some(loss) = losses.last() {
        println!("loss after {} steps: {loss}", args.steps);
    }
    if let Some(out) = &args.out {
        let prefix = out.display();
        write_bits(PathBuf::from(format!("{prefix}.losses")), losses)?;
        write_bits(PathBuf::from(format!("{prefix}.params")), params)?;
    }
    Ok(())
}
