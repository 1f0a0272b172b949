//! `nnc train`, `nnc eval`, `nnc predict`: compile the model, build its
//! program in the cache ([`super::cache`]), and run it with the data the
//! `train` block names (paths relative to the `.nn` file) or the command
//! line gives (paths relative to the working directory).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context;
use clap::Args;
use nnc_compiler::diagnostic::{Diagnostic, ErrorKind};
use nnc_compiler::ir::{DataFormat, DataSource, Module, Network, TrainConfig, Validation};
use nnc_compiler::{driver, SourceFile};

use super::cache::{Cache, Generated};

mod calibrate;
pub use calibrate::{calibrate, CalibrateArgs};

/// What every one of the three commands takes.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// The .nn file.
    pub file: PathBuf,
    /// Which network, when the file has several (default: the one with a
    /// `train` block, else the first).
    #[arg(long)]
    pub network: Option<String>,
    /// Build the model's program without optimisations (faster to build,
    /// slower to train).
    #[arg(long)]
    pub debug: bool,
}

/// How the data is read, overriding the `train` block's.
#[derive(Args, Clone, Debug, Default)]
pub struct DataArgs {
    /// A CSV file, a directory of IDX files, or shards (a `.shard` file or a directory of them, streamed by `train`) (default: the train block's `data:`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The CSV column of the labels or targets: a header name or a 0-based index.
    #[arg(long)]
    pub label: Option<String>,
    /// Which CSV columns feed an input: INPUT=NAME, INPUT=3, INPUT=0..30 or INPUT=a,b,c.
    #[arg(long = "column")]
    pub columns: Vec<String>,
}

/// The weights `eval`, `predict` and `explain` run with.
#[derive(Args, Clone, Debug, Default)]
pub struct WeightsArgs {
    /// The weights (default: runs/NETWORK/weights.safetensors).
    #[arg(long)]
    pub weights: Option<PathBuf>,
}

/// The default int8 weights file name, next to `weights.safetensors`.
pub const INT8_WEIGHTS: &str = "weights.int8.safetensors";

impl WeightsArgs {
    /// The program's arguments for `command` with these weights: given,
    /// or the default run's (its int8 weights with `int8`).
    fn command(&self, command: &str, network: &str, int8: bool) -> anyhow::Result<Vec<OsString>> {
        let file = if int8 {
            INT8_WEIGHTS
        } else {
            "weights.safetensors"
        };
        let w = self
            .weights
            .clone()
            .unwrap_or_else(|| default_out(network).join(file));
        if !w.exists() {
            if int8 {
                anyhow::bail!(
                    "int8 weights file {} does not exist (write it with `nnc compile FILE --quantize int8 \
                     --calibrate DATA`, or pass --weights)",
                    w.display()
                );
            }
            anyhow::bail!(
                "weights file {} does not exist (train first with `nnc train`, or pass --weights)",
                w.display()
            );
        }
        let mut args = vec![command.into(), "--weights".into(), w.into_os_string()];
        if int8 {
            args.push("--int8".into());
        }
        Ok(args)
    }
}

/// `nnc train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Hold out this fraction of the training data for validation (0: none).
    #[arg(long)]
    pub validation: Option<f64>,
    /// Evaluate the best weights on this file after training.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Passes over the training data.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Samples per step (0: the whole training set).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Base learning rate.
    #[arg(long)]
    pub lr: Option<f32>,
    /// Seed of initialisation, shuffling, dropout and the validation split.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Threads for each step.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where checkpoints, the metrics log, the weights and the curves go
    /// (default: runs/NETWORK).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start over in an --out that holds another run.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
}

/// `nnc eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// Run the int8 plan on int8 weights (default:
    /// runs/NETWORK/weights.int8.safetensors, written by `nnc compile
    /// --quantize int8 --calibrate DATA`).
    #[arg(long)]
    pub int8: bool,
}

/// `nnc predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// Run the int8 plan on int8 weights (default:
    /// runs/NETWORK/weights.int8.safetensors).
    #[arg(long)]
    pub int8: bool,
    /// Where the predictions go (`-`, the default, for standard output).
    #[arg(short, long, default_value = "-")]
    pub output: PathBuf,
}

/// `nnc explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// Which sample of the data (0-based row).
    #[arg(long, default_value_t = 0)]
    pub sample: usize,
    /// The attribution method.
    #[arg(long, default_value = "ig", value_parser = ["saliency", "gradxinput", "ig", "smoothgrad"])]
    pub method: String,
    /// The class to explain, by index or name (default: the predicted one).
    #[arg(long)]
    pub class: Option<String>,
    /// Integrated gradients: path steps (default 64).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Integrated gradients: the baseline value (default 0).
    #[arg(long)]
    pub baseline: Option<f32>,
    /// SmoothGrad: noisy samples (default 32).
    #[arg(long)]
    pub samples: Option<usize>,
    /// SmoothGrad: noise as a fraction of the input's range (default 0.15).
    #[arg(long)]
    pub noise: Option<f32>,
    /// SmoothGrad: seed of the noise (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The heat map of an image input (default: NETWORK-SAMPLE-METHOD.png).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Rows of a tabular input's feature table (default: all).
    #[arg(long)]
    pub top: Option<usize>,
}

/// A compiled model and its program.
struct Program {
    source: SourceFile,
    network: String,
    config: TrainConfig,
    exe: PathBuf,
    /// The directory paths in the `train` block are relative to.
    base: PathBuf,
    /// `C,H,W` of the network's one float input declared with three
    /// dimensions after the batch (drawn as an image by `explain`).
    image: Option<String>,
}

/// What stops a command before its program runs: diagnostics against the
/// model, or another error.
pub enum Failure {
    /// Errors in (or about) the model file, rendered like the compiler's.
    Model(SourceFile, Vec<Diagnostic>),
    /// Anything else.
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Other(e.into())
    }
}

/// Set when Ctrl-C reached nnc: the program (or cargo) got it too and
/// handles it; nnc only waits and reports.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether Ctrl-C was pressed since nnc started.
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Compiles the model and builds its program.
fn program(m: &ModelArgs) -> Result<Program, Failure> {
    program_with(m, false, false)
}

/// [`program`], with `input_gradient` when `explain`, with the int8 plan
/// when `int8`.
fn program_with(m: &ModelArgs, explain: bool, int8: bool) -> Result<Program, Failure> {
    // Ctrl-C goes to the whole process group: cargo or the model's program
    // handles it, and nnc waits for them to finish.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst));
    let text = std::fs::read_to_string(&m.file)
        .with_context(|| format!("cannot read {}", m.file.display()))?;
    let source = SourceFile::new(m.file.display().to_string(), text);
    let module = match nnc_compiler::check_source(&source) {
        Ok(module) => module,
        Err(e) => return Err(Failure::Model(source, e.diagnostics)),
    };
    let net = pick(&module, m.network.as_deref()).map_err(Failure::Other)?;
    let config = module.train_config(&net.name);
    // The generated program reads the teacher's weights at its first step;
    // a missing file is caught here, at the string that names it.
    if let Some(t) = config.teacher.as_ref().filter(|_| !net.frozen.is_empty()) {
        let base = m.file.parent().unwrap_or_else(|| Path::new(""));
        let path = base.join(&t.path);
        if !path.is_file() {
            let d = Diagnostic::new(
                ErrorKind::Invalid,
                t.path_span,
                format!("teacher weights file `{}` does not exist", path.display()),
            )
            .with_label("no such file")
            .with_help(format!(
                "train the teacher first (`nnc train FILE --network {} --out DIR`); paths in a train block are relative to the .nn file",
                t.network
            ));
            return Err(Failure::Model(source, vec![d]));
        }
    }
    let opts = nnc_compiler::codegen::Options {
        runtime: "::nnc_runtime".into(),
        explain,
        quantize: int8.then_some(nnc_compiler::codegen::Quantize::Int8),
        ..Default::default()
    };
    // Only this network: another of the file may not even train.
    let one = Module {
        networks: vec![net.clone()],
        trains: module
            .trains
            .iter()
            .filter(|t| t.network == net.name)
            .cloned()
            .collect(),
    };
    let code = match driver::generate(&source, &one, &opts) {
        Ok(code) => code,
        Err(e) => return Err(Failure::Model(source, e.diagnostics)),
    };
    let cache = Cache::locate()?;
    if !m.debug && !cache.target_dir().join("release").exists() {
        eprintln!(
            "nnc: building the runtime once for nnc {} (about a minute; later models build in seconds)…",
            env!("CARGO_PKG_VERSION")
        );
    }
    let exe = cache.build(
        &Generated {
            network: &net.name,
            source: &m.file,
            code: &code,
            int8,
        },
        m.debug,
    )?;
    let base = m
        .file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let images: Vec<String> = net
        .inputs
        .iter()
        .filter(|i| i.kind == nnc_compiler::ir::InputKind::Features)
        .filter(|i| i.ty.dtype == nnc_compiler::graph::DType::F32)
        .map(|i| i.ty.shape.resolve(1))
        .filter(|d| d.len() == 4)
        .map(|d| format!("{},{},{}", d[1], d[2], d[3]))
        .collect();
    Ok(Program {
        network: net.name.clone(),
        source,
        config,
        exe,
        base,
        image: match images.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        },
    })
}

/// The network a command trains: the named one, else the one with a
/// `train` block, else the first.
fn pick<'a>(module: &'a Module, name: Option<&str>) -> anyhow::Result<&'a Network> {
    match name {
        Some(n) => module.network(n).with_context(|| {
            let names: Vec<&str> = module.networks.iter().map(|n| n.name.as_str()).collect();
            format!("no network named `{n}`; the file has {}", names.join(", "))
        }),
        None => module
            .networks
            .iter()
            .find(|n| module.trains.iter().any(|t| t.network == n.name))
            .or_else(|| module.networks.first())
            .context("the file defines no network"),
    }
}

/// The arguments that describe a data file to the program: the command
/// line's, else the `train` block's `source` (whose path must exist,
/// else the error points at it).
fn data_flags(
    p: &Program,
    cli: &DataArgs,
    block: Option<&DataSource>,
    what: &str,
) -> Result<Vec<OsString>, Failure> {
    let mut flags: Vec<OsString> = Vec::new();
    let path = match (&cli.data, block) {
        (Some(path), _) => {
            if !path.exists() {
                return Err(anyhow::anyhow!("{what} file {} does not exist", path.display()).into());
            }
            path.clone()
        }
        (None, Some(src)) => {
            let path = p.base.join(&src.path);
            if !path.exists() {
                let d = Diagnostic::new(
                    ErrorKind::Invalid,
                    src.path_span,
                    format!("{what} file `{}` does not exist", path.display()),
                )
                .with_label("no such file")
                .with_help("paths in a train block are relative to the .nn file");
                return Err(Failure::Model(p.source.clone(), vec![d]));
            }
            path
        }
        (None, None) => {
            return Err(anyhow::anyhow!(
                "no {what}: name it in the train block (`data: csv(\"file.csv\", label: y);`) or pass --data"
            )
            .into())
        }
    };
    flags.push("--data".into());
    flags.push(shown(&path).into_os_string());
    // The block's CSV mapping applies to its own files and to files given
    // on the command line, unless the command line maps columns itself.
    let mapping = block.and_then(|s| match &s.format {
        DataFormat::Csv {
            label,
            delimiter,
            header,
            columns,
        } => Some((label, delimiter, header, columns)),
        DataFormat::Idx => None,
    });
    let cli_maps = cli.label.is_some() || !cli.columns.is_empty();
    if let Some(label) = cli
        .label
        .as_ref()
        .or(mapping.and_then(|m| m.0.as_ref()).filter(|_| !cli_maps))
    {
        flags.push("--label".into());
        flags.push(label.into());
    }
    let columns: Vec<String> = if cli_maps {
        cli.columns.clone()
    } else {
        mapping
            .map(|m| m.3.iter().map(|(i, c, _)| format!("{i}={c}")).collect())
            .unwrap_or_default()
    };
    for c in columns {
        flags.push("--column".into());
        flags.push(c.into());
    }
    if let Some((_, Some(d), _, _)) = mapping {
        flags.push("--delimiter".into());
        flags.push(d.to_string().into());
    }
    if let Some((_, _, Some(false), _)) = mapping {
        flags.push("--no-header".into());
    }
    Ok(flags)
}

/// Runs the program with `args`, passing its exit status through. Ctrl-C
/// reaches the program (it stops after its current step and saves); nnc
/// itself waits for it.
pub(super) fn run(exe: &Path, args: &[OsString]) -> anyhow::Result<ExitCode> {
    let status = Command::new(exe)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// `path` as the user would write it: symbolic links and `..` resolved,
/// relative to the working directory when it lies below it (paths in a
/// train block are joined onto the model's directory, which reads badly
/// in messages: `models/../../data/x.csv`).
fn shown(path: &Path) -> PathBuf {
    let Ok(full) = path.canonicalize() else {
        return path.to_path_buf();
    };
    std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| full.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(full)
}

/// The default run directory of a network.
fn default_out(network: &str) -> PathBuf {
    Path::new("runs").join(network)
}

/// `nnc train`.
pub fn train(a: &TrainArgs) -> Result<ExitCode, Failure> {
    let p = program(&a.model)?;
    let mut args: Vec<OsString> = vec!["train".into()];
    args.extend(data_flags(&p, &a.data, p.config.data.as_ref(), "data")?);
    let fraction = a.validation.or(match p.config.validation {
        Some(Validation::Fraction(f)) => Some(f),
        _ => None,
    });
    match (fraction, &p.config.validation) {
        (Some(f), _) => {
            args.push("--validation".into());
            args.push(f.to_string().into());
        }
        (None, Some(Validation::Data(src))) => {
            let flags = data_flags(&p, &DataArgs::default(), Some(src), "validation data")?;
            args.push("--validation-data".into());
            args.push(flags[1].clone());
        }
        (None, _) => {}
    }
    match (&a.test, &p.config.test) {
        (Some(t), _) => {
            args.push("--test".into());
            args.push(t.into());
        }
        (None, Some(src)) => {
            let flags = data_flags(&p, &DataArgs::default(), Some(src), "test data")?;
            args.push("--test".into());
            args.push(flags[1].clone());
        }
        (None, None) => {}
    }
    let out = a.out.clone().unwrap_or_else(|| default_out(&p.network));
    args.push("--out".into());
    args.push(out.into_os_string());
    let numbers: [(&str, Option<String>); 5] = [
        ("--epochs", a.epochs.map(|v| v.to_string())),
        ("--batch", a.batch.map(|v| v.to_string())),
        ("--lr", a.lr.map(|v| v.to_string())),
        ("--seed", a.seed.map(|v| v.to_string())),
        ("--threads", a.threads.map(|v| v.to_string())),
    ];
    for (flag, v) in numbers {
        if let Some(v) = v {
            args.push(flag.into());
            args.push(v.into());
        }
    }
    for (flag, on) in [
        ("--resume", a.resume),
        ("--overwrite", a.overwrite),
        ("--quiet", a.quiet),
    ] {
        if on {
            args.push(flag.into());
        }
    }
    Ok(run(&p.exe, &args)?)
}

/// `nnc eval`.
pub fn eval(a: &EvalArgs) -> Result<ExitCode, Failure> {
    let p = program_with(&a.model, false, a.int8)?;
    let mut args = a.weights.command("eval", &p.network, a.int8)?;
    // Without --data: the block's test data, else its data.
    let block = p.config.test.as_ref().or(p.config.data.as_ref());
    args.extend(data_flags(&p, &a.data, block, "evaluation data")?);
    Ok(run(&p.exe, &args)?)
}

/// `nnc predict`.
pub fn predict(a: &PredictArgs) -> Result<ExitCode, Failure> {
    let p = program_with(&a.model, false, a.int8)?;
    let mut args = a.weights.command("predict", &p.network, a.int8)?;
    // The block's mapping (its label column is skipped when present).
    args.extend(data_flags(&p, &a.data, p.config.data.as_ref(), "data")?);
    args.push("--output".into());
    args.push(a.output.clone().into_os_string());
    Ok(run(&p.exe, &args)?)
}

/// `nnc explain`: the model's program built with `input_gradient`, run on
/// one sample of the data.
pub fn explain(a: &ExplainArgs) -> Result<ExitCode, Failure> {
    let p = program_with(&a.model, true, false)?;
    let mut args = a.weights.command("explain", &p.network, false)?;
    // Without --data: the block's test data, else its data.
    let block = p.config.test.as_ref().or(p.config.data.as_ref());
    args.extend(data_flags(&p, &a.data, block, "data")?);
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}-{}-{}.png", p.network, a.sample, a.method)));
    for (flag, value) in [
        ("--sample", Some(a.sample.to_string())),
        ("--method", Some(a.method.clone())),
        ("--class", a.class.clone()),
        ("--steps", a.steps.map(|v| v.to_string())),
        ("--baseline", a.baseline.map(|v| v.to_string())),
        ("--samples", a.samples.map(|v| v.to_string())),
        ("--noise", a.noise.map(|v| v.to_string())),
        ("--seed", a.seed.map(|v| v.to_string())),
        ("--top", a.top.map(|v| v.to_string())),
        ("--image", p.image.clone()),
    ] {
        if let Some(v) = value {
            args.push(flag.into());
            args.push(v.into());
        }
    }
    args.push("--output".into());
    args.push(output.into_os_string());
    Ok(run(&p.exe, &args)?)
}
