//! `nnc checkpoint merge MODEL DIR -o FILE` and `nnc checkpoint split
//! MODEL FILE -o DIR`: a sliced checkpoint (written by pipeline stages or
//! split layers, one file per slice and a manifest) to one ordinary
//! training checkpoint of the whole network, and back. The model file
//! says how the network is cut (its `stages:` or `split:`); nnc computes
//! the cut's parameter tables ([`driver::slicing`]) and hands them, as a
//! file, to the runtime's checkpoint tool, which it builds in the cache as
//! `nnc data convert` builds the data tool: the compiler never links the
//! runtime.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use nnc_compiler::driver;
use nnc_compiler::ir::{Module, Network};
use nnc_compiler::SourceFile;
use nnc_spec::output;

use super::cache::Cache;
use super::run::Failure;

/// `nnc checkpoint`'s commands.
#[derive(clap::Subcommand)]
pub enum CheckpointCommand {
    /// Merge a sliced checkpoint (the directory a pipelined or split run
    /// saves) into one ordinary checkpoint of the whole network, which
    /// `nnc eval`, `nnc train --resume` and `load_weights` read.
    Merge(MergeArgs),
    /// Split one ordinary training checkpoint of the whole network into
    /// the slices of the model's `stages:` or `split:`, to resume a
    /// pipelined or split run from it.
    Split(SplitArgs),
}

/// What both commands take besides their input and output.
#[derive(clap::Args)]
pub struct ModelArg {
    /// The .nn file whose network (with `stages:` or `split:`) the
    /// checkpoint is of.
    pub model: PathBuf,
    /// Which network, when the file has several (default: the first with
    /// `stages:` or `split:`).
    #[arg(long)]
    pub network: Option<String>,
    /// Build the checkpoint tool unoptimised (faster to build).
    #[arg(long)]
    pub debug: bool,
}

/// `nnc checkpoint merge`'s arguments.
#[derive(clap::Args)]
pub struct MergeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The sliced checkpoint's directory (its `manifest.txt` names the
    /// slices).
    pub dir: PathBuf,
    /// The checkpoint to write: a regular file (replaced atomically) or a
    /// new path (a symlink is followed, a device written in place, `-` is
    /// standard output); never one of the slices or the manifest.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// `nnc checkpoint split`'s arguments.
#[derive(clap::Args)]
pub struct SplitArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The ordinary training checkpoint (`last.safetensors`, with its
    /// optimizer state).
    pub checkpoint: PathBuf,
    /// The sliced checkpoint's directory: created if missing; a sliced
    /// checkpoint of the same layout in it is replaced by a new
    /// generation, one of another network or layout refused.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Runs an `nnc checkpoint` command.
pub fn run(command: &CheckpointCommand) -> Result<ExitCode, Failure> {
    let (model, verb, input, out) = match command {
        CheckpointCommand::Merge(a) => (&a.model, "merge", &a.dir, &a.output),
        CheckpointCommand::Split(a) => (&a.model, "split", &a.checkpoint, &a.output),
    };
    check_paths(verb == "merge", model, input, out)?;
    let text = std::fs::read_to_string(&model.model)
        .with_context(|| format!("cannot read {}", model.model.display()))?;
    let source = SourceFile::new(model.model.display().to_string(), text);
    let module = match nnc_compiler::check_source(&source) {
        Ok(m) => m,
        Err(e) => return Err(Failure::Model(source, e.diagnostics)),
    };
    let (net, slicing) = match pick(&module, model.network.as_deref(), &source) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(Failure::Other(no_slicing(&module, &source, model))),
        Err(d) => return Err(d),
    };
    let cache = Cache::locate()?;
    let file = cache.stash("slicings", &net.name, &slicing.to_text())?;
    let exe = cache.build_checkpoint_tool(model.debug)?;
    let args: Vec<OsString> = vec![
        verb.into(),
        // One argument each, so that a path starting with `-` stays a path.
        flag("--slicing=", &file),
        flag("--output=", out),
        "--".into(),
        input.clone().into_os_string(),
    ];
    Ok(super::run::run(&exe, &args)?)
}

/// The mistakes found before anything is built: a merge's input is a
/// sliced checkpoint's directory and its output a file; a split's input
/// a file and its output a directory; neither output is the model file.
fn check_paths(merge: bool, model: &ModelArg, input: &Path, out: &Path) -> anyhow::Result<()> {
    if merge {
        if !input.join("manifest.txt").is_file() {
            bail!(
                "{}: not a sliced checkpoint (no manifest.txt in it)",
                input.display()
            );
        }
        if out.is_dir() {
            bail!("{}: a directory; -o names the file to write", out.display());
        }
    } else {
        if !input.is_file() {
            bail!("{}: no such file", input.display());
        }
        if output::is_stdout(out) || (out.exists() && !out.is_dir()) {
            bail!(
                "{}: not a directory; -o names the sliced checkpoint's directory",
                out.display()
            );
        }
    }
    if output::same_file(out, &model.model) {
        bail!(
            "refusing to write over the model {}: -o {} is the model file",
            model.model.display(),
            out.display()
        );
    }
    Ok(())
}

/// `--name=path` as one argument.
fn flag(name: &str, path: &Path) -> OsString {
    let mut o = OsString::from(name);
    o.push(path);
    o
}

/// The network named (or the first with a slicing) and its slicing;
/// `None` when it has none.
fn pick<'a>(
    module: &'a Module,
    name: Option<&str>,
    source: &SourceFile,
) -> Result<Option<(&'a Network, nnc_spec::slices::Slicing)>, Failure> {
    let slicing = |net: &'a Network| match driver::slicing(module, net) {
        Ok(s) => Ok(s.map(|s| (net, s))),
        Err(e) => Err(Failure::Model(source.clone(), e.diagnostics)),
    };
    match name {
        Some(n) => {
            let net = module.network(n).ok_or_else(|| {
                let names: Vec<&str> = module.networks.iter().map(|n| n.name.as_str()).collect();
                Failure::Other(anyhow::anyhow!(
                    "no network named `{n}`; the file has {}",
                    names.join(", ")
                ))
            })?;
            slicing(net)
        }
        None => {
            for net in &module.networks {
                if let Some(found) = slicing(net)? {
                    return Ok(Some(found));
                }
            }
            Ok(None)
        }
    }
}

/// Why there is nothing to merge or split for.
fn no_slicing(module: &Module, source: &SourceFile, model: &ModelArg) -> anyhow::Error {
    let which = match &model.network {
        Some(n) => format!("network `{n}` has"),
        None if module.networks.len() == 1 => {
            format!("network `{}` has", module.networks[0].name)
        }
        None => "no network of the file has".into(),
    };
    anyhow::anyhow!(
        "{}: {which} neither `stages:` nor `split:` in its train block: its checkpoints are \
         ordinary ones, with nothing to merge or split",
        source.name
    )
}
