//! The checkpoint tool `nnc checkpoint merge|split` builds and runs
//! (feature `app`): a sliced checkpoint (pipeline stages, split layers) to
//! one ordinary training checkpoint of the whole network and back
//! ([`crate::checkpoint::sliced`]). The compiler reads the model file and
//! hands the tool the network's [`Slicing`] — the whole network's
//! parameter table and hash, each slice's part models — as a file, so
//! the tool depends on no model.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nnc_spec::slices::{Slicing, Table};
use nnc_spec::{LossKind, LossSpec, ModelSpec, TrainSpec};

use crate::checkpoint::sliced;

/// `merge DIR -o FILE` or `split FILE -o DIR`, each with `--slicing`.
#[derive(Parser)]
#[command(
    name = "nnc checkpoint",
    about = "Sliced checkpoints to one ordinary checkpoint and back"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Merge the sliced checkpoint in DIR into one ordinary checkpoint.
    Merge {
        /// The network's slicing (written by `nnc checkpoint`).
        #[arg(long)]
        slicing: PathBuf,
        /// The sliced checkpoint's directory.
        dir: PathBuf,
        /// The checkpoint to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Split an ordinary training checkpoint into the slices of a layout.
    Split {
        /// The network's slicing (written by `nnc checkpoint`).
        #[arg(long)]
        slicing: PathBuf,
        /// The ordinary training checkpoint (with optimizer state).
        checkpoint: PathBuf,
        /// The sliced checkpoint's directory (a new generation in it).
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// Parses the command line and runs it; errors go to stderr with exit
/// status 1 (2 for usage).
pub fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a.command) {
        Ok(said) if said.is_empty() => ExitCode::SUCCESS,
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(command: &Command) -> Result<String, String> {
    match command {
        Command::Merge {
            slicing,
            dir,
            output,
        } => {
            let s = read_slicing(slicing)?;
            let m = sliced::merge(dir, &spec(&s.whole), output).map_err(|e| e.to_string())?;
            let said = format!(
                "merged {} of `{}` at step {} into {}",
                m.layout,
                m.network,
                m.step,
                output.display()
            );
            // The checkpoint itself went to standard output.
            if nnc_spec::output::is_stdout(output) {
                eprintln!("{said}");
                return Ok(String::new());
            }
            Ok(said)
        }
        Command::Split {
            slicing,
            checkpoint,
            output,
        } => {
            let s = read_slicing(slicing)?;
            let parts: Vec<Vec<ModelSpec>> = s
                .slices
                .iter()
                .map(|models| models.iter().map(spec).collect())
                .collect();
            let refs: Vec<Vec<&ModelSpec>> = parts.iter().map(|p| p.iter().collect()).collect();
            let m = sliced::split(checkpoint, &spec(&s.whole), s.layout, &refs, output)
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "split `{}` at step {} into {} in {} (generation {})",
                m.network,
                m.step,
                m.layout,
                output.display(),
                m.generation
            ))
        }
    }
}

fn read_slicing(path: &Path) -> Result<Slicing, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Slicing::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The model spec of a table: its name, hash and parameters, all that
/// merging and splitting read (the rest stays empty: nothing here builds
/// or trains the model).
fn spec(t: &Table) -> ModelSpec {
    ModelSpec {
        name: Cow::Owned(t.name.clone()),
        source: Cow::Borrowed(""),
        hash: t.hash,
        param_count: t.params.iter().map(|p| p.len).sum(),
        params: Cow::Owned(t.params.clone()),
        inits: Cow::Borrowed(&[]),
        inputs: Cow::Borrowed(&[]),
        outputs: Cow::Borrowed(&[]),
        loss: LossSpec {
            kind: LossKind::Other,
            scores: 0,
        },
        train: TrainSpec::default(),
    }
}
