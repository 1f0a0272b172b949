//! The program behind `nnc train`, `nnc eval` and `nnc predict`: what the
//! small crate `nnc` builds for a model calls from its `main`
//! ([`main`]), so that a `.nn` file and a data file are all a user needs.
//!
//! ```text
//! MODEL train   --data FILE|DIR [--label COL] [--column INPUT=COLS]... --out DIR
//!               [--validation F | --validation-data FILE] [--test FILE]
//!               [--epochs N] [--batch N] [--lr X] [--seed N] [--threads N]
//!               [--early-stop N] [--clip-norm X] [--resume | --overwrite]
//! MODEL eval    --weights FILE --data FILE|DIR [...]
//! MODEL predict --weights FILE --data FILE|DIR [...] -o FILE|-
//! MODEL quantize --weights FILE --data FILE|DIR [...] [--samples N] -o FILE
//! MODEL explain --weights FILE --data FILE|DIR [...] --sample I
//!               [--method saliency|gradxinput|ig|smoothgrad] [--class C]
//!               [--image C,H,W] [-o FILE.png]   (the model needs `explain`)
//! ```
//!
//! `train` writes into `--out`: the checkpoints `last.safetensors` (resume
//! with `--resume`) and `best.safetensors`, the metrics log `metrics.csv`,
//! the best epoch's weights as plain safetensors `weights.safetensors`
//! (with the class names of a CSV's named classes), and `curves.svg`.
//! Ctrl-C stops after the current step and leaves `last.safetensors`.
//! A model compiled with `--quantize int8` has its program's `main` call
//! [`main_int8`]: `quantize` writes int8 weights calibrated on a data file,
//! and `eval`/`predict --int8` run them ([`int8`]).
//! Behind the `app` feature (plotting and argument parsing are not for
//! every user of the runtime).

pub mod checkpoint;
pub mod convert;
mod explain;
mod heatmap;
mod int8;
mod plot;
mod report;
pub mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::checkpoint::{load_weights, save_weights_with, CheckpointError, LoadOptions};
use crate::data::{DataError, Dataset};
use crate::model::{BatchSpec, Model};
use crate::train::{
    evaluate, fit, split_validation, FitError, FitOptions, StopFlag, TrainData, BEST_CHECKPOINT,
    LAST_CHECKPOINT,
};
use source::{DataArgs, Part, Use};

/// Why a run of the program failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The arguments do not describe a run.
    #[error("{0}")]
    Usage(String),
    /// The data could not be read or does not fit.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Training or evaluation failed.
    #[error(transparent)]
    Fit(#[from] FitError),
    /// Weights could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The int8 model could not be built, read, written or run.
    #[error(transparent)]
    Int8(#[from] crate::quant::PlanError),
    /// An output file could not be written.
    #[error("{}: {reason}", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

#[derive(Parser)]
#[command(about = "Train, evaluate or run a model compiled by nnc")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on a data set; write checkpoints, weights, metrics and curves.
    Train(TrainArgs),
    /// Loss and metrics of saved weights on a data set.
    Eval(EvalArgs),
    /// One row of predictions per sample, as CSV.
    Predict(PredictArgs),
    /// Attributions of one sample: a heat map (image) or a ranked table.
    Explain(explain::ExplainArgs),
    /// Int8 weights calibrated on a data file (models built with an int8 plan).
    Quantize(int8::QuantizeArgs),
}

#[derive(Args, Clone)]
struct DataOpts {
    /// A CSV file, a directory of IDX files (MNIST's layout), or shards (an nnc shard file or a directory of `*.shard` files, which `train` streams from disk).
    #[arg(long)]
    data: PathBuf,
    /// The CSV column of the labels or targets: a header name or a 0-based index (default: the last).
    #[arg(long)]
    label: Option<String>,
    /// Which CSV columns feed an input: INPUT=NAME, INPUT=3, INPUT=0..30 or INPUT=a,b,c.
    #[arg(long = "column")]
    columns: Vec<String>,
    /// The CSV field separator.
    #[arg(long, default_value = ",")]
    delimiter: char,
    /// The CSV has no header row (by default it is detected).
    #[arg(long)]
    no_header: bool,
}

impl DataOpts {
    fn args(&self, path: &Path) -> Result<DataArgs, AppError> {
        if !self.delimiter.is_ascii() {
            return Err(AppError::Usage(format!(
                "--delimiter `{}` is not a single ASCII character",
                self.delimiter
            )));
        }
        Ok(DataArgs {
            path: path.to_path_buf(),
            label: self.label.clone(),
            columns: self.columns.clone(),
            delimiter: self.delimiter as u8,
            header: self.no_header.then_some(false),
        })
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataOpts,
    /// Directory for checkpoints, metrics, weights and curves.
    #[arg(long)]
    out: PathBuf,
    /// Hold out this fraction of the training data for validation (default 0.1; 0 for none).
    #[arg(long)]
    validation: Option<f64>,
    /// Validate on this file instead.
    #[arg(long)]
    validation_data: Option<PathBuf>,
    /// Evaluate the best weights on this file at the end.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Passes over the training data.
    #[arg(long)]
    epochs: Option<u64>,
    /// Samples per step (0: the whole training set).
    #[arg(long)]
    batch: Option<usize>,
    /// Base learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Seed of initialisation, shuffling, dropout and the validation split.
    #[arg(long)]
    seed: Option<u64>,
    /// Threads for each step.
    #[arg(long)]
    threads: Option<usize>,
    /// Stop after this many epochs without improvement.
    #[arg(long)]
    early_stop: Option<u64>,
    /// Clip the gradient to this global norm.
    #[arg(long)]
    clip_norm: Option<f32>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Start over in an --out that holds another run.
    #[arg(long)]
    overwrite: bool,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    quiet: bool,
}

/// The weights `eval`, `predict` and `explain` run.
#[derive(Args)]
struct WeightsArgs {
    /// Weights to run (`weights.safetensors`, or a checkpoint).
    #[arg(long)]
    weights: PathBuf,
    /// PyTorch layout: 2-D weights stored as [out, in].
    #[arg(long)]
    transpose_linear: bool,
}

/// The class names a weights file carries, by input name.
type Classes = BTreeMap<String, Arc<[String]>>;

impl WeightsArgs {
    /// The program's model with these weights, the class names they carry,
    /// and the test part of `data` read for `usage` (its classes numbered
    /// as in training).
    fn load<M: Model + Default>(
        &self,
        data: &DataOpts,
        usage: Use,
    ) -> Result<(M, Classes, Dataset), AppError> {
        let mut model = M::default();
        let classes = load_model(&mut model, &self.weights, self.transpose_linear)?;
        let set = source::load(
            model.spec(),
            &data_args_of(data)?,
            Part::Test,
            usage,
            &classes,
        )?;
        Ok((model, classes, set))
    }
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    data: DataOpts,
    #[command(flatten)]
    weights: WeightsArgs,
    /// --weights is an int8 weights file (`quantize`'s): run the int8 plan.
    #[arg(long)]
    int8: bool,
}

#[derive(Args)]
struct PredictArgs {
    #[command(flatten)]
    data: DataOpts,
    #[command(flatten)]
    weights: WeightsArgs,
    /// --weights is an int8 weights file (`quantize`'s): run the int8 plan.
    #[arg(long)]
    int8: bool,
    /// Where the predictions go (`-` for standard output).
    #[arg(short = 'o', long = "output", default_value = "-")]
    output: PathBuf,
}

/// Parses the command line and runs the model's program; what a generated
/// `main` calls. Errors are printed on stderr and give exit status 1; a
/// usage error gives 2.
pub fn main<M: Model + Default>() -> ExitCode {
    run::<M>(None)
}

/// [`main`] for a model with an int8 plan (`nnc compile --quantize int8`):
/// `quantize`, and `eval`/`predict --int8`, run `plan`.
pub fn main_int8<M: Model + Default>(plan: fn() -> crate::quant::Plan) -> ExitCode {
    run::<M>(Some(plan))
}

fn run<M: Model + Default>(plan: Option<int8::PlanFn>) -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train::<M>(&a),
        Command::Eval(a) => eval::<M>(&a, plan),
        Command::Predict(a) => predict::<M>(&a, plan),
        Command::Explain(a) => explain::explain::<M>(&a),
        Command::Quantize(a) => int8::quantize::<M>(&a, plan),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if matches!(e, AppError::Usage(_)) {
                2
            } else {
                1
            })
        }
    }
}

/// Metadata key of an input's class names in a weights file.
const CLASSES_PREFIX: &str = "nnc.classes.";

fn train<M: Model + Default>(a: &TrainArgs) -> Result<(), AppError> {
    let mut model = M::default();
    let spec = model.spec();
    if let Some(seed) = a.seed {
        model
            .init_params(seed)
            .map_err(|e| AppError::Usage(format!("--seed {seed}: {e}")))?;
    }
    let seed = a.seed.unwrap_or(spec.train.seed);
    let data = a.data.args(&a.data.data)?;
    // Shards are streamed from disk; their columns (no rows) stand for the
    // data where its class names are read.
    let shards = source::shard_set(&a.data.data)?;
    let train_all = match &shards {
        Some(set) => set.schema().clone(),
        None => source::load(spec, &data, Part::Train, Use::Labelled, &BTreeMap::new())?,
    };
    // Later files number their classes as the training file did.
    let classes = source::class_names(&train_all);
    let (train, validation) = match (&a.validation_data, a.validation) {
        (Some(path), _) => {
            let v = source::load(
                spec,
                &a.data.args(path)?,
                Part::Test,
                Use::Labelled,
                &classes,
            )?;
            (train_all, Some(v))
        }
        (None, Some(0.0)) => (train_all, None),
        (None, f) if shards.is_some() => {
            // A fraction (often the train block's) cannot be held out of
            // data that is never in memory whole: said, not silently lost.
            if let Some(f) = f {
                eprintln!(
                    "note: no validation fraction ({f}) is held out of {}: shards are streamed \
                     from disk, not split; pass --validation-data FILE (a shard, CSV or IDX \
                     directory) to validate",
                    a.data.data.display()
                );
            }
            (train_all, None)
        }
        (None, f) => {
            let f = f.unwrap_or(0.1);
            if !(0.0..1.0).contains(&f) {
                return Err(AppError::Usage(format!(
                    "--validation {f}: the held-out fraction must be in [0, 1)"
                )));
            }
            let (t, v) = split_validation(&train_all, f, seed)?;
            if v.is_empty() {
                (t, None)
            } else {
                (t, Some(v))
            }
        }
    };
    let stop = StopFlag::new();
    {
        let stop = stop.clone();
        // A second Ctrl-C while stopping ends the process the usual way.
        let _ = ctrlc::set_handler(move || {
            if stop.is_raised() {
                std::process::exit(130);
            }
            eprintln!("\nstopping after the current step (Ctrl-C again to quit now)…");
            stop.raise();
        });
    }
    let opts = FitOptions {
        epochs: a.epochs,
        batch: a.batch.map(|b| {
            if b == 0 {
                BatchSpec::Full
            } else {
                BatchSpec::Size(b)
            }
        }),
        lr: a.lr,
        seed: a.seed,
        threads: a.threads,
        clip_norm: a.clip_norm,
        early_stopping: a.early_stop.map(crate::train::EarlyStopping::new),
        checkpoint_dir: Some(a.out.clone()),
        resume: a.resume.then(|| a.out.join(LAST_CHECKPOINT)),
        overwrite: a.overwrite,
        progress: !a.quiet,
        verbose: !a.quiet,
        stop: Some(stop.clone()),
        ..FitOptions::default()
    };
    if a.resume && !a.out.join(LAST_CHECKPOINT).exists() {
        return Err(AppError::Usage(format!(
            "--resume: {} has no {LAST_CHECKPOINT} to continue",
            a.out.display()
        )));
    }
    let data = match &shards {
        Some(set) => TrainData::streamed(set),
        None => TrainData::new(&train),
    };
    let data = match &validation {
        Some(v) => data.with_validation(v),
        None => data,
    };
    if !a.quiet {
        println!(
            "{}: {} parameters; {} training{} samples from {}{}",
            spec.name,
            spec.param_count,
            shards.as_ref().map_or(train.len(), |s| s.rows()),
            validation
                .as_ref()
                .map_or(String::new(), |v| format!(", {} validation", v.len())),
            a.data.data.display(),
            if shards.is_some() { " (streamed)" } else { "" }
        );
    }
    let history = fit(&mut model, &data, &opts)?;
    // The best epoch's weights (lowest validation loss, else training loss).
    let best = a.out.join(BEST_CHECKPOINT);
    if best.exists() {
        load_weights(&mut model, &best, &LoadOptions::default())?;
    }
    let weights = a.out.join("weights.safetensors");
    let meta: BTreeMap<String, String> = classes
        .iter()
        .map(|(k, v)| (format!("{CLASSES_PREFIX}{k}"), v.join("\n")))
        .collect();
    save_weights_with(&model, &weights, &meta)?;
    let curves = a.out.join("curves.svg");
    let title = format!("{} — {}", spec.name, a.data.data.display());
    plot::write_curves(&history, &title, &curves).map_err(|reason| AppError::Output {
        path: curves.clone(),
        reason,
    })?;
    if let Some(path) = &a.test {
        let test = source::load(
            spec,
            &a.data.args(path)?,
            Part::Test,
            Use::Labelled,
            &classes,
        )?;
        let e = evaluate(&mut model, &test)?;
        println!("test ({}, {} samples):", path.display(), test.len());
        print!("{}", report::eval_text(&e, &classes, spec));
    } else if source::has_idx_test(&a.data.data) {
        // An IDX directory with a test pair (MNIST's t10k files).
        let test = source::load(
            spec,
            &data_args_of(&a.data)?,
            Part::Test,
            Use::Labelled,
            &classes,
        )?;
        let e = evaluate(&mut model, &test)?;
        println!("test ({} samples):", test.len());
        print!("{}", report::eval_text(&e, &classes, spec));
    }
    if !history.finished {
        println!(
            "stopped at step {}; continue with --resume (last checkpoint: {})",
            history.steps,
            a.out.join(LAST_CHECKPOINT).display()
        );
    }
    match history.best_epoch(0.0) {
        Some(b) if best.exists() => println!(
            "weights:     {} (epoch {} of {}: the lowest {} loss)",
            weights.display(),
            b.epoch,
            history.epochs.len(),
            if b.val.is_some() {
                "validation"
            } else {
                "training"
            }
        ),
        _ => println!("weights:     {}", weights.display()),
    }
    println!(
        "metrics:     {}",
        a.out.join(crate::train::log::METRICS_LOG).display()
    );
    println!("curves:      {}", curves.display());
    println!(
        "checkpoints: {} (resume with --resume)",
        a.out.join(LAST_CHECKPOINT).display()
    );
    Ok(())
}

fn data_args_of(d: &DataOpts) -> Result<DataArgs, AppError> {
    d.args(&d.data)
}

/// Loads `path` into `model` and returns the class names it carries.
fn load_model<M: Model>(
    model: &mut M,
    path: &Path,
    transpose_linear: bool,
) -> Result<Classes, AppError> {
    let opts = LoadOptions {
        transpose_linear,
        ..LoadOptions::default()
    };
    let meta = match load_weights(model, path, &opts) {
        Ok(meta) => meta,
        // An int8 file read as f32 weights fails at its first I8 tensor;
        // say what the file is instead.
        Err(_) if int8::is_int8_file(path) => {
            return Err(AppError::Usage(format!(
                "{} is an int8 weights file: run it with --int8",
                path.display()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    Ok(meta
        .iter()
        .filter_map(|(k, v)| {
            let input = k.strip_prefix(CLASSES_PREFIX)?;
            Some((
                input.to_string(),
                v.split('\n').map(str::to_string).collect(),
            ))
        })
        .collect())
}

fn eval<M: Model + Default>(a: &EvalArgs, plan: Option<int8::PlanFn>) -> Result<(), AppError> {
    if a.int8 {
        return int8::eval::<M>(&a.weights.weights, &a.data, plan);
    }
    let (mut model, classes, data) = a.weights.load::<M>(&a.data, Use::Labelled)?;
    let spec = model.spec();
    let e = evaluate(&mut model, &data)?;
    println!(
        "{} on {} ({} samples):",
        spec.name,
        a.data.data.display(),
        data.len()
    );
    print!("{}", report::eval_text(&e, &classes, spec));
    Ok(())
}

fn predict<M: Model + Default>(
    a: &PredictArgs,
    plan: Option<int8::PlanFn>,
) -> Result<(), AppError> {
    let (text, rows) = if a.int8 {
        int8::predict::<M>(&a.weights.weights, &a.data, plan)?
    } else {
        predict_f32::<M>(a)?
    };
    // `-` is standard output; a device or FIFO is written in place.
    nnc_spec::output::write(&a.output, text.as_bytes()).map_err(|e| AppError::Output {
        path: a.output.clone(),
        reason: e.to_string(),
    })?;
    if nnc_spec::output::is_stdout(&a.output) {
        return Ok(());
    }
    eprintln!("{rows} predictions written to {}", a.output.display());
    Ok(())
}

/// The predictions file of the f32 model, and its rows.
fn predict_f32<M: Model + Default>(a: &PredictArgs) -> Result<(String, usize), AppError> {
    let (mut model, classes, data) = a.weights.load::<M>(&a.data, Use::Predict)?;
    let spec = model.spec();
    Ok(if spec.loss.kind == crate::model::LossKind::Other {
        let outputs = crate::train::predict(&mut model, &data)?;
        (report::outputs_csv(&outputs), data.len())
    } else {
        let scores = crate::train::predict_scores(&mut model, &data)?;
        (
            report::predictions_csv(spec, &scores, &classes),
            scores.len(),
        )
    })
}
