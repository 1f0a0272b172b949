//! What the test-only model-parallel drivers share (`mnist-pipeline`,
//! `mnist-split`; built only with feature `mpi`): joining the MPI job or
//! running alone, their common flags, the bundled MNIST subset as a
//! sequence of batches, the reference run of the whole network, the report
//! lines, sliced checkpoints (`--checkpoint DIR`, `--resume DIR`), and the
//! results `tests/mpi.rs` compares (losses and parameters as f32 bit
//! patterns, one a line).

use anyhow::{bail, Context};
use nnc::runtime::collective::{Local, Mpi};
use nnc::runtime::data::{load_mnist, Dataset, Values};
use nnc::runtime::optim::Optimizer;
use nnc::runtime::pipeline::{peak_rss_bytes, PipelineReport, PointToPoint};
use nnc::runtime::spec::ModelSpec;
use nnc::runtime::{Batch, Model};
use std::path::PathBuf;
use std::process::ExitCode;

/// The processes of a run: the MPI job when started by an MPI launcher,
/// else this process alone.
pub enum World {
    /// Started plainly.
    Alone(Local),
    /// A rank of an MPI job.
    Mpi(Mpi),
}

impl World {
    /// Every rank of the run, for collectives and point-to-point messages.
    pub fn comm(&self) -> &dyn PointToPoint {
        match self {
            World::Alone(l) => l,
            World::Mpi(m) => m,
        }
    }

    /// The MPI job, when there is one (to split it into groups).
    pub fn mpi(&self) -> Option<&Mpi> {
        match self {
            World::Alone(_) => None,
            World::Mpi(m) => Some(m),
        }
    }
}

/// Joins the run's processes, runs `job` and turns its outcome into the
/// exit status; an error on one of several ranks aborts the whole job, so
/// no rank waits for this one forever.
pub fn launch(job: impl FnOnce(&World) -> anyhow::Result<()>) -> ExitCode {
    let world = if Mpi::launched() {
        match Mpi::init() {
            Ok(m) => World::Mpi(m),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        World::Alone(Local)
    };
    match job(&world) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if world.comm().size() > 1 => {
            eprintln!("error on rank {}: {e:#}", world.comm().rank());
            world.comm().abort(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The flags both drivers take.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Global batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Adam steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Train the whole (unstaged, unsplit) network instead: the reference.
    #[arg(long)]
    pub whole: bool,
    /// Write losses and parameters under this path prefix.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// After the last step, save a sliced checkpoint (one slice per stage
    /// or split rank, each written by its rank, and a manifest) into this
    /// directory: a new generation, the previous one removed once the
    /// manifest names the new slices.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Resume from the sliced checkpoint in this directory (same layout):
    /// training continues at the step it recorded, up to `--steps`, on the
    /// batches that follow.
    #[arg(long)]
    pub resume: Option<PathBuf>,
}

impl RunArgs {
    /// Refuses flag combinations a driver would otherwise ignore: the
    /// whole-network reference neither resumes nor saves slices. Drivers
    /// call it first, before `--whole` takes its own path.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.whole && (self.resume.is_some() || self.checkpoint.is_some()) {
            bail!("--resume and --checkpoint are for the sliced run, not --whole");
        }
        Ok(())
    }

    /// The step training starts from: the resumed checkpoint's (checked
    /// not past `--steps`), else 0.
    pub fn first_step(&self) -> anyhow::Result<usize> {
        let Some(dir) = &self.resume else {
            return Ok(0);
        };
        if self.whole {
            bail!("--resume is for the sliced run, not --whole");
        }
        let m = nnc::runtime::checkpoint::sliced::read_manifest(dir)?;
        let step = usize::try_from(m.step)?;
        if step > self.steps {
            bail!(
                "{} is at step {step}, past --steps {}",
                dir.display(),
                self.steps
            );
        }
        Ok(step)
    }
}

/// The bundled MNIST subset's training set (`data/mnist-10k`).
pub fn load() -> anyhow::Result<Dataset> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k");
    let mnist =
        load_mnist(&dir).with_context(|| format!("loading MNIST from {}", dir.display()))?;
    Ok(mnist.train)
}

/// The first `steps` batches of `batch` samples of a data set, in order.
pub struct Batches<'d> {
    images: &'d [f32],
    labels: &'d [u32],
    batch: usize,
}

impl<'d> Batches<'d> {
    /// `args.steps` batches of `args.batch` samples of `train`, checked to
    /// be there.
    pub fn new(train: &'d Dataset, args: &RunArgs) -> anyhow::Result<Self> {
        let (Some(images), Some(labels)) = (train.column("image"), train.column("label")) else {
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
        Ok(Batches {
            images,
            labels,
            batch: b,
        })
    }

    /// Batch `step`'s images and labels.
    pub fn get(&self, step: usize) -> (&'d [f32], &'d [u32]) {
        let b = self.batch;
        (
            &self.images[step * b * 784..][..b * 784],
            &self.labels[step * b..][..b],
        )
    }
}

/// A sequence of batches, each one feature input and one label column.
pub trait Source {
    /// Batch `step`'s features and labels.
    fn get(&self, step: usize) -> (&[f32], &[u32]);
}

impl Source for Batches<'_> {
    fn get(&self, step: usize) -> (&[f32], &[u32]) {
        Batches::get(self, step)
    }
}

/// Trains `model` (initialised) `steps` steps of its optimizer on whole
/// batches: the reference the drivers are compared with. Returns the
/// losses and the optimizer (whose state the memory report counts).
pub fn train_whole(
    model: &mut dyn Model,
    data: &dyn Source,
    steps: usize,
) -> anyhow::Result<(Vec<f32>, Box<dyn Optimizer>)> {
    let train = &model.spec().train;
    let lr = train.lr;
    let mut opt = nnc::runtime::optim::build(&train.optimizer, model.spec().param_count)?;
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        let (x, y) = data.get(step);
        let loss = model.train_step(&Batch {
            inputs: &[x],
            labels: &[y],
        })?;
        let grads = model.grads().to_vec();
        opt.step(model.params_mut(), &grads, lr)?;
        losses.push(loss);
    }
    Ok((losses, opt))
}

/// The whole network's memory line (parsed by `tests/mpi.rs`): its
/// parameters, gradients (the model's and the step's copy, as a pipeline
/// rank counts its gradient sum) and optimizer state, the process's peak
/// resident set and the time a step.
pub fn print_whole(model: &dyn Model, opt: &dyn Optimizer, ms_per_step: f64) {
    // Read before `state()`, which copies the optimizer's buffers.
    let peak = peak_rss_bytes().map_or(0, |b| b / 1024);
    let opt_len: usize = opt.state().tensors.iter().map(|(_, t)| t.len()).sum();
    let n = model.params().len() + 2 * model.grads().len() + opt_len;
    println!(
        "whole network: parameters + gradients + optimizer state {} bytes, peak RSS {peak} kB, \
         {ms_per_step:.2} ms a step",
        4 * n,
    );
}

/// A pipeline rank's report line (parsed by `tests/mpi.rs`), naming the
/// rank by its number in the job.
pub fn print_report(job_rank: usize, r: &PipelineReport, ms_per_step: f64) {
    println!(
        "rank {job_rank}: {} stages, {} micro-batches, {}, bubble {:.1}%, {} bytes a step across \
         stage boundaries, {} sent by this rank, peak activations held {} bytes, parameters \
         + gradients + optimizer state {} bytes, {} replica(s), {} bytes all-reduced a step, \
         peak RSS {} kB, {ms_per_step:.2} ms a step",
        r.stages,
        r.micro_batches,
        r.schedule.name(),
        100.0 * r.bubble,
        r.bytes_per_step,
        r.bytes_sent_by_rank,
        r.peak_stash_bytes,
        r.state_bytes,
        r.replicas,
        r.bytes_all_reduced,
        r.peak_rss_bytes.map_or(0, |b| b / 1024),
    );
}

/// Prints the last loss and, with `--out P`, writes the losses to
/// `P.losses` (when there are any) and each `(name, values)` to `P.name`.
pub fn finish(args: &RunArgs, losses: &[f32], params: &[(String, &[f32])]) -> anyhow::Result<()> {
    if let Some(loss) = losses.last() {
        println!("loss after {} steps: {loss}", args.steps);
    }
    let Some(out) = &args.out else {
        return Ok(());
    };
    let prefix = out.display();
    let mut files = params.to_vec();
    if !losses.is_empty() {
        files.push(("losses".into(), losses));
    }
    for (name, values) in files {
        let path = PathBuf::from(format!("{prefix}.{name}"));
        let text: String = values
            .iter()
            .map(|v| format!("{:08x}\n", v.to_bits()))
            .collect();
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The whole network's parameters laid out as each stage's (`specs`, in
/// stage order), by name, keeping every `stride`-th value: what the
/// pipeline's ranks write of their stages, for comparison.
pub fn as_stages(whole: &dyn Model, specs: &[&ModelSpec], stride: usize) -> Vec<(usize, Vec<f32>)> {
    specs
        .iter()
        .enumerate()
        .map(|(s, spec)| {
            let mut v = vec![0.0; spec.param_count];
            for p in spec.params.iter() {
                let from = whole.spec().params.iter().find(|q| q.name == p.name);
                if let Some(from) = from {
                    v[p.range()].copy_from_slice(&whole.params()[from.range()]);
                }
            }
            (s, v.into_iter().step_by(stride).collect())
        })
        .collect()
}
