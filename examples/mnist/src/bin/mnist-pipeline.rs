//! `examples/models/mnist_pipeline.nn` (the MNIST MLP cut after `h1`), or
//! with `--stages 4` `mnist_pipeline4.nn` (cut after `h1`, `h2`, `h3`),
//! trained by the pipeline driver (`nnc::runtime::pipeline`): under
//! `mpirun -np 2` (or 4) one stage per rank (4 stages on 2 ranks: two
//! each), started alone every stage in this process, or with `--whole` the unstaged network on whole batches
//! (the reference). Trains `--steps` Adam steps on the first batches of the
//! bundled MNIST subset in order, prints the pipeline's report (bubble,
//! bytes per step, time per step), and with `--out P` writes the losses
//! (`P.losses`) and each stage's parameters (`P.stage<s>`) as f32 bit
//! patterns, one a line, for `tests/mpi.rs` to compare. Built only with
//! feature `mpi`.

#![deny(warnings)]

use anyhow::{bail, Context};
use clap::Parser;
use nnc::runtime::collective::{Collective, Local, Mpi};
use nnc::runtime::data::{load_mnist, Values};
use nnc::runtime::pipeline::{Pipeline, PointToPoint, Schedule};
use nnc::runtime::{Batch, Model};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

mod net {
    nnc::include_model!("mnist_pipeline");
}
mod net4 {
    nnc::include_model!("mnist_pipeline4");
}

/// The unstaged network and its stages, for a global batch of `b`.
type Models = (Box<dyn Model>, Vec<Box<dyn Model>>);

fn models(stages: usize, b: usize) -> anyhow::Result<Models> {
    Ok(match stages {
        2 => (
            Box::new(net::MnistPipeline::try_new(b)?),
            vec![
                Box::new(net::MnistPipelineStage0::try_new(b)?),
                Box::new(net::MnistPipelineStage1::try_new(b)?),
            ],
        ),
        4 => (
            Box::new(net4::MnistPipeline4::try_new(b)?),
            vec![
                Box::new(net4::MnistPipeline4Stage0::try_new(b)?),
                Box::new(net4::MnistPipeline4Stage1::try_new(b)?),
                Box::new(net4::MnistPipeline4Stage2::try_new(b)?),
                Box::new(net4::MnistPipeline4Stage3::try_new(b)?),
            ],
        ),
        n => bail!("--stages {n}: 2 or 4"),
    })
}

/// Pipeline-parallel training of the MNIST MLP in two or four stages.
#[derive(Parser)]
struct Args {
    /// Global batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Micro-batches per step.
    #[arg(long, default_value_t = 4)]
    micro: usize,
    /// Pipeline stages: 2 (`mnist_pipeline.nn`) or 4 (`mnist_pipeline4.nn`).
    #[arg(long, default_value_t = 2)]
    stages: usize,
    /// Schedule: 1f1b or gpipe.
    #[arg(long, default_value = "1f1b")]
    schedule: Schedule,
    /// Adam steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Train the unstaged network on whole batches instead.
    #[arg(long)]
    whole: bool,
    /// Write losses and parameters under this path prefix.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Test hook: the last rank uses this many micro-batches instead.
    #[arg(long, hide = true)]
    test_last_rank_micro: Option<usize>,
    /// Test hook: rank 1 exits (status 3) before its first step.
    #[arg(long, hide = true)]
    test_die_rank: Option<usize>,
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

fn run(args: &Args, comm: &dyn PointToPoint) -> anyhow::Result<()> {
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
    if b == 0 || args.steps * b > labels.len() {
        bail!(
            "--steps × --batch must be between 1 and {} samples",
            labels.len()
        );
    }
    // Every rank starts from the same parameters: the whole network's
    // initialisation, copied into the stages by name.
    let (mut whole, mut stages) = models(args.stages, b)?;
    whole.init_params(whole.spec().train.seed)?;
    for stage in &mut stages {
        for p in stage.spec().params.iter() {
            let from = whole.spec().params.iter().find(|q| q.name == p.name);
            let Some(from) = from else {
                bail!("stage parameter `{}` not in the network", p.name);
            };
            stage.params_mut()[p.range()].copy_from_slice(&whole.params()[from.range()]);
        }
    }
    let lr = whole.spec().train.lr;
    let mut losses = Vec::with_capacity(args.steps);
    let began = Instant::now();
    let out_params: Vec<(usize, Vec<f32>)>;
    if args.whole {
        let train = &whole.spec().train;
        let mut opt = nnc::runtime::optim::build(&train.optimizer, whole.spec().param_count)?;
        for step in 0..args.steps {
            let (x, y) = (
                &images[step * b * 784..][..b * 784],
                &labels[step * b..][..b],
            );
            let loss = whole.train_step(&Batch {
                inputs: &[x],
                labels: &[y],
            })?;
            let grads = whole.grads().to_vec();
            opt.step(whole.params_mut(), &grads, lr)?;
            losses.push(loss);
        }
        // As the pipeline's report counts a rank's: parameters, the model's
        // gradients, the step's gradient (here the copy), optimizer state.
        let opt_len: usize = opt.state().tensors.iter().map(|(_, t)| t.len()).sum();
        let n = whole.params().len() + 2 * whole.grads().len() + opt_len;
        println!(
            "whole network: parameters + gradients + optimizer state {} bytes",
            4 * n
        );
        // The whole network's parameters, laid out as each stage's.
        out_params = stages
            .iter()
            .enumerate()
            .map(|(s, stage)| {
                let mut v = vec![0.0; stage.spec().param_count];
                for p in stage.spec().params.iter() {
                    let from = whole.spec().params.iter().find(|q| q.name == p.name);
                    if let Some(from) = from {
                        v[p.range()].copy_from_slice(&whole.params()[from.range()]);
                    }
                }
                (s, v)
            })
            .collect();
    } else {
        let mut micro = args.micro;
        if rank + 1 == size && size > 1 {
            micro = args.test_last_rank_micro.unwrap_or(micro);
        }
        let count = stages.len();
        let local: Vec<&mut dyn Model> = stages
            .iter_mut()
            .enumerate()
            .filter(|(s, _)| s * size / count == rank)
            .map(|(_, m)| &mut **m as &mut dyn Model)
            .collect();
        let mut pipe = Pipeline::with_schedule(local, count, micro, args.schedule, comm)?;
        if args.test_die_rank == Some(rank) {
            std::process::exit(3);
        }
        for step in 0..args.steps {
            let (x, y) = (
                &images[step * b * 784..][..b * 784],
                &labels[step * b..][..b],
            );
            if let Some(loss) = pipe.step(&[("image", x)], &[("digit", y)], b, lr)? {
                losses.push(loss);
            }
        }
        let r = pipe.report();
        let secs = began.elapsed().as_secs_f64();
        println!(
            "rank {rank}: {} stages, {} micro-batches, {}, bubble {:.1}%, {} bytes a step across \
             stage boundaries, {} sent by this rank, peak activations held {} bytes, parameters \
             + gradients + optimizer state {} bytes, {:.2} ms a step",
            r.stages,
            r.micro_batches,
            r.schedule.name(),
            100.0 * r.bubble,
            r.bytes_per_step,
            r.bytes_sent_by_rank,
            r.peak_stash_bytes,
            r.state_bytes,
            1e3 * secs / args.steps as f64
        );
        let first = pipe.first_stage();
        out_params = pipe
            .models()
            .iter()
            .enumerate()
            .map(|(i, m)| (first + i, m.params().to_vec()))
            .collect();
    }
    if args.whole {
        println!(
            "whole network: {:.2} ms a step",
            1e3 * began.elapsed().as_secs_f64() / args.steps as f64
        );
    }
    if let Some(loss) = losses.last() {
        println!("loss after {} steps: {loss}", args.steps);
    }
    if let Some(out) = &args.out {
        let prefix = out.display();
        if !losses.is_empty() {
            write_bits(PathBuf::from(format!("{prefix}.losses")), &losses)?;
        }
        for (s, params) in out_params {
            write_bits(PathBuf::from(format!("{prefix}.stage{s}")), &params)?;
        }
    }
    Ok(())
}
