//! The `nnc` command-line tool.

mod cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nnc_compiler::driver::{self, training_graph};
use nnc_compiler::{graph, report, SourceFile};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// nnc compiles neural networks written in its language to specialised Rust,
/// and trains, evaluates and runs them: `nnc train model.nn`.
#[derive(Parser)]
#[command(name = "nnc", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on the data its train block names (or --data): build it,
    /// fit it, write checkpoints, metrics, the best weights and the curves.
    Train(cli::run::TrainArgs),
    /// Evaluate trained weights: the loss, the metrics, a confusion matrix.
    Eval(cli::run::EvalArgs),
    /// Predict with trained weights: one CSV row per sample.
    Predict(cli::run::PredictArgs),
    /// Explain one prediction: attributions of a sample's inputs (a PNG heat
    /// map for an image, a ranked feature table for tabular data).
    Explain(cli::run::ExplainArgs),
    /// Data sets: `nnc data convert IN... -o OUT` writes CSV or IDX files as
    /// a shard that training streams from disk.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
    /// Sliced checkpoints (pipeline stages, split layers): `nnc checkpoint
    /// merge MODEL DIR -o FILE` writes one ordinary checkpoint of the whole
    /// network, `nnc checkpoint split MODEL FILE -o DIR` the slices again.
    #[command(subcommand)]
    Checkpoint(cli::checkpoint::CheckpointCommand),
    /// Check a model: print each parameter, the totals and FLOPs, or the errors.
    Check {
        /// The .nn file.
        file: PathBuf,
    },
    /// Compile a model to Rust training code.
    Compile {
        /// The .nn file.
        file: PathBuf,
        /// Output file (default, or `-`: standard output). A regular file is
        /// replaced atomically; a device or FIFO is written in place; the
        /// model file itself is refused.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The path generated code uses for the runtime crate.
        #[arg(long, default_value = "::nnc::runtime")]
        runtime: String,
        /// Optimisation level: 0 (none), 1 (fold, CSE, DCE), 2 (all).
        #[arg(short = 'O', default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
        opt: u8,
        /// Skip a graph pass (repeatable); see --list-passes.
        #[arg(long = "disable-pass")]
        disable: Vec<String>,
        /// Print the graph passes and exit.
        #[arg(long)]
        list_passes: bool,
        /// Print nodes, kernels, workspace bytes (naive, planned, lower bound)
        /// and FLOPs of one training step to standard error.
        #[arg(long)]
        stats: bool,
        /// Print which elementwise nodes were fused into one loop and why
        /// each other one was not, to standard error.
        #[arg(long)]
        explain_fusion: bool,
        /// Also generate `input_gradient` (the gradient of the prediction
        /// with respect to the float inputs, for attributions).
        #[arg(long)]
        explain: bool,
        /// Also generate an int8 inference plan (`int8_plan`, `quantize_int8`,
        /// `load_int8`) and print which ops run int8 and which stay f32 to
        /// standard error.
        #[arg(long, value_enum)]
        quantize: Option<QuantizeArg>,
        /// With --quantize int8: calibrate on data and write int8 weights.
        #[command(flatten)]
        calibration: cli::run::CalibrateArgs,
    },
    /// Write the graph of a network.
    Graph {
        /// The .nn file.
        file: PathBuf,
        /// Write Graphviz (the only format for now).
        #[arg(long)]
        dot: bool,
        /// The training graph (forward and backward) instead of the forward graph.
        #[arg(long)]
        train: bool,
        /// Which network, when the file has several (default: the first).
        #[arg(long)]
        network: Option<String>,
        /// Output file (default, or `-`: standard output). A regular file is
        /// replaced atomically; a device or FIFO is written in place; the
        /// model file itself is refused.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// `--quantize`'s values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum QuantizeArg {
    /// Post-training int8 (u8 activations, per-channel 7-bit weights).
    Int8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(path: &Path) -> anyhow::Result<SourceFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

/// Prints diagnostics the way rustc does and returns the failure exit code.
fn fail(source: &SourceFile, diagnostics: &[nnc_compiler::Diagnostic]) -> ExitCode {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    eprint!("{}", source.render(diagnostics, color));
    let n = diagnostics.len();
    eprintln!(
        "error: could not compile `{}` due to {n} previous error{}",
        source.name,
        if n == 1 { "" } else { "s" }
    );
    ExitCode::FAILURE
}

/// Warns when a training step needs more memory than this machine has,
/// and fails when it needs more than a 64-bit address space holds (2^48
/// bytes): no machine could train it.
fn memory_limits(network: &str, total: u128) -> Option<ExitCode> {
    if total > 1 << 48 {
        eprintln!(
            "error: a training step of `{network}` needs {}, more than a 64-bit machine can address",
            report::bytes(total)
        );
        return Some(ExitCode::FAILURE);
    }
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u128>().ok()
    });
    if let Some(kb) = physical.filter(|kb| total > kb * 1024) {
        eprintln!(
            "warning: a training step of `{network}` needs {}, more than this machine's {} of memory",
            report::bytes(total),
            report::bytes(kb * 1024)
        );
    }
    None
}

/// The exit code of a command that builds and runs a model's program.
fn launched(result: Result<ExitCode, cli::run::Failure>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(code) => Ok(code),
        Err(cli::run::Failure::Model(source, diagnostics)) => Ok(fail(&source, &diagnostics)),
        Err(cli::run::Failure::Other(e)) => Err(e),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Train(a) => launched(cli::run::train(&a)),
        Command::Eval(a) => launched(cli::run::eval(&a)),
        Command::Predict(a) => launched(cli::run::predict(&a)),
        Command::Explain(a) => launched(cli::run::explain(&a)),
        Command::Data(c) => cli::data::run(&c),
        Command::Checkpoint(c) => launched(cli::checkpoint::run(&c)),
        Command::Check { file } => {
            let source = load(&file)?;
            let module = match nnc_compiler::check_source(&source) {
                Ok(m) => m,
                Err(e) => return Ok(fail(&source, &e.diagnostics)),
            };
            for net in &module.networks {
                let tg = match training_graph(&module, net) {
                    Ok(tg) => tg,
                    Err(d) => return Ok(fail(&source, &[d])),
                };
                print!("{}", report::summary(net, &tg));
                let memory = report::step_memory(net, &tg, &module.train_config(&net.name));
                print!("{}", report::memory_line(&memory));
                if let Some(code) = memory_limits(&net.name, memory.total()) {
                    return Ok(code);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Compile {
            file,
            output,
            runtime,
            opt,
            disable,
            list_passes,
            stats,
            explain_fusion,
            explain,
            quantize,
            calibration,
        } => {
            use nnc_compiler::passes::{OptLevel, PASS_NAMES};
            if list_passes {
                for p in PASS_NAMES {
                    println!("{p}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(bad) = disable.iter().find(|d| !PASS_NAMES.contains(&d.as_str())) {
                anyhow::bail!(
                    "unknown pass `{bad}`; the passes are: {}",
                    PASS_NAMES.join(", ")
                );
            }
            let opt_level = [OptLevel::O0, OptLevel::O1, OptLevel::O2][usize::from(opt)];
            let opts = nnc_compiler::codegen::Options {
                runtime,
                opt_level,
                disabled_passes: disable,
                explain,
                quantize: quantize.map(|QuantizeArg::Int8| nnc_compiler::codegen::Quantize::Int8),
                ..Default::default()
            };
            let source = load(&file)?;
            let module = match nnc_compiler::check_source(&source) {
                Ok(m) => m,
                Err(e) => return Ok(fail(&source, &e.diagnostics)),
            };
            let (code, reports) = match driver::generate_with_int8_report(&source, &module, &opts) {
                Ok(c) => c,
                Err(e) => return Ok(fail(&source, &e.diagnostics)),
            };
            // With --stats or --explain-fusion and no -o, only the report.
            if output.is_some() || !(stats || explain_fusion) {
                cli::output::write(output.as_deref(), &file, &code)?;
            }
            for (net, lines) in reports {
                eprintln!("int8 plan of `{net}`:");
                for l in lines {
                    eprintln!("  {l}");
                }
            }
            if explain_fusion {
                for net in &module.networks {
                    let cfg = module.train_config(&net.name);
                    match driver::explain_fusion(&source, net, &cfg, &opts) {
                        Ok(text) => eprint!("{text}"),
                        Err(e) => return Ok(fail(&source, &e.diagnostics)),
                    }
                }
            }
            if stats {
                for net in &module.networks {
                    let cfg = module.train_config(&net.name);
                    let s = match driver::stats(net, &cfg, &opts) {
                        Ok(s) => s,
                        Err(e) => return Ok(fail(&source, &e.diagnostics)),
                    };
                    eprint!("{}", report::stats(&net.name, &s));
                }
            }
            launched(cli::run::calibrate(&file, &calibration))
        }
        Command::Graph {
            file,
            dot: _,
            train,
            network,
            output,
        } => {
            let source = load(&file)?;
            let module = match nnc_compiler::check_source(&source) {
                Ok(m) => m,
                Err(e) => return Ok(fail(&source, &e.diagnostics)),
            };
            let net = match &network {
                Some(name) => module
                    .network(name)
                    .with_context(|| format!("no network named `{name}` in {}", source.name))?,
                None => module
                    .networks
                    .first()
                    .with_context(|| format!("{} defines no network", source.name))?,
            };
            let text = if train {
                let tg = match training_graph(&module, net) {
                    Ok(tg) => tg,
                    Err(d) => return Ok(fail(&source, &[d])),
                };
                graph::to_dot(&tg.graph, &net.name, Some(tg.forward_len))
            } else {
                graph::to_dot(&net.graph, &net.name, None)
            };
            cli::output::write(output.as_deref(), &file, &text)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
