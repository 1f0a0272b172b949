//! The data tool `nnc data convert` builds and runs (feature `app`): CSV or
//! IDX files to a shard, converted in blocks (see
//! [`crate::data::convert`]). A CSV file maps as a model's data does by
//! default (the last column the label `label`, the rest the input
//! `features`); IDX takes the samples' file and, optionally, the labels'.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::data::convert::{csv_to_shard, idx_to_shard};
use crate::data::csv::CsvOptions;
use crate::data::shard::DEFAULT_CHUNK_ROWS;

/// `convert IN... -o OUT`.
#[derive(Parser)]
#[command(name = "nnc data convert", about = "CSV or IDX files to an nnc shard")]
struct Args {
    /// A CSV file (`.csv`), or an IDX file of samples and optionally one of
    /// labels (raw or gzip).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The shard to write (a regular file, replaced atomically, or a new
    /// path).
    #[arg(short, long)]
    output: PathBuf,
    /// Rows per checksummed block (0: about 4 KiB of rows a block).
    #[arg(long, default_value_t = DEFAULT_CHUNK_ROWS)]
    chunk_rows: u32,
}

/// Parses the command line and converts; errors go to stderr with exit
/// status 1 (2 for usage).
pub fn main() -> ExitCode {
    let a = Args::parse();
    match convert(&a) {
        Ok(rows) => {
            println!("wrote {rows} rows to {}", a.output.display());
            ExitCode::SUCCESS
        }
        Err((code, e)) => {
            eprintln!("error: {e}");
            ExitCode::from(code)
        }
    }
}

fn convert(a: &Args) -> Result<u64, (u8, String)> {
    let usage = |m: String| (2u8, m);
    let same = |p: &PathBuf| match (p.canonicalize(), a.output.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if let Some(p) = a.inputs.iter().find(|p| same(p)) {
        return Err(usage(format!(
            "the output {} is an input; choose another path",
            p.display()
        )));
    }
    let csv = |p: &PathBuf| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let result = match a.inputs.as_slice() {
        [one] if csv(one) => csv_to_shard(one, &CsvOptions::default(), &a.output, a.chunk_rows),
        [images] => idx_to_shard(images, None, &a.output, a.chunk_rows),
        [images, labels] if !csv(images) && !csv(labels) => {
            idx_to_shard(images, Some(labels), &a.output, a.chunk_rows)
        }
        _ => {
            return Err(usage(
                "give one CSV file, or an IDX file of samples and optionally one of labels".into(),
            ))
        }
    };
    result.map_err(|e| (1, e.to_string()))
}
