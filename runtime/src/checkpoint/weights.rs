//! A model's weights as a plain safetensors file: every parameter and
//! state tensor (batch norm's running statistics) under the language's
//! names (`h1.weight`, `h1.1.running_mean`), `F32`, with their logical
//! shapes — what Python's `safetensors.torch.load_file` reads and what a
//! PyTorch `state_dict` saved with `safetensors.torch.save_file` gives.
//!
//! Loading is by name with shape checks and validates everything before
//! the model is touched: a tensor the model lacks, one the file lacks, a
//! shape that differs or a value that is not finite is an error naming the
//! tensor. A training checkpoint written by `fit` loads too (its optimizer
//! tensors are skipped).

use std::collections::BTreeMap;
use std::path::Path;

use super::{load_tensors, save_tensors, CheckpointError, Tensor, TensorRef, OPTIM_PREFIX};
use crate::model::Model;
use crate::params::ParamSpec;

/// How [`load_weights`] matches a file to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Accept a 2-D weight stored transposed, `[out, in]` as PyTorch's
    /// `nn.Linear` keeps it, for a model weight `[in, out]` (nnc's `x @ w`
    /// layout), and transpose it while loading.
    pub transpose_linear: bool,
    /// Ignore tensors in the file that the model does not have (PyTorch's
    /// `strict=False`); by default they are an error.
    pub ignore_extra: bool,
}

/// The tensors of `model` with their values: parameters, then state.
fn tensors_of<M: Model + ?Sized>(model: &M) -> Vec<(&ParamSpec, &[f32])> {
    let spec = model.spec();
    let params = spec.params.iter().map(|p| (p, &model.params()[p.range()]));
    let state = model
        .state_spec()
        .iter()
        .map(|s| (&s.tensor, &model.state()[s.tensor.range()]));
    params.chain(state).collect()
}

/// Saves `model`'s parameters and state to `path` as plain safetensors
/// (atomically: written to a temporary file, then renamed). The metadata
/// names the model (`nnc.model`) and its hash (`nnc.model_hash`).
pub fn save_weights<M: Model + ?Sized>(
    model: &M,
    path: impl AsRef<Path>,
) -> Result<(), CheckpointError> {
    save_weights_with(model, path, &BTreeMap::new())
}

/// [`save_weights`] with extra metadata (keys may not start with `nnc.`
/// unless they are `nnc.classes.*`, the class names `nnc train` keeps).
pub fn save_weights_with<M: Model + ?Sized>(
    model: &M,
    path: impl AsRef<Path>,
    extra: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let tensors: Vec<TensorRef<'_>> = tensors_of(model)
        .into_iter()
        .map(|(p, data)| TensorRef {
            name: &p.name,
            shape: &p.shape,
            data,
        })
        .collect();
    let spec = model.spec();
    let mut meta: BTreeMap<String, String> = [
        ("nnc.model".to_string(), spec.name.to_string()),
        ("nnc.model_hash".to_string(), format!("{:016x}", spec.hash)),
    ]
    .into_iter()
    .collect();
    for (k, v) in extra {
        if k.starts_with("nnc.") && !k.starts_with("nnc.classes.") {
            return Err(CheckpointError::Invalid(format!(
                "metadata key `{k}` uses the reserved `nnc.` prefix"
            )));
        }
        meta.insert(k.clone(), v.clone());
    }
    save_tensors(path, &tensors, &meta)
}

/// Loads parameters and state into `model` from a safetensors file, by
/// name (see `nnc_runtime::checkpoint::weights`' docs: every tensor by
/// name, shapes checked, nothing changed unless all fit); returns the
/// file's metadata.
pub fn load_weights<M: Model + ?Sized>(
    model: &mut M,
    path: impl AsRef<Path>,
    opts: &LoadOptions,
) -> Result<BTreeMap<String, String>, CheckpointError> {
    let path = path.as_ref();
    let (tensors, meta) = load_tensors(path)?;
    let mismatch = |reason: String| CheckpointError::Mismatch {
        path: path.to_path_buf(),
        reason,
    };
    let by_name: BTreeMap<&str, &Tensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let wanted = tensors_of(model);
    if !opts.ignore_extra {
        let known: std::collections::HashSet<&str> =
            wanted.iter().map(|(p, _)| p.name.as_ref()).collect();
        if let Some(extra) = tensors
            .iter()
            .find(|t| !t.name.starts_with(OPTIM_PREFIX) && !known.contains(t.name.as_str()))
        {
            return Err(mismatch(format!(
                "the file has tensor `{}` {:?}, which model `{}` does not have",
                extra.name,
                extra.shape,
                model.spec().name
            )));
        }
    }
    // Stage every value first: nothing changes unless everything fits.
    let mut staged: Vec<(usize, Vec<f32>)> = Vec::with_capacity(wanted.len());
    let n_params = model.spec().params.len();
    for (k, (p, _)) in wanted.iter().enumerate() {
        let Some(t) = by_name.get(p.name.as_ref()) else {
            let kind = if k < n_params {
                "parameter"
            } else {
                "state tensor"
            };
            return Err(mismatch(format!(
                "the file has no tensor `{}` (the model's {kind}, {:?})",
                p.name, p.shape
            )));
        };
        let values = if t.shape == *p.shape {
            t.data.clone()
        } else if opts.transpose_linear && p.shape.len() == 2 && t.shape == [p.shape[1], p.shape[0]]
        {
            transpose(&t.data, t.shape[0], t.shape[1])
        } else {
            let hint = if p.shape.len() == 2 && t.shape == [p.shape[1], p.shape[0]] {
                "; a PyTorch Linear weight is [out, in]: load with transpose_linear"
            } else {
                ""
            };
            return Err(mismatch(format!(
                "tensor `{}` is {:?} in the file, the model's is {:?}{hint}",
                p.name, t.shape, p.shape
            )));
        };
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(CheckpointError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("tensor `{}` holds {} at index {i}", p.name, values[i]),
            });
        }
        staged.push((k, values));
    }
    let offsets: Vec<(bool, std::ops::Range<usize>)> = wanted
        .iter()
        .enumerate()
        .map(|(k, (p, _))| (k < n_params, p.range()))
        .collect();
    for (k, values) in staged {
        let (is_param, range) = &offsets[k];
        if *is_param {
            model.params_mut()[range.clone()].copy_from_slice(&values);
        } else {
            model.state_mut()[range.clone()].copy_from_slice(&values);
        }
    }
    Ok(meta)
}

/// `[rows, cols]` row-major to `[cols, rows]`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Reads the read-only tensors of a teacher network compiled into a
/// student (`teacher:` in a `train` block): each `(name, shape)` of `wanted`
/// by name from the safetensors file at `path`, shapes checked, every value
/// finite, concatenated in `wanted`'s order. Other tensors in the file (a
/// training checkpoint's optimizer state) are ignored.
pub fn load_frozen(
    path: impl AsRef<Path>,
    wanted: &[(&str, &[usize])],
) -> Result<Vec<f32>, CheckpointError> {
    let path = path.as_ref();
    let (tensors, _) = load_tensors(path)?;
    let by_name: BTreeMap<&str, &Tensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut out = Vec::with_capacity(
        wanted
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum(),
    );
    for &(name, shape) in wanted {
        let Some(t) = by_name.get(name) else {
            return Err(CheckpointError::Mismatch {
                path: path.to_path_buf(),
                reason: format!("the file has no tensor `{name}` (the teacher's, {shape:?})"),
            });
        };
        if t.shape != shape {
            return Err(CheckpointError::Mismatch {
                path: path.to_path_buf(),
                reason: format!(
                    "tensor `{name}` is {:?} in the file, the teacher's is {shape:?}",
                    t.shape
                ),
            });
        }
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(CheckpointError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}` holds {} at index {i}", t.data[i]),
            });
        }
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}
