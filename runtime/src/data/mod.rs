//! Training data: named columns in memory, readers that fill them, the
//! match of columns to a model's inputs, and a mini-batch loader.
//!
//! A [`Dataset`] is a set of named tensors, one row per sample: features
//! of any shape, token ids, class labels per sample or per position,
//! real-valued or binary targets. [`bind::Binding`] matches its columns to
//! a model's declared inputs and labels by name and checks every value
//! before training starts; [`bind::Batcher`] copies a batch of samples into
//! buffers allocated once, so the training loop allocates nothing per
//! batch. Readers: [`csv`] (with a column mapping), [`idx`] (MNIST and its
//! relatives), and in-memory vectors ([`Column::f32`], [`Column::classes`]);
//! [`synthetic`] generates the data of the examples that need no download.

pub mod augment;
pub mod bind;
pub mod convert;
pub mod csv;
mod dataset;
pub mod idx;
pub mod idx_stream;
mod loader;
pub mod shard;
pub mod stream;
pub mod synthetic;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use augment::Augmenter;
pub use bind::{Batcher, Binding};
pub use dataset::{Column, CsvFields, Dataset, Origin, SplitMode, Values};
pub use loader::{Loader, LoaderConfig, LoaderState};
pub use stream::{RankRows, ShardSet, ShardStream, StreamConfig};

/// Why data could not be read or served. File errors name the file; CSV
/// errors point at `file:line:column`.
#[derive(Debug, Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: {error}", path.display())]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error. Shown in the message and not exposed as
        /// [`std::error::Error::source`], so a chain prints it once.
        error: std::io::Error,
    },
    /// An IDX file is corrupt, truncated or not IDX at all.
    #[error("{}: invalid IDX file: {reason}", path.display())]
    Idx {
        /// File involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A CSV field or row that cannot be used, with its position (1-based).
    #[error("{}:{line}:{column}: {reason}", path.display())]
    Csv {
        /// File involved.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based character column where the bad field starts.
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// A problem with a file as a whole (e.g. image and label counts differ).
    #[error("{}: {reason}", path.display())]
    File {
        /// File involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The data does not fit the model's inputs.
    #[error("{what} does not fit model `{model}`: {reason}")]
    Mismatch {
        /// "training set", "validation set", ...
        what: String,
        /// The network's name.
        model: String,
        /// What differs, naming the input, the file and the column.
        reason: String,
    },
    /// Inconsistent in-memory data or arguments.
    #[error("{0}")]
    Invalid(String),
}

/// MNIST's standard train and test sets.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// Training set (60,000 digits in the full set).
    pub train: Dataset,
    /// Test set (10,000 digits in the full set).
    pub test: Dataset,
}

/// Loads MNIST from `dir` holding the four standard IDX files
/// (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
/// `t10k-labels-idx1-ubyte`), each raw or with a `.gz` suffix.
///
/// Each set has two columns: `image`, pixels scaled to `[0, 1]` (`byte /
/// 255`) with shape `[28, 28]` as in the file (a model's `f32[batch, 784]`
/// or `f32[batch, 1, 28, 28]` input takes it: inputs match by element
/// count), and `label`, classes 0–9.
pub fn load_mnist(dir: impl AsRef<Path>) -> Result<Mnist, DataError> {
    let dir = dir.as_ref();
    Ok(Mnist {
        train: idx::load_pair(
            &find_file(dir, "train-images-idx3-ubyte")?,
            &find_file(dir, "train-labels-idx1-ubyte")?,
        )?,
        test: idx::load_pair(
            &find_file(dir, "t10k-images-idx3-ubyte")?,
            &find_file(dir, "t10k-labels-idx1-ubyte")?,
        )?,
    })
}

/// `dir/stem.gz` or `dir/stem`, whichever exists.
fn find_file(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    let raw = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    for p in [&gz, &raw] {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    Err(DataError::Io {
        path: raw,
        error: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("neither {stem} nor {stem}.gz exists"),
        ),
    })
}

#[cfg(test)]
pub(crate) mod tests;
