//! `examples/models/large/wide_pipeline.nn` (an MLP of four 1536 × 1536
//! layers, 9.5 M parameters, cut after `h3`) trained by the pipeline driver
//! (`nnc::runtime::pipeline`) on small synthetic data: under `mpirun -np 2`
//! one stage per rank, each rank building (allocating) only its own
//! stage, started alone both stages in this process, or with `--whole` the
//! unstaged network; with `--stages 4` `wide_pipeline4.nn`, the same
//! network in four stages. This is issue #24's memory check: the network's
//! parameters, gradients and Adam state (190 MB) dominate a process, so
//! each of two ranks should peak at about half of one process's memory.
//! Prints the report (with the peak resident set, `VmHWM`) and, with
//! `--out P`, writes the losses (`P.losses`) and every 13th value of each
//! stage's parameters (`P.stage<s>`) as f32 bit patterns, one a line, for
//! `tests/mpi.rs` to compare. Built only with feature `mpi`.

#![deny(warnings)]

use anyhow::bail;
use clap::Parser;
use nnc::runtime::pipeline::{init_stage, Pipeline, Schedule};
use nnc::runtime::rng::Rng;
use nnc::runtime::spec::ModelSpec;
use nnc::runtime::Model;
use nnc_example_mnist::distributed::{
    as_stages, finish, launch, print_report, print_whole, train_whole, RunArgs, Source, World,
};
use std::process::ExitCode;
use std::time::Instant;

mod net {
    nnc::include_model!("wide_pipeline");
}
mod net4 {
    nnc::include_model!("wide_pipeline4");
}

/// Features a sample (`x: f32[batch, 64]`).
const FEATURES: usize = 64;

/// Every how many parameters one is written (`--out`): the comparison
/// reads a sample spread over every tensor, not 9.5 M lines.
const STRIDE: usize = 13;

/// Pipeline-parallel training of a 9.5 M parameter MLP in two or four
/// stages.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Micro-batches per step.
    #[arg(long, default_value_t = 4)]
    micro: usize,
    /// Pipeline stages: 2 (`wide_pipeline.nn`) or 4 (`wide_pipeline4.nn`).
    #[arg(long, default_value_t = 2)]
    stages: usize,
    /// Schedule: 1f1b or gpipe.
    #[arg(long, default_value = "1f1b")]
    schedule: Schedule,
}

fn main() -> ExitCode {
    let args = Args::parse();
    launch(|world| run(&args, world))
}

/// `steps` batches of synthetic samples: features uniform in [0, 1), the
/// label the index of the largest of the first ten (a rule the network
/// can learn, so the loss falls). A few kB: no data set weighs on the
/// memory measured.
struct Synthetic {
    x: Vec<f32>,
    y: Vec<u32>,
    batch: usize,
}

impl Synthetic {
    fn new(batch: usize, steps: usize) -> Self {
        let mut rng = Rng::new(7);
        let n = batch * steps;
        let x: Vec<f32> = (0..n * FEATURES).map(|_| rng.next_f32()).collect();
        let y = x
            .chunks(FEATURES)
            .map(|s| (0..10).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap_or(0) as u32)
            .collect();
        Synthetic { x, y, batch }
    }
}

impl Source for Synthetic {
    fn get(&self, step: usize) -> (&[f32], &[u32]) {
        let b = self.batch;
        (
            &self.x[step * b * FEATURES..][..b * FEATURES],
            &self.y[step * b..][..b],
        )
    }
}

/// The unstaged network's spec and its stages' specs, in order, for
/// `stages` stages (2: `wide_pipeline.nn`, 4: `wide_pipeline4.nn`).
fn specs(stages: usize) -> anyhow::Result<(&'static ModelSpec, Vec<&'static ModelSpec>)> {
    Ok(match stages {
        2 => (
            &net::WIDE_PIPELINE_SPEC,
            vec![
                &net::WIDE_PIPELINE_STAGE0_SPEC,
                &net::WIDE_PIPELINE_STAGE1_SPEC,
            ],
        ),
        4 => (
            &net4::WIDE_PIPELINE4_SPEC,
            vec![
                &net4::WIDE_PIPELINE4_STAGE0_SPEC,
                &net4::WIDE_PIPELINE4_STAGE1_SPEC,
                &net4::WIDE_PIPELINE4_STAGE2_SPEC,
                &net4::WIDE_PIPELINE4_STAGE3_SPEC,
            ],
        ),
        n => bail!("--stages {n}: 2 or 4"),
    })
}

/// Stage `s` of `stages`, for a global batch of `b`, initialised as the
/// whole network's initialisation would, without building the network or
/// the other stages.
fn stage(stages: usize, s: usize, b: usize) -> anyhow::Result<Box<dyn Model>> {
    let mut m: Box<dyn Model> = match (stages, s) {
        (2, 0) => Box::new(net::WidePipelineStage0::try_new(b)?),
        (2, 1) => Box::new(net::WidePipelineStage1::try_new(b)?),
        (4, 0) => Box::new(net4::WidePipeline4Stage0::try_new(b)?),
        (4, 1) => Box::new(net4::WidePipeline4Stage1::try_new(b)?),
        (4, 2) => Box::new(net4::WidePipeline4Stage2::try_new(b)?),
        (4, 3) => Box::new(net4::WidePipeline4Stage3::try_new(b)?),
        _ => bail!("no stage {s} of {stages}"),
    };
    let (whole, _) = specs(stages)?;
    init_stage(whole, whole.train.seed, &mut *m)?;
    Ok(m)
}

fn run(args: &Args, world: &World) -> anyhow::Result<()> {
    let (b, steps) = (args.run.batch, args.run.steps);
    if b == 0 || steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    // This driver measures memory; it has no sliced checkpoints to save or
    // resume, so it refuses the shared flags rather than ignore them.
    if args.run.checkpoint.is_some() || args.run.resume.is_some() {
        bail!("wide-pipeline does not save or resume checkpoints (--checkpoint, --resume)");
    }
    let data = Synthetic::new(b, steps);
    let (whole_spec, stage_specs) = specs(args.stages)?;
    if args.run.whole {
        let mut whole: Box<dyn Model> = match args.stages {
            2 => Box::new(net::WidePipeline::try_new(b)?),
            _ => Box::new(net4::WidePipeline4::try_new(b)?),
        };
        whole.init_params(whole_spec.train.seed)?;
        let began = Instant::now();
        let (losses, opt) = train_whole(&mut *whole, &data, steps)?;
        // The peak resident set is read before the parameters are copied
        // out for `--out`.
        print_whole(
            &*whole,
            &*opt,
            1e3 * began.elapsed().as_secs_f64() / steps as f64,
        );
        let params = as_stages(&*whole, &stage_specs, STRIDE);
        return write(args, &losses, &params);
    }
    let comm = world.comm();
    let (rank, size) = (comm.rank(), comm.size());
    // Only this rank's stages are built: every stage alone, one or two
    // under several ranks.
    let count = stage_specs.len();
    let mut stages = (0..count)
        .filter(|s| s * size / count == rank)
        .map(|s| stage(args.stages, s, b))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let local: Vec<&mut dyn Model> = stages
        .iter_mut()
        .map(|m| &mut **m as &mut dyn Model)
        .collect();
    let lr = whole_spec.train.lr;
    let mut pipe = Pipeline::with_schedule(local, count, args.micro, args.schedule, comm)?;
    let began = Instant::now();
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        let (x, y) = data.get(step);
        if let Some(loss) = pipe.step(&[("x", x)], &[("y", y)], b, lr)? {
            losses.push(loss);
        }
    }
    print_report(
        comm.rank(),
        &pipe.report(),
        1e3 * began.elapsed().as_secs_f64() / steps as f64,
    );
    let first = pipe.first_stage();
    let params: Vec<(usize, Vec<f32>)> = pipe
        .models()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                first + i,
                m.params().iter().step_by(STRIDE).copied().collect(),
            )
        })
        .collect();
    write(args, &losses, &params)
}

/// Writes the run's results (`--out`): the losses and each stage's
/// sampled parameters (`P.stage<s>`).
fn write(args: &Args, losses: &[f32], params: &[(usize, Vec<f32>)]) -> anyhow::Result<()> {
    let files: Vec<(String, &[f32])> = params
        .iter()
        .map(|(s, p)| (format!("stage{s}"), &p[..]))
        .collect();
    finish(&args.run, losses, &files)
}
