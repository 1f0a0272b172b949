//! Between a sliced checkpoint and one ordinary checkpoint of the whole
//! network: [`merge`] assembles the slices, [`split`] cuts them.

use std::collections::BTreeSet;
use std::path::Path;

use nnc_spec::{output, ModelSpec, ParamSpec};

use super::{
    prepare_dir, read_manifest, read_slice_file, remove_unused, state_name, write_manifest,
    write_slice, Layout, Manifest, Part, Slice, MANIFEST,
};
use crate::checkpoint::{CheckpointError, CheckpointMeta};
use crate::optim::OptimizerState;

/// Merges the sliced checkpoint in `dir` into one ordinary training
/// checkpoint of the whole network `whole` at `out` (what
/// [`crate::checkpoint::load_training`], `fit`'s resume, `load_weights` and `nnc eval`
/// read): every parameter and optimizer vector assembled from the slices —
/// a stage's whole, a split layer's from every rank's slice, the replicated
/// tail from slice 0 (checked equal on every rank). The merged values are
/// the slices' bit for bit. Returns the manifest.
pub fn merge(dir: &Path, whole: &ModelSpec, out: &Path) -> Result<Manifest, CheckpointError> {
    let m = read_manifest(dir)?;
    if m.network != whole.name {
        return Err(CheckpointError::Mismatch {
            path: dir.join(MANIFEST),
            reason: format!("the checkpoint is of `{}`, not `{}`", m.network, whole.name),
        });
    }
    refuse_input(dir, &m, out)?;
    let slices = (0..m.layout.slices())
        .map(|i| read_slice_file(dir, &m, i))
        .collect::<Result<Vec<_>, _>>()?;
    let slots = slices[0].slots.clone();
    let mut params = vec![0.0f32; whole.param_count];
    let mut state: Vec<(String, Vec<f32>)> = slots
        .iter()
        .map(|s| (s.clone(), vec![0.0f32; whole.param_count]))
        .collect();
    let mut used: Vec<BTreeSet<String>> = vec![BTreeSet::new(); slices.len()];
    for q in whole.params.iter() {
        assemble(&m, &slices, q, q.name.to_string(), &mut params, &mut used)?;
        for (slot, v) in &mut state {
            assemble(&m, &slices, q, state_name(slot, &q.name), v, &mut used)?;
        }
    }
    for (slice, used) in slices.iter().zip(&used) {
        if let Some(extra) = slice.tensors.keys().find(|n| !used.contains(*n)) {
            return Err(CheckpointError::Mismatch {
                path: slice.path.clone(),
                reason: format!("it has tensor `{extra}`, which `{}` does not", whole.name),
            });
        }
    }
    let optimizer = OptimizerState {
        kind: m.optimizer.clone(),
        step: m.step,
        tensors: state,
    };
    let meta = CheckpointMeta {
        step: m.step,
        model_hash: format!("{:016x}", whole.hash),
        ..CheckpointMeta::default()
    };
    crate::checkpoint::save_training(out, &whole.params, &params, Some(&optimizer), &meta)?;
    Ok(m)
}

/// Refuses to merge into one of the checkpoint's own files: by name in
/// its directory, or the same file by another path (a link).
fn refuse_input(dir: &Path, m: &Manifest, out: &Path) -> Result<(), CheckpointError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let same_dir = matches!(
        (parent.canonicalize(), dir.canonicalize()),
        (Ok(a), Ok(b)) if a == b
    );
    let name = out.file_name().map(|n| n.to_string_lossy().to_string());
    let inputs: Vec<String> = std::iter::once(MANIFEST.to_string())
        .chain((0..m.layout.slices()).map(|i| m.file_name(i)))
        .collect();
    let by_name = same_dir && name.is_some_and(|n| inputs.contains(&n));
    if by_name || inputs.iter().any(|i| output::same_file(out, &dir.join(i))) {
        return Err(CheckpointError::Invalid(format!(
            "{} is part of the sliced checkpoint being merged",
            out.display()
        )));
    }
    Ok(())
}

/// Writes tensor `key` (a parameter `q` or one of its optimizer vectors)
/// of the whole network into `into[q.range()]` from the slices.
fn assemble(
    m: &Manifest,
    slices: &[Slice],
    q: &ParamSpec,
    key: String,
    into: &mut [f32],
    used: &mut [BTreeSet<String>],
) -> Result<(), CheckpointError> {
    let holders: Vec<usize> = (0..slices.len())
        .filter(|&i| slices[i].tensors.contains_key(&key))
        .collect();
    let mismatch = |i: usize, reason: String| CheckpointError::Mismatch {
        path: slices[i].path.clone(),
        reason,
    };
    let ranks = match (m.layout, holders.as_slice()) {
        (Layout::Stages(_), [_]) => 1,
        (Layout::Stages(_), []) | (Layout::Split(_), []) => {
            return Err(CheckpointError::Mismatch {
                path: slices[0].path.with_file_name(MANIFEST),
                reason: format!("no slice holds tensor `{key}`"),
            })
        }
        (Layout::Stages(_), [_, second, ..]) => {
            return Err(mismatch(
                *second,
                format!("tensor `{key}` is in another stage's slice too"),
            ))
        }
        (Layout::Split(n), h) if h.len() == n => n,
        (Layout::Split(_), _) => {
            let missing = (0..slices.len())
                .find(|i| !holders.contains(i))
                .unwrap_or(0);
            return Err(mismatch(missing, format!("tensor `{key}` is missing")));
        }
    };
    let whole_shape = ParamSpec::new(q.name.to_string(), q.shape.to_vec(), 0);
    let first = &slices[holders[0]].tensors[&key];
    for (rank, &i) in holders.iter().enumerate() {
        let t = &slices[i].tensors[&key];
        if t.shape == *q.shape {
            // Whole in every slice holding it: one stage's, or the
            // replicated tail, the same on every rank.
            if t.data
                .iter()
                .map(|v| v.to_bits())
                .ne(first.data.iter().map(|v| v.to_bits()))
            {
                return Err(mismatch(
                    i,
                    format!(
                        "replicated tensor `{key}` differs from {}'s",
                        slices[holders[0]].path.display()
                    ),
                ));
            }
            into[q.range()].copy_from_slice(&t.data);
        } else {
            let part = ParamSpec::new(q.name.to_string(), t.shape.clone(), 0);
            let out = &mut into[q.range()];
            crate::split::runs(&whole_shape, &part, rank, ranks, |w, d| {
                out[w].copy_from_slice(&t.data[d])
            })
            .map_err(|e| mismatch(i, format!("tensor `{key}`: {e}")))?;
        }
        used[i].insert(key.clone());
    }
    Ok(())
}

/// Cuts the ordinary training checkpoint at `checkpoint` (of the whole
/// network `whole`, with its optimizer state) into the sliced checkpoint of
/// `layout` in `dir`: slice `i` holds the part models `parts[i]` (a stage;
/// or rank `i`'s shard and the tail), each parameter and optimizer vector
/// whole or rank `i`'s slice of the network's tensor of the same name.
/// Writes every slice, then the manifest (a new generation of `dir`, the
/// previous one removed once the manifest is in place).
pub fn split(
    checkpoint: &Path,
    whole: &ModelSpec,
    layout: Layout,
    parts: &[Vec<&ModelSpec>],
    dir: &Path,
) -> Result<Manifest, CheckpointError> {
    if parts.len() != layout.slices() {
        return Err(CheckpointError::Invalid(format!(
            "{} slices' models for {layout}",
            parts.len()
        )));
    }
    let mut params = vec![0.0f32; whole.param_count];
    let loaded = crate::checkpoint::load_training(
        checkpoint,
        &whole.params,
        &mut params,
        Some(&format!("{:016x}", whole.hash)),
    )?;
    let opt = loaded.optimizer.ok_or_else(|| CheckpointError::Mismatch {
        path: checkpoint.to_path_buf(),
        reason: "it has no optimizer state to slice".into(),
    })?;
    let generation = prepare_dir(dir, &whole.name, layout)?;
    let ranks = match layout {
        Layout::Stages(_) => 1,
        Layout::Split(n) => n,
    };
    let mut hashes = Vec::new();
    for (i, specs) in parts.iter().enumerate() {
        let rank = if ranks > 1 { i } else { 0 };
        let mut cut: Vec<(Vec<f32>, OptimizerState)> = Vec::new();
        for spec in specs {
            let mut p_out = vec![0.0f32; spec.param_count];
            let mut s_out: Vec<(String, Vec<f32>)> = opt
                .tensors
                .iter()
                .map(|(n, _)| (n.clone(), vec![0.0f32; spec.param_count]))
                .collect();
            for p in spec.params.iter() {
                let q = whole
                    .params
                    .iter()
                    .find(|q| q.name == p.name)
                    .ok_or_else(|| {
                        CheckpointError::Invalid(format!(
                            "parameter `{}` of `{}` is not in `{}`",
                            p.name, spec.name, whole.name
                        ))
                    })?;
                crate::split::runs(q, p, rank, ranks, |w, d| {
                    p_out[d.clone()].copy_from_slice(&params[w.clone()]);
                    for ((_, to), (_, from)) in s_out.iter_mut().zip(&opt.tensors) {
                        to[d.clone()].copy_from_slice(&from[w.clone()]);
                    }
                })
                .map_err(|e| CheckpointError::Invalid(e.to_string()))?;
            }
            cut.push((
                p_out,
                OptimizerState {
                    kind: opt.kind.clone(),
                    step: opt.step,
                    tensors: s_out,
                },
            ));
        }
        let slice: Vec<Part<'_>> = specs
            .iter()
            .zip(&cut)
            .map(|(spec, (params, optimizer))| Part {
                spec,
                params,
                optimizer,
            })
            .collect();
        hashes.push(write_slice(
            dir,
            &whole.name,
            layout,
            generation,
            i,
            &slice,
        )?);
    }
    let m = Manifest {
        network: whole.name.to_string(),
        layout,
        step: opt.step,
        generation,
        optimizer: opt.kind.clone(),
        hashes,
    };
    write_manifest(dir, &m)?;
    remove_unused(dir, &m);
    Ok(m)
}
