//! `nnc data convert IN... -o OUT`: CSV or IDX files to an nnc shard. The
//! conversion is the runtime's (`nnc_runtime::data::convert`); like
//! `train`, nnc builds a small program for it in the cache (once per nnc
//! version) and hands over, so the compiler never links the runtime.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use super::cache::Cache;

/// `nnc data`'s commands.
#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Convert a CSV file (the last column the label), or an IDX file of
    /// samples and optionally one of labels, to a shard that `fit` streams.
    Convert(ConvertArgs),
}

/// `nnc data convert`'s arguments.
#[derive(clap::Args)]
pub struct ConvertArgs {
    /// A CSV file (`.csv`), or an IDX file of samples and optionally one of
    /// labels (raw or gzip).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The shard to write: a regular file (replaced atomically) or a new
    /// path; never an input, a device, a FIFO or a link's target.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Rows per checksummed block (0: as many as fit in 4 KiB, at least
    /// one, so a rank that reads only its rows reads little beyond them).
    #[arg(long, default_value_t = 0)]
    pub chunk_rows: u32,
    /// Build the conversion program unoptimised (faster to build).
    #[arg(long)]
    pub debug: bool,
}

/// Runs an `nnc data` command.
pub fn run(command: &DataCommand) -> anyhow::Result<ExitCode> {
    let DataCommand::Convert(a) = command;
    for p in &a.inputs {
        if !p.is_file() {
            bail!("{}: no such file", p.display());
        }
    }
    if let Ok(m) = std::fs::symlink_metadata(&a.output) {
        if !m.is_file() {
            bail!(
                "{}: a shard is written only to a regular file or a new path",
                a.output.display()
            );
        }
    }
    let out = a.output.canonicalize().ok();
    if let Some(p) = a
        .inputs
        .iter()
        .find(|p| out.is_some() && p.canonicalize().ok() == out)
    {
        bail!(
            "{}: the output is an input; choose another path",
            p.display()
        );
    }
    let exe = Cache::locate()?.build_data_tool(a.debug)?;
    let mut args: Vec<OsString> = vec![
        // One argument, so that a path starting with `-` stays a path.
        {
            let mut o = OsString::from("--output=");
            o.push(&a.output);
            o
        },
        "--chunk-rows".into(),
        a.chunk_rows.to_string().into(),
        "--".into(),
    ];
    args.extend(a.inputs.iter().map(|p| p.clone().into_os_string()));
    super::run::run(&exe, &args)
}
