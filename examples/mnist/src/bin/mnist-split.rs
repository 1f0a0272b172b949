//! `examples/models/mnist_split.nn` (the MNIST MLP with `h1` split by
//! columns and `h2` by rows) trained by the split-layer driver
//! (`nnc::runtime::split`): under `mpirun -np 2` one shard per rank,
//! started alone both shards in this process, or with `--whole` the
//! unsplit network (the reference). Trains `--steps` Adam steps on the
//! first batches of the bundled MNIST subset in order and, with `--out P`,
//! rank 0 writes the losses (`P.losses`) and the whole network's
//! parameters assembled from the slices (`P.params`) as f32 bit patterns,
//! one a line, for `tests/mpi.rs` to compare. `--checkpoint DIR` saves the
//! shards' sliced checkpoint after the last step, `--resume DIR` continues
//! one. Built only with feature `mpi`.

#![deny(warnings)]

use clap::Parser;
use nnc::runtime::collective::Collective;
use nnc::runtime::split::{place_params, slice_params, SplitLayers};
use nnc::runtime::Model;
use nnc_example_mnist::distributed::{finish, launch, load, train_whole, Batches, RunArgs};
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
    #[command(flatten)]
    run: RunArgs,
    /// Test hook: the last rank believes the network is split across this
    /// many ranks (a different split layout).
    #[arg(long, hide = true)]
    test_last_rank_ranks: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    launch(|world| run(&args, world.comm()))
}

fn run(args: &Args, comm: &dyn Collective) -> anyhow::Result<()> {
    let (rank, size) = (comm.rank(), comm.size());
    let train = load()?;
    args.run.validate()?;
    let data = Batches::new(&train, &args.run)?;
    let (b, steps) = (args.run.batch, args.run.steps);
    // Every rank starts from the same parameters: the whole network's
    // initialisation, each rank taking its slices.
    let mut whole = MnistSplit::try_new(b)?;
    whole.init_params(whole.spec().train.seed)?;
    let lr = whole.spec().train.lr;
    let began = Instant::now();
    if args.run.whole {
        let (losses, _) = train_whole(&mut whole, &data, steps)?;
        println!(
            "whole network: {:.2} ms a step",
            1e3 * began.elapsed().as_secs_f64() / steps as f64
        );
        return finish(&args.run, &losses, &[("params".into(), whole.params())]);
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
    let first = args.run.first_step()?;
    if let Some(dir) = &args.run.resume {
        split.load_checkpoint(dir)?;
    }
    // Timed from here: a resumed run's steps only, not the set-up.
    let began = Instant::now();
    let mut losses = Vec::with_capacity(steps);
    for step in first..steps {
        let (x, y) = data.get(step);
        losses.push(split.step(&[("image", x)], &[("digit", y)], b, lr)?);
    }
    if let Some(dir) = &args.run.checkpoint {
        split.save_checkpoint(dir)?;
    }
    println!(
        "rank {rank}: {} shard(s) of {RANKS}, {} bytes a step into the all-reduce, {:.2} ms a step",
        slots.len(),
        split.bytes_per_step(b),
        1e3 * began.elapsed().as_secs_f64() / steps.saturating_sub(first).max(1) as f64
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
        finish(&args.run, &losses, &[("params".into(), &params)])?;
    }
    Ok(())
}
