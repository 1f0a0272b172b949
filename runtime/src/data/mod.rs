//! Training data: readers, an in-memory dataset, splits and a mini-batch loader.
//!
//! Everything is loaded into memory up front (the datasets nnc targets fit),
//! so the training loop's only data work is copying a batch into buffers the
//! generated code owns ([`Loader::next_batch`]); nothing is allocated per
//! batch. Shuffling is driven by the crate's own [`Rng`] and the loader's
//! state ([`LoaderState`]) goes into checkpoints, so a resumed run visits the
//! remaining samples of the epoch in exactly the order it would have.

pub mod csv;
pub mod idx;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::rng::Rng;

/// Why data could not be read or served. File errors name the file; CSV
/// errors point at `file:line:column`.
#[derive(Debug, Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
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
    /// Inconsistent in-memory data or arguments.
    #[error("{0}")]
    Invalid(String),
}

/// Per-sample supervision.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// One class index per sample, each `< num_classes`.
    Classes {
        /// Class of each sample.
        values: Vec<u32>,
        /// Number of classes (the width of the model's logits).
        num_classes: usize,
    },
    /// `width` real-valued targets per sample (regression), row-major.
    Targets {
        /// All targets, `len * width` values.
        values: Vec<f32>,
        /// Targets per sample.
        width: usize,
    },
}

impl Labels {
    fn count(&self) -> Option<usize> {
        match self {
            Labels::Classes { values, .. } => Some(values.len()),
            Labels::Targets { values, width } => {
                if *width == 0 {
                    None
                } else {
                    Some(values.len() / width)
                }
            }
        }
    }

    fn select(&self, indices: &[usize]) -> Labels {
        match self {
            Labels::Classes {
                values,
                num_classes,
            } => Labels::Classes {
                values: indices.iter().map(|&i| values[i]).collect(),
                num_classes: *num_classes,
            },
            Labels::Targets { values, width } => Labels::Targets {
                values: indices
                    .iter()
                    .flat_map(|&i| &values[i * width..(i + 1) * width])
                    .copied()
                    .collect(),
                width: *width,
            },
        }
    }
}

/// Where a batch's labels go; must match the dataset's [`Labels`] kind.
#[derive(Debug)]
pub enum LabelsMut<'a> {
    /// Destination for class indices.
    Classes(&'a mut [u32]),
    /// Destination for targets (`rows * width` values).
    Targets(&'a mut [f32]),
    /// Labels not wanted (e.g. inference).
    Skip,
}

/// An in-memory dataset: features row-major `[n, sample_shape...]` plus labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    features: Vec<f32>,
    sample_shape: Vec<usize>,
    labels: Labels,
}

/// How [`Dataset::split`] chooses the validation samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitMode {
    /// The last fraction of the samples, in file order: reproducible without a
    /// seed and respects files that are already ordered train-then-val.
    Tail,
    /// A seeded random subset; both parts keep the original relative order.
    Shuffled {
        /// Seed of the permutation.
        seed: u64,
    },
}

impl Dataset {
    /// Builds a dataset, checking that features, shape and labels agree and
    /// that every class index is below `num_classes`.
    pub fn new(
        features: Vec<f32>,
        sample_shape: Vec<usize>,
        labels: Labels,
    ) -> Result<Self, DataError> {
        let sample_len: usize = sample_shape.iter().product();
        if sample_len == 0 {
            return Err(DataError::Invalid(format!(
                "sample shape {sample_shape:?} has no elements"
            )));
        }
        if features.len() % sample_len != 0 {
            return Err(DataError::Invalid(format!(
                "{} feature values are not a whole number of samples of shape {sample_shape:?}",
                features.len()
            )));
        }
        let n = features.len() / sample_len;
        match &labels {
            Labels::Classes {
                values,
                num_classes,
            } => {
                if let Some((i, &c)) = values
                    .iter()
                    .enumerate()
                    .find(|(_, &c)| c as usize >= *num_classes)
                {
                    return Err(DataError::Invalid(format!(
                        "sample {i} has class {c} but there are only {num_classes} classes"
                    )));
                }
            }
            Labels::Targets { values, width } => {
                if *width == 0 || values.len() % width != 0 {
                    return Err(DataError::Invalid(format!(
                        "{} target values do not form rows of width {width}",
                        values.len()
                    )));
                }
            }
        }
        if labels.count() != Some(n) {
            return Err(DataError::Invalid(format!(
                "{n} samples but {} labels",
                labels.count().unwrap_or(0)
            )));
        }
        Ok(Dataset {
            features,
            sample_shape,
            labels,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.features.len() / self.sample_len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Shape of one sample (without the batch dimension).
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    /// Elements per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// All features, row-major.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// All labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Number of classes, for classification data.
    pub fn num_classes(&self) -> Option<usize> {
        match self.labels {
            Labels::Classes { num_classes, .. } => Some(num_classes),
            Labels::Targets { .. } => None,
        }
    }

    /// Features of sample `i`.
    pub fn sample(&self, i: usize) -> Option<&[f32]> {
        let l = self.sample_len();
        self.features.get(i * l..(i + 1) * l)
    }

    /// The same data viewed with another per-sample shape of equal size (for
    /// example MNIST's `[28, 28]` as `[784]` for a dense model).
    pub fn with_sample_shape(mut self, shape: Vec<usize>) -> Result<Self, DataError> {
        if shape.iter().product::<usize>() != self.sample_len() {
            return Err(DataError::Invalid(format!(
                "cannot view samples of shape {:?} as {shape:?}",
                self.sample_shape
            )));
        }
        self.sample_shape = shape;
        Ok(self)
    }

    /// A new dataset of the given samples, in the given order.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(DataError::Invalid(format!(
                "index {bad} out of range for {n} samples"
            )));
        }
        let l = self.sample_len();
        let mut features = Vec::with_capacity(indices.len() * l);
        for &i in indices {
            features.extend_from_slice(&self.features[i * l..(i + 1) * l]);
        }
        Ok(Dataset {
            features,
            sample_shape: self.sample_shape.clone(),
            labels: self.labels.select(indices),
        })
    }

    /// Splits into `(train, validation)` with `round(len * val_fraction)`
    /// validation samples.
    pub fn split(
        &self,
        val_fraction: f64,
        mode: SplitMode,
    ) -> Result<(Dataset, Dataset), DataError> {
        if !(0.0..=1.0).contains(&val_fraction) {
            return Err(DataError::Invalid(format!(
                "validation fraction {val_fraction} is not in [0, 1]"
            )));
        }
        let n = self.len();
        let n_val = ((n as f64) * val_fraction).round() as usize;
        let mut order: Vec<usize> = (0..n).collect();
        if let SplitMode::Shuffled { seed } = mode {
            Rng::new(seed).shuffle(&mut order);
        }
        let (train, val) = order.split_at_mut(n - n_val);
        if let SplitMode::Shuffled { .. } = mode {
            train.sort_unstable();
            val.sort_unstable();
        }
        Ok((self.subset(train)?, self.subset(val)?))
    }

    /// Copies the samples `indices` into `x` (row after row) and their labels
    /// into `y`. `x` and `y` may be longer than needed (a full-size batch
    /// buffer receiving the last partial batch); the tail is left untouched.
    pub fn gather(
        &self,
        indices: &[usize],
        x: &mut [f32],
        y: LabelsMut<'_>,
    ) -> Result<(), DataError> {
        let l = self.sample_len();
        let n = self.len();
        let rows = indices.len();
        if x.len() < rows * l {
            return Err(DataError::Invalid(format!(
                "feature buffer holds {} values, batch of {rows} needs {}",
                x.len(),
                rows * l
            )));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(DataError::Invalid(format!(
                "index {bad} out of range for {n} samples"
            )));
        }
        match (&self.labels, y) {
            (_, LabelsMut::Skip) => {}
            (Labels::Classes { values, .. }, LabelsMut::Classes(out)) => {
                if out.len() < rows {
                    return Err(DataError::Invalid(format!(
                        "label buffer holds {}, batch needs {rows}",
                        out.len()
                    )));
                }
                for (o, &i) in out.iter_mut().zip(indices) {
                    *o = values[i];
                }
            }
            (Labels::Targets { values, width }, LabelsMut::Targets(out)) => {
                let w = *width;
                if out.len() < rows * w {
                    return Err(DataError::Invalid(format!(
                        "target buffer holds {}, batch needs {}",
                        out.len(),
                        rows * w
                    )));
                }
                for (o, &i) in out.chunks_exact_mut(w).zip(indices) {
                    o.copy_from_slice(&values[i * w..(i + 1) * w]);
                }
            }
            (Labels::Classes { .. }, _) => {
                return Err(DataError::Invalid(
                    "dataset has class labels, buffer is for targets".into(),
                ))
            }
            (Labels::Targets { .. }, _) => {
                return Err(DataError::Invalid(
                    "dataset has regression targets, buffer is for classes".into(),
                ))
            }
        }
        for (row, &i) in x.chunks_exact_mut(l).zip(indices) {
            row.copy_from_slice(&self.features[i * l..(i + 1) * l]);
        }
        Ok(())
    }
}

/// Mini-batch settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch; the dataset size gives full-batch training, 1 gives
    /// pure stochastic gradient descent.
    pub batch_size: usize,
    /// Visit samples in a fresh random order each epoch.
    pub shuffle: bool,
    /// Skip the last batch of an epoch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Seed of the shuffling stream.
    pub seed: u64,
}

/// A loader's position, for checkpoints. Restoring it replays the current
/// epoch's permutation from `epoch_rng` and continues at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderState {
    /// 0-based epoch.
    pub epoch: u64,
    /// Samples of this epoch already served.
    pub position: usize,
    /// Generator state at the start of this epoch (before its shuffle).
    pub epoch_rng: [u64; 4],
    /// Dataset size the state belongs to (checked on restore).
    pub samples: usize,
}

/// Serves batches of sample indices, epoch after epoch.
///
/// Each epoch's order is the identity permutation shuffled by the loader's
/// generator, which carries over from epoch to epoch (one seeded stream for
/// the whole run).
#[derive(Debug, Clone)]
pub struct Loader {
    cfg: LoaderConfig,
    n: usize,
    order: Vec<usize>,
    epoch: u64,
    pos: usize,
    epoch_rng: [u64; 4],
    rng: Rng,
}

impl Loader {
    /// A loader over `n` samples, positioned at the start of epoch 0.
    pub fn new(n: usize, cfg: LoaderConfig) -> Result<Self, DataError> {
        if n == 0 {
            return Err(DataError::Invalid(
                "cannot load batches from an empty dataset".into(),
            ));
        }
        if cfg.batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        if cfg.drop_last && cfg.batch_size > n {
            return Err(DataError::Invalid(format!(
                "batch size {} with drop_last leaves no batch from {n} samples",
                cfg.batch_size
            )));
        }
        let rng = Rng::new(cfg.seed);
        let mut loader = Loader {
            cfg,
            n,
            order: Vec::with_capacity(n),
            epoch: 0,
            pos: 0,
            epoch_rng: rng.state(),
            rng,
        };
        loader.start_epoch();
        Ok(loader)
    }

    fn start_epoch(&mut self) {
        self.epoch_rng = self.rng.state();
        self.order.clear();
        self.order.extend(0..self.n);
        if self.cfg.shuffle {
            self.rng.shuffle(&mut self.order);
        }
        self.pos = 0;
    }

    fn end(&self) -> usize {
        if self.cfg.drop_last {
            self.n / self.cfg.batch_size * self.cfg.batch_size
        } else {
            self.n
        }
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.cfg.drop_last {
            self.n / self.cfg.batch_size
        } else {
            self.n.div_ceil(self.cfg.batch_size)
        }
    }

    /// Current 0-based epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next batch's sample indices, or `None` once at the end of each
    /// epoch (after which the loader is at the start of the next epoch).
    /// Exposed so data-parallel code can split one batch's indices into shards.
    pub fn next_indices(&mut self) -> Option<&[usize]> {
        let Some(range) = self.next_range() else {
            self.roll_over();
            return None;
        };
        self.pos = range.end;
        Some(&self.order[range])
    }

    /// Positions of the next batch in `order`, or `None` at the epoch's end.
    fn next_range(&self) -> Option<std::ops::Range<usize>> {
        let end = self.end();
        (self.pos < end).then(|| self.pos..(self.pos + self.cfg.batch_size).min(end))
    }

    fn roll_over(&mut self) {
        self.epoch += 1;
        self.start_epoch();
    }

    /// Copies the next batch into `x`/`y` and returns its row count, or
    /// `None` at the end of an epoch (see [`Loader::next_indices`]).
    pub fn next_batch(
        &mut self,
        data: &Dataset,
        x: &mut [f32],
        y: LabelsMut<'_>,
    ) -> Result<Option<usize>, DataError> {
        if data.len() != self.n {
            return Err(DataError::Invalid(format!(
                "loader built for {} samples, dataset has {}",
                self.n,
                data.len()
            )));
        }
        let Some(range) = self.next_range() else {
            self.roll_over();
            return Ok(None);
        };
        let rows = range.len();
        // Copy first, advance after: a failed copy does not skip samples.
        data.gather(&self.order[range.clone()], x, y)?;
        self.pos = range.end;
        Ok(Some(rows))
    }

    /// Snapshot for checkpoints.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            epoch: self.epoch,
            position: self.pos,
            epoch_rng: self.epoch_rng,
            samples: self.n,
        }
    }

    /// Continues from a snapshot taken by [`Loader::state`] of a loader with
    /// the same configuration; on error `self` is unchanged.
    pub fn restore(&mut self, state: &LoaderState) -> Result<(), DataError> {
        if state.samples != self.n {
            return Err(DataError::Invalid(format!(
                "loader state is for {} samples, dataset has {}",
                state.samples, self.n
            )));
        }
        if state.position > self.end() {
            return Err(DataError::Invalid(format!(
                "loader state position {} is past the end of the epoch ({})",
                state.position,
                self.end()
            )));
        }
        let rng = Rng::from_state(state.epoch_rng)
            .map_err(|e| DataError::Invalid(format!("loader state: {e}")))?;
        self.rng = rng;
        self.epoch = state.epoch;
        self.start_epoch();
        self.pos = state.position;
        Ok(())
    }
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
/// Pixels are scaled to `[0, 1]` (`byte / 255`); samples have shape
/// `[28, 28]` as in the file (use [`Dataset::with_sample_shape`] for `[784]`);
/// labels are classes 0–9.
pub fn load_mnist(dir: impl AsRef<Path>) -> Result<Mnist, DataError> {
    let dir = dir.as_ref();
    Ok(Mnist {
        train: load_mnist_pair(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
        test: load_mnist_pair(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
    })
}

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
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("neither {stem} nor {stem}.gz exists"),
        ),
    })
}

fn load_mnist_pair(dir: &Path, images: &str, labels: &str) -> Result<Dataset, DataError> {
    let ip = find_file(dir, images)?;
    let lp = find_file(dir, labels)?;
    let img = idx::read_idx(&ip)?;
    let lab = idx::read_idx(&lp)?;
    let file_err = |path: &Path, reason: String| DataError::File {
        path: path.to_path_buf(),
        reason,
    };
    let pixels = match (&img.data, img.dims.as_slice()) {
        (idx::IdxData::U8(p), [_, _, _]) => p,
        _ => {
            return Err(file_err(
                &ip,
                format!(
                    "expected u8 images [n, rows, cols], found {} {:?}",
                    img.data.type_name(),
                    img.dims
                ),
            ))
        }
    };
    let classes = match (&lab.data, lab.dims.as_slice()) {
        (idx::IdxData::U8(l), [_]) => l,
        _ => {
            return Err(file_err(
                &lp,
                format!(
                    "expected u8 labels [n], found {} {:?}",
                    lab.data.type_name(),
                    lab.dims
                ),
            ))
        }
    };
    if img.dims[0] != lab.dims[0] {
        return Err(file_err(
            &lp,
            format!(
                "{} labels for {} images in {}",
                lab.dims[0],
                img.dims[0],
                ip.display()
            ),
        ));
    }
    if let Some((i, &c)) = classes.iter().enumerate().find(|(_, &c)| c > 9) {
        return Err(file_err(&lp, format!("label {i} is {c}, not a digit")));
    }
    let features = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    Dataset::new(
        features,
        img.dims[1..].to_vec(),
        Labels::Classes {
            values: classes.iter().map(|&c| c as u32).collect(),
            num_classes: 10,
        },
    )
}

#[cfg(test)]
pub(crate) mod tests;
