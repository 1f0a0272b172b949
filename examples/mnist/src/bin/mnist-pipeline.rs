//! `examples/models/mnist_pipeline.nn` (the MNIST MLP cut after `h1`), or
//! with `--stages 4` `mnist_pipeline4.nn` (cut after `h1`, `h2`, `h3`),
//! trained by the pipeline driver (`nnc::runtime::pipeline`): under
//! `mpirun -np 2` (or 4) one stage per rank (4 stages on 2 ranks: two
//! each), started alone every stage in this process, or with `--whole` the unstaged network on whole batches
//! (the reference). Trains `--steps` Adam steps on the first batches of the
//! bundled MNIST subset in order, prints the pipeline's report (bubble,
//! bytes per step, time per step), and with `--out P` writes the losses
//! (`P.losses`) and each stage's parameters (`P.stage<s>`) as f32 bit
//! patterns, one a line, for `tests/mpi.rs` to compare. `--checkpoint DIR`
//! saves the stages' sliced checkpoint after the last step, `--resume
//! DIR` continues one. Built only with feature `mpi`.

#![deny(warnings)]

use anyhow::bail;
use clap::Parser;
use nnc::runtime::collective::{Collective, Local, Threads};
use nnc::runtime::pipeline::{init_stage, Pipeline, PointToPoint, Schedule};
use nnc::runtime::spec::ModelSpec;
use nnc::runtime::Model;
use nnc_example_mnist::distributed::{
    as_stages, finish, launch, load, print_report, print_whole, train_whole, Batches, RunArgs,
    World,
};
use std::process::ExitCode;
use std::time::Instant;

mod net {
    nnc::include_model!("mnist_pipeline");
}
mod net4 {
    nnc::include_model!("mnist_pipeline4");
}

/// The unstaged network's spec (its parameters' names, shapes and
/// initialisers), with `stages` stages.
fn whole_spec(stages: usize) -> anyhow::Result<&'static ModelSpec> {
    Ok(match stages {
        2 => &net::MNIST_PIPELINE_SPEC,
        4 => &net4::MNIST_PIPELINE4_SPEC,
        n => bail!("--stages {n}: 2 or 4"),
    })
}

/// The unstaged network, for a global batch of `b`.
fn whole(stages: usize, b: usize) -> anyhow::Result<Box<dyn Model>> {
    Ok(match stages {
        2 => Box::new(net::MnistPipeline::try_new(b)?),
        _ => Box::new(net4::MnistPipeline4::try_new(b)?),
    })
}

/// Stage `s` of `stages`, for a global batch of `b`, initialised as the
/// whole network's initialisation would (without building the network or
/// the other stages: a rank allocates its own stages only).
fn stage(stages: usize, s: usize, b: usize) -> anyhow::Result<Box<dyn Model>> {
    let mut m: Box<dyn Model> = match (stages, s) {
        (2, 0) => Box::new(net::MnistPipelineStage0::try_new(b)?),
        (2, 1) => Box::new(net::MnistPipelineStage1::try_new(b)?),
        (4, 0) => Box::new(net4::MnistPipeline4Stage0::try_new(b)?),
        (4, 1) => Box::new(net4::MnistPipeline4Stage1::try_new(b)?),
        (4, 2) => Box::new(net4::MnistPipeline4Stage2::try_new(b)?),
        (4, 3) => Box::new(net4::MnistPipeline4Stage3::try_new(b)?),
        _ => bail!("no stage {s} of {stages}"),
    };
    let spec = whole_spec(stages)?;
    init_stage(spec, spec.train.seed, &mut *m)?;
    Ok(m)
}

/// The stages' specs, in order.
fn stage_specs(stages: usize) -> Vec<&'static ModelSpec> {
    match stages {
        2 => vec![
            &net::MNIST_PIPELINE_STAGE0_SPEC,
            &net::MNIST_PIPELINE_STAGE1_SPEC,
        ],
        _ => vec![
            &net4::MNIST_PIPELINE4_STAGE0_SPEC,
            &net4::MNIST_PIPELINE4_STAGE1_SPEC,
            &net4::MNIST_PIPELINE4_STAGE2_SPEC,
            &net4::MNIST_PIPELINE4_STAGE3_SPEC,
        ],
    }
}

/// Pipeline-parallel training of the MNIST MLP in two or four stages.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Micro-batches per step (of each replica's share of the batch).
    #[arg(long, default_value_t = 4)]
    micro: usize,
    /// Pipeline stages: 2 (`mnist_pipeline.nn`) or 4 (`mnist_pipeline4.nn`).
    #[arg(long, default_value_t = 2)]
    stages: usize,
    /// Schedule: 1f1b or gpipe.
    #[arg(long, default_value = "1f1b")]
    schedule: Schedule,
    /// Replicas of the pipeline (hybrid data × pipeline parallelism): the
    /// ranks form this many groups, each a whole pipeline.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Test hook: the last rank uses this many micro-batches instead.
    #[arg(long, hide = true)]
    test_last_rank_micro: Option<usize>,
    /// Test hook: rank 1 exits (status 3) before its first step.
    #[arg(long, hide = true)]
    test_die_rank: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    launch(|world| run(&args, world))
}

/// What one rank of one replica trained: the losses (on the rank holding
/// the last stage) and its stages' parameters by stage index.
type Trained = (Vec<f32>, Vec<(usize, Vec<f32>)>);

fn run(args: &Args, world: &World) -> anyhow::Result<()> {
    let train = load()?;
    args.run.validate()?;
    let data = Batches::new(&train, &args.run)?;
    let k = args.replicas;
    if k == 0 {
        bail!("--replicas must be at least 1");
    }
    whole_spec(args.stages)?;
    if args.run.whole {
        let (losses, params) = train_whole_network(args, &data)?;
        return write(args, &losses, &params);
    }
    let (losses, params) = match (world.mpi(), k) {
        (_, 1) => train_replica(args, &data, world.comm(), &Local, world.comm().rank())?,
        (Some(mpi), k) => {
            // Replica `w / P` of the job's `W = K · P` ranks, pipeline rank
            // `w % P`: one group by replica (its chain), one by stage.
            let (w, size) = (mpi.rank(), mpi.size());
            if size % k != 0 {
                bail!("{size} ranks do not form {k} replicas");
            }
            let per = size / k;
            let chain = mpi.split(w / per, w)?;
            let group = mpi.split(w % per, w)?;
            let trained = train_replica(args, &data, &chain, &group, w)?;
            if group.rank() != 0 {
                // The replicas hold the same parameters; replica 0 writes.
                return Ok(());
            }
            trained
        }
        (None, k) => {
            // Alone: the replicas as threads, each holding every stage.
            let data = &data;
            let results: Vec<anyhow::Result<Trained>> = std::thread::scope(|s| {
                let handles: Vec<_> = Threads::group(k)
                    .into_iter()
                    .map(|group| {
                        s.spawn(move || train_replica(args, data, &Local, &group, group.rank()))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| bail!(PANICKED)))
                    .collect()
            });
            // A replica that returns an error stops the others, which then
            // panic: report the error, not their panics.
            let (panicked, failed): (Vec<_>, Vec<_>) = results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .partition(|e| e.to_string() == PANICKED);
            if let Some(e) = failed.into_iter().chain(panicked).next() {
                bail!("{e:#}");
            }
            let mut all = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
            all.swap_remove(0)
        }
    };
    write(args, &losses, &params)
}

/// What a replica thread that panicked reports.
const PANICKED: &str = "a replica panicked";

/// The reference: the unstaged network on whole batches; its parameters
/// laid out as each stage's.
fn train_whole_network(args: &Args, data: &Batches<'_>) -> anyhow::Result<Trained> {
    let mut whole = whole(args.stages, args.run.batch)?;
    whole.init_params(whole.spec().train.seed)?;
    let began = Instant::now();
    let (losses, opt) = train_whole(&mut *whole, data, args.run.steps)?;
    print_whole(
        &*whole,
        &*opt,
        1e3 * began.elapsed().as_secs_f64() / args.run.steps as f64,
    );
    Ok((losses, as_stages(&*whole, &stage_specs(args.stages), 1)))
}

/// Trains this rank's stages of one replica: `comm` is the replica's chain
/// of ranks, `replicas` this rank's stage group across replicas, `job_rank`
/// the rank the report names.
fn train_replica(
    args: &Args,
    data: &Batches<'_>,
    comm: &dyn PointToPoint,
    replicas: &dyn Collective,
    job_rank: usize,
) -> anyhow::Result<Trained> {
    let (rank, size) = (comm.rank(), comm.size());
    let (b, steps) = (args.run.batch, args.run.steps);
    let lr = whole_spec(args.stages)?.train.lr;
    let mut micro = args.micro;
    if rank + 1 == size && size > 1 {
        micro = args.test_last_rank_micro.unwrap_or(micro);
    }
    // Only this rank's stages are built.
    let count = args.stages;
    let mut stages = (0..count)
        .filter(|s| s * size / count == rank)
        .map(|s| stage(count, s, b))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let local: Vec<&mut dyn Model> = stages
        .iter_mut()
        .map(|m| &mut **m as &mut dyn Model)
        .collect();
    let mut pipe = Pipeline::replicated(local, count, micro, args.schedule, comm, replicas)?;
    if args.test_die_rank == Some(job_rank) {
        std::process::exit(3);
    }
    let first = args.run.first_step()?;
    if let Some(dir) = &args.run.resume {
        pipe.load_checkpoint(dir)?;
    }
    let began = Instant::now();
    let mut losses = Vec::with_capacity(steps);
    for step in first..steps {
        let (x, y) = data.get(step);
        if let Some(loss) = pipe.step(&[("image", x)], &[("digit", y)], b, lr)? {
            losses.push(loss);
        }
    }
    if let Some(dir) = &args.run.checkpoint {
        pipe.save_checkpoint(dir)?;
    }
    print_report(
        job_rank,
        &pipe.report(),
        // A resumed run times its own steps only.
        1e3 * began.elapsed().as_secs_f64() / steps.saturating_sub(first).max(1) as f64,
    );
    let first = pipe.first_stage();
    let params = pipe
        .models()
        .iter()
        .enumerate()
        .map(|(i, m)| (first + i, m.params().to_vec()))
        .collect();
    Ok((losses, params))
}

/// Writes the run's results (`--out`): the losses and each stage's
/// parameters (`P.stage<s>`).
fn write(args: &Args, losses: &[f32], params: &[(usize, Vec<f32>)]) -> anyhow::Result<()> {
    let files: Vec<(String, &[f32])> = params
        .iter()
        .map(|(s, p)| (format!("stage{s}"), &p[..]))
        .collect();
    finish(&args.run, losses, &files)
}
