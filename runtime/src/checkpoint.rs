//! Checkpoints: named `f32` tensors plus training metadata in one safetensors file.
//!
//! safetensors because it is the format the ecosystem already reads (PyTorch,
//! JAX, candle can load nnc parameters by name), it is trivially parseable,
//! and the `safetensors` crate validates offsets for us (in range,
//! contiguous, non-overlapping, sizes matching shapes and covering the whole
//! file).
//!
//! Layout of a training checkpoint ([`save_training`]):
//! - one tensor per parameter, named as in the model (`h1.weight`), with its
//!   logical shape;
//! - one tensor per optimizer state vector, `optimizer.<name>`
//!   (`optimizer.exp_avg`), shape `[n_params]` — flat, like the buffers;
//! - string metadata: `nnc.format`, `nnc.step`, `nnc.epoch`,
//!   `nnc.model_hash`, `nnc.rng`, `nnc.loader.*`, `nnc.optimizer.kind`,
//!   `nnc.optimizer.step`, plus user keys (which may not start with `nnc.`).
//!
//! Writes are atomic: the file is written to a temporary sibling, fsynced and
//! renamed over the target, so a crash or a full disk mid-save never destroys
//! the previous checkpoint (a symlink is followed and its target replaced; a
//! device or FIFO is written in place: [`nnc_spec::output`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use thiserror::Error;

use crate::data::LoaderState;
use crate::optim::OptimizerState;
use crate::params::ParamSpec;

/// Version of the metadata layout written by this crate.
pub const FORMAT_VERSION: &str = "1";

const OPTIM_PREFIX: &str = "optimizer.";

pub mod sliced;
mod weights;
pub use weights::{load_frozen, load_weights, save_weights, save_weights_with, LoadOptions};

/// Why a checkpoint could not be written or read.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The file system refused.
    #[error("{}: {error}", path.display())]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error. Shown in the message and not exposed as
        /// [`std::error::Error::source`], so a chain prints it once.
        error: std::io::Error,
    },
    /// The file is not a valid checkpoint (bad header, offsets, dtype, metadata).
    #[error("{}: corrupt checkpoint: {reason}", path.display())]
    Corrupt {
        /// File involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A valid checkpoint, but not of this model (names, shapes, hash).
    #[error("{}: checkpoint does not match the model: {reason}", path.display())]
    Mismatch {
        /// File involved.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The tensors or metadata handed to a save function are inconsistent.
    #[error("cannot save checkpoint: {0}")]
    Invalid(String),
}

/// A borrowed tensor to save.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Tensor name in the file.
    pub name: &'a str,
    /// Logical shape; its product must equal `data.len()`.
    pub shape: &'a [usize],
    /// Values, row-major.
    pub data: &'a [f32],
}

/// A loaded tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Tensor name in the file.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// Adapter so the `safetensors` serializer can read our f32 slices; the data
/// is converted to little-endian bytes as the format requires.
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Saves `tensors` and string `metadata` atomically to `path`.
pub fn save_tensors(
    path: impl AsRef<Path>,
    tensors: &[TensorRef<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let bytes = encode(tensors, metadata)?;
    write_atomic(path.as_ref(), &bytes, |_| Ok(()))
}

fn encode(
    tensors: &[TensorRef<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, CheckpointError> {
    let mut seen = std::collections::HashSet::new();
    for t in tensors {
        let n = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(usize::MAX);
        if n != t.data.len() {
            return Err(CheckpointError::Invalid(format!(
                "tensor `{}` has shape {:?} ({n} elements) but {} values",
                t.name,
                t.shape,
                t.data.len()
            )));
        }
        if !seen.insert(t.name) {
            return Err(CheckpointError::Invalid(format!(
                "tensor name `{}` appears twice",
                t.name
            )));
        }
        if t.name == "__metadata__" {
            return Err(CheckpointError::Invalid(
                "`__metadata__` is reserved by the format".into(),
            ));
        }
    }
    let views = tensors.iter().map(|t| {
        (
            t.name,
            F32View {
                shape: t.shape,
                data: t.data,
            },
        )
    });
    // A checksum of every tensor's bytes, so a flipped bit or a tensor
    // edited after saving is refused on load instead of trained on.
    let mut metadata = metadata.clone();
    for t in tensors {
        metadata.insert(
            format!("{CHECKSUM_PREFIX}{}", t.name),
            format!("{:016x}", checksum(t.data)),
        );
    }
    // `collect` into whatever map type the crate uses (hashbrown without std).
    let meta = metadata.into_iter().collect();
    safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| CheckpointError::Invalid(e.to_string()))
}

/// Replaces `path` with `bytes` atomically (temporary sibling, fsync,
/// rename): a crash mid-write leaves the old file whole. Like every output
/// nnc writes, through [`nnc_spec::output`]: a symlink is followed (the link
/// stays), a device or FIFO is written in place, never renamed over.
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    write_atomic(path, bytes, |_| Ok(()))
}

/// Writes `bytes` to `path` as every output file is written
/// ([`nnc_spec::output`]): a regular file (or one that does not exist yet)
/// is replaced atomically through a temporary sibling and a rename, and a
/// symlink's target is replaced the same way (the link stays a link);
/// anything else — a device such as `/dev/null`, a FIFO, a terminal — is
/// opened and written in place, never renamed over; `-` is standard output.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    write_file_atomic(path, bytes)
}

/// Removes the temporary files (`.NAME.tmp-PID-N`) that a save killed
/// mid-write left in `dir`, when the process that wrote them is gone (on
/// systems without `/proc`: when they are over an hour old). Best effort.
pub(crate) fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let proc_fs = Path::new("/proc/self").exists();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some((_, pid)) = temporary_of(&name) else {
            continue;
        };
        let stale = if proc_fs {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600)
        };
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The file a temporary file of the atomic writer (`.NAME.tmp-PID-N`) was
/// to become, and the writer's process id, if `name` is one: exactly that
/// pattern, both numbers, so nothing but nnc's own files match.
pub(crate) fn temporary_of(name: &str) -> Option<(&str, u32)> {
    let (target, tail) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(number(pid) && number(n)) {
        return None;
    }
    Some((target, pid.parse().ok()?))
}

/// [`write_file_atomic`] with a seam for tests: `before_rename` runs on the
/// temporary file just before the rename.
fn write_atomic(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), CheckpointError> {
    nnc_spec::output::write_with(path, bytes, before_rename).map_err(|error| CheckpointError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// Reads every tensor and the metadata of a safetensors file; all tensors
/// must be F32. Tensors come back sorted by name.
pub fn load_tensors(
    path: impl AsRef<Path>,
) -> Result<(Vec<Tensor>, BTreeMap<String, String>), CheckpointError> {
    let path = path.as_ref();
    parse_tensors(&read_file(path)?, path)
}

/// The whole file at `path`.
fn read_file(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|error| CheckpointError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// [`load_tensors`] of a file's bytes held in memory; `path` names it in
/// errors. The fuzz target's entry point: no file per input.
pub fn parse_tensors(
    bytes: &[u8],
    path: &Path,
) -> Result<(Vec<Tensor>, BTreeMap<String, String>), CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut tensors = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(corrupt(format!(
                "tensor `{name}` has dtype {:?}, expected F32",
                view.dtype()
            )));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.push(Tensor {
            name,
            shape: view.shape().to_vec(),
            data,
        });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut meta: BTreeMap<String, String> = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    verify(&tensors, &mut meta).map_err(corrupt)?;
    Ok((tensors, meta))
}

/// Metadata key prefix of a tensor's checksum.
const CHECKSUM_PREFIX: &str = "nnc.fnv1a64.";

/// FNV-1a (64 bit) of a tensor's values as stored (little-endian bytes).
fn checksum(data: &[f32]) -> u64 {
    crate::collective::hash_f32(data)
}

/// Checks every tensor's checksum (when the file has checksums: files
/// written elsewhere, by PyTorch say, have none) and that every value is
/// finite; removes the checksum keys from `meta`.
fn verify(tensors: &[Tensor], meta: &mut BTreeMap<String, String>) -> Result<(), String> {
    let sums: BTreeMap<String, String> = meta
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(CHECKSUM_PREFIX)
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect();
    meta.retain(|k, _| !k.starts_with(CHECKSUM_PREFIX));
    for t in tensors {
        if !sums.is_empty() {
            let Some(want) = sums.get(&t.name) else {
                return Err(format!(
                    "tensor `{}` has no checksum (added after the file was written?)",
                    t.name
                ));
            };
            let got = format!("{:016x}", checksum(&t.data));
            if *want != got {
                return Err(format!(
                    "tensor `{}` fails its checksum ({got}, the file says {want}): the file was damaged or edited after it was written",
                    t.name
                ));
            }
        }
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "tensor `{}` holds {} at index {i}",
                t.name, t.data[i]
            ));
        }
    }
    if let Some(name) = sums.keys().find(|n| !tensors.iter().any(|t| &t.name == *n)) {
        return Err(format!("tensor `{name}` has a checksum but is missing"));
    }
    Ok(())
}

/// Training metadata stored beside the tensors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointMeta {
    /// Completed optimizer steps.
    pub step: u64,
    /// Current epoch.
    pub epoch: u64,
    /// Identifies the model (e.g. a hash of its source); checked on load so a
    /// checkpoint of another model is not silently loaded into this one.
    pub model_hash: String,
    /// State of the training run's generator (dropout etc.), if any.
    pub rng: Option<[u64; 4]>,
    /// Position of the data loader, for exact resume.
    pub loader: Option<LoaderState>,
    /// Free-form user metadata; keys must not start with `nnc.`.
    pub extra: BTreeMap<String, String>,
}

fn words(w: &[u64; 4]) -> String {
    format!("{},{},{},{}", w[0], w[1], w[2], w[3])
}

fn parse_words(s: &str) -> Option<[u64; 4]> {
    let v: Vec<u64> = s
        .split(',')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// Saves a training checkpoint: parameters from the flat buffer by `specs`,
/// optional optimizer state, and metadata. Atomic (see module docs).
pub fn save_training(
    path: impl AsRef<Path>,
    specs: &[ParamSpec],
    params: &[f32],
    optimizer: Option<&OptimizerState>,
    meta: &CheckpointMeta,
) -> Result<(), CheckpointError> {
    let bytes = encode_training(specs, params, optimizer, meta)?;
    write_atomic(path.as_ref(), &bytes, |_| Ok(()))
}

fn encode_training(
    specs: &[ParamSpec],
    params: &[f32],
    optimizer: Option<&OptimizerState>,
    meta: &CheckpointMeta,
) -> Result<Vec<u8>, CheckpointError> {
    crate::params::validate_layout(specs, params.len())
        .map_err(|e| CheckpointError::Invalid(e.to_string()))?;
    let mut tensors: Vec<TensorRef<'_>> = specs
        .iter()
        .map(|s| {
            if s.name.starts_with(OPTIM_PREFIX) {
                return Err(CheckpointError::Invalid(format!(
                    "parameter name `{}` collides with the reserved `{OPTIM_PREFIX}` prefix",
                    s.name
                )));
            }
            Ok(TensorRef {
                name: &s.name,
                shape: &s.shape,
                data: &params[s.range()],
            })
        })
        .collect::<Result<_, _>>()?;
    let mut md = BTreeMap::new();
    for (k, v) in &meta.extra {
        if k.starts_with("nnc.") {
            return Err(CheckpointError::Invalid(format!(
                "metadata key `{k}` uses the reserved `nnc.` prefix"
            )));
        }
        md.insert(k.clone(), v.clone());
    }
    md.insert("nnc.format".into(), FORMAT_VERSION.into());
    md.insert("nnc.step".into(), meta.step.to_string());
    md.insert("nnc.epoch".into(), meta.epoch.to_string());
    md.insert("nnc.model_hash".into(), meta.model_hash.clone());
    if let Some(r) = &meta.rng {
        md.insert("nnc.rng".into(), words(r));
    }
    if let Some(l) = &meta.loader {
        md.insert("nnc.loader.epoch".into(), l.epoch.to_string());
        md.insert("nnc.loader.position".into(), l.position.to_string());
        md.insert("nnc.loader.samples".into(), l.samples.to_string());
        md.insert("nnc.loader.rng".into(), words(&l.epoch_rng));
        md.insert("nnc.loader.order".into(), l.order.to_string());
    }
    // Names and shapes of the optimizer tensors, kept alive for `tensors`.
    let opt_tensors: &[(String, Vec<f32>)] = optimizer.map_or(&[], |o| &o.tensors);
    let names: Vec<String> = opt_tensors
        .iter()
        .map(|(n, _)| format!("{OPTIM_PREFIX}{n}"))
        .collect();
    let lens: Vec<[usize; 1]> = opt_tensors.iter().map(|(_, d)| [d.len()]).collect();
    if let Some(o) = optimizer {
        md.insert("nnc.optimizer.kind".into(), o.kind.clone());
        md.insert("nnc.optimizer.step".into(), o.step.to_string());
        let list: Vec<&str> = o.tensors.iter().map(|(n, _)| n.as_str()).collect();
        md.insert("nnc.optimizer.tensors".into(), list.join(","));
    }
    for (((_, data), name), len) in opt_tensors.iter().zip(&names).zip(&lens) {
        tensors.push(TensorRef {
            name,
            shape: len,
            data,
        });
    }
    encode(&tensors, &md)
}

/// What [`load_training`] recovered besides the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedTraining {
    /// Training metadata.
    pub meta: CheckpointMeta,
    /// Optimizer state, if the checkpoint has one; pass it to
    /// [`crate::optim::Optimizer::load_state`].
    pub optimizer: Option<OptimizerState>,
}

/// Loads a training checkpoint into the flat `params` buffer.
///
/// Validates before touching `params`: the file parses; every spec's tensor
/// is present with exactly its shape; there are no parameter tensors the
/// model does not have; and, if `model_hash` is given, it matches the file's.
pub fn load_training(
    path: impl AsRef<Path>,
    specs: &[ParamSpec],
    params: &mut [f32],
    model_hash: Option<&str>,
) -> Result<LoadedTraining, CheckpointError> {
    let path = path.as_ref();
    // The layout first: a wrong model is the caller's error, whatever the file.
    crate::params::validate_layout(specs, params.len())
        .map_err(|e| CheckpointError::Invalid(e.to_string()))?;
    parse_training(&read_file(path)?, path, specs, params, model_hash)
}

/// [`load_training`] of a file's bytes held in memory; `path` names it in
/// errors. The fuzz target's entry point: no file per input.
pub fn parse_training(
    bytes: &[u8],
    path: &Path,
    specs: &[ParamSpec],
    params: &mut [f32],
    model_hash: Option<&str>,
) -> Result<LoadedTraining, CheckpointError> {
    crate::params::validate_layout(specs, params.len())
        .map_err(|e| CheckpointError::Invalid(e.to_string()))?;
    let (tensors, md) = parse_tensors(bytes, path)?;
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mismatch = |reason: String| CheckpointError::Mismatch {
        path: path.to_path_buf(),
        reason,
    };
    let get = |k: &str| md.get(k).map(String::as_str);
    let num = |k: &str| -> Result<u64, CheckpointError> {
        let v = get(k).ok_or_else(|| corrupt(format!("metadata key `{k}` missing")))?;
        v.parse()
            .map_err(|_| corrupt(format!("metadata `{k}` = `{v}` is not an integer")))
    };
    match get("nnc.format") {
        Some(FORMAT_VERSION) => {}
        Some(v) => return Err(corrupt(format!("unsupported nnc.format `{v}`"))),
        None => {
            return Err(corrupt(
                "not an nnc training checkpoint (no nnc.format)".into(),
            ))
        }
    }
    let file_hash = get("nnc.model_hash").unwrap_or("");
    if let Some(want) = model_hash {
        if want != file_hash {
            return Err(mismatch(format!(
                "model hash is `{file_hash}`, this model is `{want}`"
            )));
        }
    }

    let by_name: HashMap<&str, &Tensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    for s in specs {
        let t = by_name
            .get(&*s.name)
            .ok_or_else(|| mismatch(format!("parameter `{}` is missing", s.name)))?;
        if t.shape != *s.shape {
            return Err(mismatch(format!(
                "parameter `{}` has shape {:?} in the file, model expects {:?}",
                s.name, t.shape, s.shape
            )));
        }
    }
    if let Some(extra) = tensors
        .iter()
        .find(|t| !t.name.starts_with(OPTIM_PREFIX) && !specs.iter().any(|s| *s.name == t.name))
    {
        return Err(mismatch(format!(
            "file has parameter `{}` that the model does not",
            extra.name
        )));
    }

    let optimizer = match get("nnc.optimizer.kind") {
        None => None,
        Some(kind) => {
            let order = get("nnc.optimizer.tensors").unwrap_or("");
            let mut state_tensors = Vec::new();
            for n in order.split(',').filter(|n| !n.is_empty()) {
                let t = by_name
                    .get(format!("{OPTIM_PREFIX}{n}").as_str())
                    .ok_or_else(|| {
                        corrupt(format!(
                            "optimizer tensor `{OPTIM_PREFIX}{n}` listed but missing"
                        ))
                    })?;
                state_tensors.push((n.to_string(), t.data.clone()));
            }
            Some(OptimizerState {
                kind: kind.to_string(),
                step: num("nnc.optimizer.step")?,
                tensors: state_tensors,
            })
        }
    };
    let words_at = |k: &str| -> Result<Option<[u64; 4]>, CheckpointError> {
        get(k)
            .map(|v| {
                parse_words(v)
                    .ok_or_else(|| corrupt(format!("metadata `{k}` = `{v}` is not 4 integers")))
            })
            .transpose()
    };
    let loader = match words_at("nnc.loader.rng")? {
        None => None,
        Some(epoch_rng) => Some(LoaderState {
            epoch: num("nnc.loader.epoch")?,
            position: num("nnc.loader.position")? as usize,
            samples: num("nnc.loader.samples")? as usize,
            // Absent in checkpoints from before streaming: the whole data's.
            order: match get("nnc.loader.order") {
                None => 0,
                Some(_) => num("nnc.loader.order")?,
            },
            epoch_rng,
        }),
    };
    let meta = CheckpointMeta {
        step: num("nnc.step")?,
        epoch: num("nnc.epoch")?,
        model_hash: file_hash.to_string(),
        rng: words_at("nnc.rng")?,
        loader,
        extra: md
            .iter()
            .filter(|(k, _)| !k.starts_with("nnc."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };

    // Everything checked: now copy into the caller's buffer.
    for s in specs {
        params[s.range()].copy_from_slice(&by_name[&*s.name].data);
    }
    Ok(LoadedTraining { meta, optimizer })
}

#[cfg(test)]
mod tests;
