//! Split layers (tensor parallelism, issue #24, first increment): a
//! network whose `train` block says `split: [columns(A), rows(B)]` is
//! generated as two models besides itself (the compiler's `lower::split`):
//! `<Name>Shard`, one rank's slices from the data inputs to `B`'s partial
//! product, and `<Name>Tail`, from the sum of the partial products to the
//! loss. Every rank runs the same shard on its own slices of `A.weight`
//! (columns), `A.bias` and `B.weight` (rows), and the same tail on
//! replicated parameters.
//!
//! One step: each shard's forward gives its partial product; one
//! all-reduce sums them (the only collective of the step); the tail runs
//! forward and backward on the sum, giving the loss, its own gradients and
//! the gradient with respect to the sum, which is also each partial
//! product's; each shard then runs its training step with that gradient as
//! its cotangent (recomputing its forward, as a pipeline stage does). Each
//! rank steps its optimizer on its slices and on its copy of the tail:
//! parameters and optimizer state of the split layers exist only as slices,
//! the tail's identically on every rank (every rank computes it from the
//! same sum).
//!
//! On one process the driver can hold every rank's shard and sums the
//! partial products in rank order: what 2 MPI ranks compute bit for bit
//! (`a + b = b + a`). Against the unsplit network the results agree to
//! float precision only: the row split adds `B`'s product in two halves.

use std::path::Path;

use crate::checkpoint::sliced::{self, check_optimizer, Layout, Manifest, Part as SlicePart};
use crate::collective::{fnv1a, Collective, CollectiveError, Value};
use crate::model::{Batch, Model, StepError};
use crate::optim::{OptimError, Optimizer};
use nnc_spec::InputKind;
use thiserror::Error;

/// Why split-layer training could not be set up or step.
#[derive(Debug, Error)]
pub enum SplitError {
    /// A collective (the start-up check, the all-reduce) failed.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// A part's training step failed.
    #[error("{part}")]
    Step {
        /// `shard R` or `tail`.
        part: String,
        /// Why.
        #[source]
        source: StepError,
    },
    /// The optimizer rejected its configuration or a step.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// The models given do not make a split network on these ranks.
    #[error("split layout: {0}")]
    Layout(String),
    /// A `train` setting the split driver does not implement yet.
    #[error("split-layer training does not support {0} yet")]
    Unsupported(&'static str),
    /// A sliced checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The batch does not provide an input.
    #[error("no data for input `{0}` of the split network")]
    MissingInput(String),
}

/// How one parameter of a part relates to the whole network's parameter of
/// the same name: copied whole, or the `rank`th of `ranks` equal slices
/// along `axis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slicing {
    /// The same shape: replicated.
    Whole,
    /// Sliced along this axis.
    Axis(usize),
}

/// How `part`'s parameter `p` is cut from `whole`'s of the same name.
fn slicing(whole: &nnc_spec::ParamSpec, p: &nnc_spec::ParamSpec, ranks: usize) -> Option<Slicing> {
    if whole.shape == p.shape {
        return Some(Slicing::Whole);
    }
    if whole.shape.len() != p.shape.len() {
        return None;
    }
    let differ: Vec<usize> = (0..p.shape.len())
        .filter(|&a| whole.shape[a] != p.shape[a])
        .collect();
    match differ.as_slice() {
        [a] if p.shape[*a] * ranks == whole.shape[*a] => Some(Slicing::Axis(*a)),
        _ => None,
    }
}

/// Calls `f(whole_range, part_range)` for each contiguous run of `part`'s
/// parameter `p` (rank `rank` of `ranks`) inside `whole`'s `q`.
pub(crate) fn runs(
    q: &nnc_spec::ParamSpec,
    p: &nnc_spec::ParamSpec,
    rank: usize,
    ranks: usize,
    mut f: impl FnMut(std::ops::Range<usize>, std::ops::Range<usize>),
) -> Result<(), SplitError> {
    if rank >= ranks {
        return Err(SplitError::Layout(format!(
            "rank {rank} of {ranks}: a split network runs on exactly {ranks} ranks (`split_ranks:`)"
        )));
    }
    match slicing(q, p, ranks) {
        Some(Slicing::Whole) => f(q.range(), p.range()),
        Some(Slicing::Axis(a)) => {
            // Row-major: `outer` blocks of `p.shape[a] · inner` values, the
            // rank's block starting `rank · p.shape[a] · inner` into each
            // whole block of `q.shape[a] · inner`.
            let outer: usize = p.shape[..a].iter().product();
            let inner: usize = p.shape[a + 1..].iter().product();
            let (run, whole_run) = (p.shape[a] * inner, q.shape[a] * inner);
            for o in 0..outer {
                let at = q.offset + o * whole_run + rank * run;
                let to = p.offset + o * run;
                f(at..at + run, to..to + run);
            }
        }
        None => {
            return Err(SplitError::Layout(format!(
                "parameter `{}` of shape {:?} is not a slice of the network's {:?} for {ranks} \
                 ranks",
                p.name, p.shape, q.shape
            )))
        }
    }
    Ok(())
}

/// Sets `part`'s parameters from `whole`'s: each one of the same name,
/// whole or rank `rank`'s slice of `ranks` (so every rank starts from the
/// one network's initialisation, exactly).
pub fn slice_params(
    whole: &dyn Model,
    part: &mut dyn Model,
    rank: usize,
    ranks: usize,
) -> Result<(), SplitError> {
    let (wspec, pspec) = (whole.spec(), part.spec());
    for p in pspec.params.iter() {
        let q = wspec
            .params
            .iter()
            .find(|q| q.name == p.name)
            .ok_or_else(|| {
                SplitError::Layout(format!("parameter `{}` is not in `{}`", p.name, wspec.name))
            })?;
        let (src, dst) = (whole.params(), part.params_mut());
        runs(q, p, rank, ranks, |w, d| dst[d].copy_from_slice(&src[w]))?;
    }
    Ok(())
}

/// Writes `part`'s parameters (rank `rank` of `ranks`) to their place in
/// `whole`, a buffer laid out as the whole network's `spec`: the inverse of
/// [`slice_params`]. Writing every rank's shard into a zeroed buffer and
/// summing over ranks assembles the whole network (an all-gather).
pub fn place_params(
    spec: &nnc_spec::ModelSpec,
    part: &dyn Model,
    rank: usize,
    ranks: usize,
    whole: &mut [f32],
) -> Result<(), SplitError> {
    let pspec = part.spec();
    for p in pspec.params.iter() {
        let q = spec
            .params
            .iter()
            .find(|q| q.name == p.name)
            .ok_or_else(|| {
                SplitError::Layout(format!("parameter `{}` is not in `{}`", p.name, spec.name))
            })?;
        let src = part.params();
        runs(q, p, rank, ranks, |w, d| whole[w].copy_from_slice(&src[d]))?;
    }
    Ok(())
}

/// A model and its optimizer.
struct Part<'m> {
    model: &'m mut dyn Model,
    optimizer: Box<dyn Optimizer>,
}

impl<'m> Part<'m> {
    fn new(model: &'m mut dyn Model) -> Result<Self, SplitError> {
        let spec = model.spec();
        if spec.train.clip_norm.is_some() {
            return Err(SplitError::Unsupported("clip_norm"));
        }
        let optimizer = crate::optim::build(&spec.train.optimizer, spec.param_count)?;
        Ok(Part { model, optimizer })
    }

    fn step(&mut self, lr: f32) -> Result<(), SplitError> {
        // The generated step leaves the gradient in the model's buffer; the
        // optimizer needs it beside the parameters it updates.
        let grads = self.model.grads().to_vec();
        self.optimizer.step(self.model.params_mut(), &grads, lr)?;
        Ok(())
    }
}

/// Split-layer training on this rank: every rank's shard on a single
/// process, or this rank's on each of `ranks` MPI ranks, and the tail.
pub struct SplitLayers<'m, 'c> {
    comm: &'c dyn Collective,
    shards: Vec<Part<'m>>,
    tail: Part<'m>,
    /// The tail's input fed the sum of the partial products.
    partial: String,
    /// Values per sample of the partial product.
    width: usize,
    /// The sum of the partial products, then each shard's.
    sum: Vec<f32>,
    scratch: Vec<f32>,
    /// The gradient with respect to the sum.
    grad: Vec<f32>,
    /// The split network's name (`MnistSplit`), ranks, and the rank of
    /// the first local shard.
    network: String,
    ranks: usize,
    first: usize,
}

impl<'m, 'c> SplitLayers<'m, 'c> {
    /// Sets up this rank's part of a network split across `ranks` ranks:
    /// `shards` is every rank's shard (in rank order) on a single process,
    /// or this rank's on each of `ranks` ranks. Checks on every rank that
    /// all ranks run the same split network with the same layout (the
    /// shard's parameter names and shapes, the tail's, the rank count),
    /// naming the first rank that differs.
    pub fn new(
        shards: Vec<&'m mut dyn Model>,
        tail: &'m mut dyn Model,
        ranks: usize,
        comm: &'c dyn Collective,
    ) -> Result<Self, SplitError> {
        let (rank, size) = (comm.rank(), comm.size());
        // First what every rank must agree on (so a rank with another
        // layout stops every rank with the same error naming it), then
        // what each rank checks on its own.
        let tail_name = tail.spec().name.to_string();
        let base = tail_name
            .strip_suffix("Tail")
            .unwrap_or(&tail_name)
            .to_string();
        let mut layout = Vec::new();
        for spec in shards
            .first()
            .map(|s| s.spec())
            .into_iter()
            .chain([tail.spec()])
        {
            for p in spec.params.iter() {
                layout.extend_from_slice(p.name.as_bytes());
                for d in p.shape.iter() {
                    layout.extend_from_slice(&(*d as u64).to_le_bytes());
                }
                layout.push(0);
            }
        }
        comm.check_agreement(&[
            ("split network", Value::Hash(fnv1a(base.bytes()))),
            ("split layout", Value::Hash(fnv1a(layout))),
            ("split ranks", Value::Count(ranks as u64)),
        ])?;
        match (size, shards.len()) {
            (1, n) if n == ranks => {}
            (s, 1) if s == ranks => {}
            _ => {
                return Err(SplitError::Layout(format!(
                    "{} shard(s) on rank {rank} of {size}, for a network split across {ranks} \
                     ranks: one process holds every shard, or each of {ranks} ranks one",
                    shards.len()
                )))
            }
        }
        if shards.is_empty() {
            return Err(SplitError::Layout("no shard".into()));
        }
        if !tail_name.ends_with("Tail") {
            return Err(SplitError::Layout(format!(
                "`{tail_name}` is not a split tail"
            )));
        }
        for s in &shards {
            if s.spec().name != format!("{base}Shard") {
                return Err(SplitError::Layout(format!(
                    "`{}` is not the shard of `{base}`",
                    s.spec().name
                )));
            }
        }
        let partial = tail
            .backprop_inputs()
            .first()
            .ok_or_else(|| SplitError::Layout(format!("`{tail_name}` has no incoming sum")))?
            .to_string();
        let width = tail
            .spec()
            .inputs
            .iter()
            .find(|i| i.name == partial)
            .map(|i| i.per_sample)
            .ok_or_else(|| SplitError::Layout(format!("no input `{partial}`")))?;
        let out = shards[0].spec().outputs.first().map(|o| o.per_sample);
        if out != Some(width) {
            return Err(SplitError::Layout(format!(
                "the shard's partial product has {out:?} values a sample, the tail takes {width}"
            )));
        }
        let shards = shards
            .into_iter()
            .map(Part::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SplitLayers {
            comm,
            shards,
            tail: Part::new(tail)?,
            partial,
            width,
            sum: Vec::new(),
            scratch: Vec::new(),
            grad: Vec::new(),
            network: base,
            ranks,
            first: if size > 1 { rank } else { 0 },
        })
    }

    /// The local shards' models, in rank order (this rank's alone on MPI).
    pub fn shards(&self) -> Vec<&dyn Model> {
        self.shards
            .iter()
            .map(|s| &*s.model as &dyn Model)
            .collect()
    }

    /// The tail's model.
    pub fn tail(&self) -> &dyn Model {
        &*self.tail.model
    }

    /// Bytes each rank contributes to the step's one all-reduce (the
    /// partial products of a batch of `batch`).
    pub fn bytes_per_step(&self, batch: usize) -> u64 {
        4 * (batch * self.width) as u64
    }

    /// One training step on a global batch of `batch` samples, the same on
    /// every rank (`inputs` and `labels` by name, whole-batch slices).
    /// Returns the batch's mean loss (every rank computes it).
    pub fn step(
        &mut self,
        inputs: &[(&str, &[f32])],
        labels: &[(&str, &[u32])],
        batch: usize,
        lr: f32,
    ) -> Result<f32, SplitError> {
        let n = batch * self.width;
        self.sum.clear();
        self.sum.resize(n, 0.0);
        self.scratch.resize(n, 0.0);
        // Forward of every local shard; their sum (in rank order).
        for (k, shard) in self.shards.iter_mut().enumerate() {
            let feats = features(&*shard.model, inputs, None, true, None)?;
            shard
                .model
                .predict(&feats, &mut [&mut self.scratch[..n]])
                .map_err(|source| SplitError::Step {
                    part: format!("shard {k}"),
                    source,
                })?;
            if k == 0 {
                self.sum.copy_from_slice(&self.scratch[..n]);
            } else {
                for (s, &p) in self.sum.iter_mut().zip(&self.scratch[..n]) {
                    *s += p;
                }
            }
        }
        // The one collective of the step.
        self.comm.all_reduce_sum(&mut self.sum)?;
        // The tail: loss, its gradients, the gradient of the sum.
        self.grad.clear();
        self.grad.resize(n, 0.0);
        let loss = {
            let tail = &mut self.tail.model;
            let feats = features(
                &**tail,
                inputs,
                Some((self.partial.as_str(), &self.sum[..])),
                false,
                None,
            )?;
            let labs = label_slices(&**tail, labels)?;
            tail.train_step_backprop(
                &Batch {
                    inputs: &feats,
                    labels: &labs,
                },
                &mut [&mut self.grad[..]],
            )
            .map_err(|source| SplitError::Step {
                part: "tail".into(),
                source,
            })?
        };
        // Each shard's backward, its cotangent the sum's gradient.
        let g_name = format!("g_{}", self.partial);
        for (k, shard) in self.shards.iter_mut().enumerate() {
            let feats = features(
                &*shard.model,
                inputs,
                None,
                false,
                Some((g_name.as_str(), &self.grad[..])),
            )?;
            shard
                .model
                .train_step(&Batch {
                    inputs: &feats,
                    labels: &[],
                })
                .map_err(|source| SplitError::Step {
                    part: format!("shard {k}"),
                    source,
                })?;
        }
        for shard in &mut self.shards {
            shard.step(lr)?;
        }
        self.tail.step(lr)?;
        Ok(loss)
    }
}

impl SplitLayers<'_, '_> {
    /// The layout this run's checkpoints have.
    pub fn checkpoint_layout(&self) -> Layout {
        Layout::Split(self.ranks)
    }

    /// Saves the run into the sliced checkpoint directory `dir`, on every
    /// rank: each local shard's slice of the new generation `g`
    /// (`shard-<r>.gen-<g>.safetensors`: the shard's slices and the tail,
    /// parameters and optimizer state, written atomically), then, once
    /// every rank has written, rank 0's manifest naming every slice with
    /// its hash, and only then the previous generation is removed.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<(), SplitError> {
        let layout = self.checkpoint_layout();
        let generation = sliced::prepare_dir(dir, &self.network, layout)?;
        let tail_state = self.tail.optimizer.state();
        let tail = SlicePart {
            spec: self.tail.model.spec(),
            params: self.tail.model.params(),
            optimizer: &tail_state,
        };
        let mut hashes = Vec::with_capacity(self.shards.len() + 1);
        hashes.push(generation);
        for (k, shard) in self.shards.iter().enumerate() {
            let state = shard.optimizer.state();
            let part = SlicePart {
                spec: shard.model.spec(),
                params: shard.model.params(),
                optimizer: &state,
            };
            hashes.push(sliced::write_slice(
                dir,
                &self.network,
                layout,
                generation,
                self.first + k,
                &[part, tail],
            )?);
        }
        let mut all = vec![0u64; hashes.len() * self.comm.size()];
        self.comm.all_gather_u64(&hashes, &mut all)?;
        let (generation, hashes) = sliced::gathered(dir, &all, self.comm.size())?;
        if self.comm.rank() == 0 {
            let m = Manifest {
                network: self.network.clone(),
                layout,
                step: tail_state.step,
                generation,
                optimizer: tail_state.kind.clone(),
                hashes,
            };
            sliced::write_manifest(dir, &m)?;
            sliced::remove_unused(dir, &m);
        }
        // No rank reads the checkpoint before its manifest exists.
        self.comm.barrier()?;
        Ok(())
    }

    /// Resumes from the sliced checkpoint in `dir`, on every rank: its
    /// manifest must be this network split over as many ranks, and each
    /// local shard's slice written by these shard and tail models; all is
    /// checked before anything changes. The tail is read from the first
    /// local shard's slice. Only the files the manifest names are read;
    /// the leftovers of a save that died before its manifest are removed
    /// (by rank 0, once every rank has read its slices).
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<(), SplitError> {
        let m = sliced::read_manifest(dir)?;
        m.expect(dir, &self.network, self.checkpoint_layout())?;
        let mut loaded = Vec::with_capacity(self.shards.len());
        for (k, shard) in self.shards.iter().enumerate() {
            let r = self.first + k;
            let specs = [shard.model.spec(), self.tail.model.spec()];
            let parts = sliced::read_slice(dir, &m, r, &specs)?;
            check_optimizer(dir, &m, r, &shard.optimizer.state(), &parts[0].optimizer)?;
            check_optimizer(
                dir,
                &m,
                r,
                &self.tail.optimizer.state(),
                &parts[1].optimizer,
            )?;
            loaded.push(parts);
        }
        // Every slice carries the replicated tail. The copies this rank
        // reads (one per local shard) must be the same bits, or the ranks
        // that wrote them had diverged and no copy is the run's. (A rank
        // holding one shard has one copy: nothing to compare.)
        let same_bits = |x: &[f32], y: &[f32]| {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        };
        if let Some((first, rest)) = loaded.split_first() {
            for (k, parts) in rest.iter().enumerate() {
                let (a, b) = (&first[1], &parts[1]);
                let (oa, ob) = (&a.optimizer, &b.optimizer);
                let same = same_bits(&a.params, &b.params)
                    && oa.kind == ob.kind
                    && oa.step == ob.step
                    && oa.tensors.len() == ob.tensors.len()
                    && oa
                        .tensors
                        .iter()
                        .zip(&ob.tensors)
                        .all(|((na, ta), (nb, tb))| na == nb && same_bits(ta, tb));
                if !same {
                    return Err(crate::checkpoint::CheckpointError::Corrupt {
                        path: dir.join(m.file_name(self.first + k + 1)),
                        reason: format!(
                            "its copy of the replicated tail differs from slice {}'s: the ranks \
                             that saved them had diverged",
                            self.first
                        ),
                    }
                    .into());
                }
            }
        }
        let mut tail = None;
        for (shard, mut parts) in self.shards.iter_mut().zip(loaded) {
            let t = parts.pop().expect("the tail");
            let s = parts.pop().expect("the shard");
            shard.optimizer.load_state(&s.optimizer)?;
            shard.model.params_mut().copy_from_slice(&s.params);
            tail.get_or_insert(t);
        }
        let t = tail.expect("at least one shard");
        self.tail.optimizer.load_state(&t.optimizer)?;
        self.tail.model.params_mut().copy_from_slice(&t.params);
        self.comm.barrier()?;
        if self.comm.rank() == 0 {
            sliced::remove_unused(dir, &m);
        }
        Ok(())
    }
}

/// A model's float inputs in declaration order: `given` by its name (the
/// incoming sum or the cotangent), the others from `inputs`.
fn features<'a>(
    model: &dyn Model,
    inputs: &[(&str, &'a [f32])],
    sum: Option<(&str, &'a [f32])>,
    predict_only: bool,
    cotangent: Option<(&str, &'a [f32])>,
) -> Result<Vec<&'a [f32]>, SplitError> {
    let mut out = Vec::new();
    for i in model
        .spec()
        .inputs
        .iter()
        .filter(|i| i.kind == InputKind::Features)
    {
        if predict_only && !i.predict {
            continue;
        }
        let given = [sum, cotangent]
            .into_iter()
            .flatten()
            .find(|(n, _)| *n == i.name)
            .map(|(_, d)| d);
        match given.or_else(|| inputs.iter().find(|(n, _)| *n == i.name).map(|(_, d)| *d)) {
            Some(d) => out.push(d),
            None => return Err(SplitError::MissingInput(i.name.to_string())),
        }
    }
    Ok(out)
}

/// A model's labels in declaration order, from `labels` by name.
fn label_slices<'a>(
    model: &dyn Model,
    labels: &[(&str, &'a [u32])],
) -> Result<Vec<&'a [u32]>, SplitError> {
    model
        .spec()
        .inputs
        .iter()
        .filter(|i| matches!(i.kind, InputKind::Labels { .. }))
        .map(|i| {
            labels
                .iter()
                .find(|(n, _)| *n == i.name)
                .map(|(_, d)| *d)
                .ok_or_else(|| SplitError::MissingInput(i.name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nnc_spec::ParamSpec;

    #[test]
    fn slices_follow_the_axis() {
        // A 2 × 4 weight cut by columns for 2 ranks: rank 1 holds columns 2..4.
        let q = ParamSpec::new("w", vec![2, 4], 0);
        let p = ParamSpec::new("w", vec![2, 2], 0);
        let mut got = Vec::new();
        runs(&q, &p, 1, 2, |w, d| got.push((w, d))).unwrap();
        assert_eq!(got, vec![(2..4, 0..2), (6..8, 2..4)]);
        // By rows: rank 1 holds rows 2..4 of a 4 × 3 weight, one run.
        let q = ParamSpec::new("w", vec![4, 3], 10);
        let p = ParamSpec::new("w", vec![2, 3], 0);
        let mut got = Vec::new();
        runs(&q, &p, 1, 2, |w, d| got.push((w, d))).unwrap();
        assert_eq!(got, vec![(16..22, 0..6)]);
        assert_eq!(slicing(&q, &q, 2), Some(Slicing::Whole));
        let bad = ParamSpec::new("w", vec![3, 3], 0);
        assert!(runs(&q, &bad, 0, 2, |_, _| {}).is_err());
    }
}
