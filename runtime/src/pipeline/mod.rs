//! Pipeline parallelism (issue #24, first increment): a network cut into
//! stages by `stages:` in its `train` block, each stage a generated model
//! of its own (`<Name>Stage<s>`, see the compiler's `lower::stages`), one
//! stage per rank, activations sent forward and their gradients back over
//! point-to-point messages ([`PointToPoint`]: MPI, or nothing on one
//! process, which then holds every stage).
//!
//! One training step cuts the global batch into micro-batches and runs a
//! GPipe schedule: every micro-batch forward through the stages, then every
//! micro-batch backward. A stage keeps only its *incoming* activation of
//! each micro-batch; its backward recomputes its forward
//! (`train_step_backprop` is a whole training step of the stage network:
//! GPipe's re-materialisation). The last stage runs forward and backward
//! of a micro-batch at once and weighs its loss by the micro-batch's share
//! of the batch, so the gradients sent back, and summed over micro-batches
//! on every stage, are those of the whole batch's mean loss. Each rank holds
//! its stage's parameters, gradients and optimizer state only.
//!
//! Numerics: one process running every stage computes the same values as
//! the ranks of a pipeline bit for bit (same kernels, same order of the
//! micro-batch sums); against the unstaged network on the whole batch they
//! agree to float precision (the batch's sums are split by micro-batch).

#[cfg(feature = "mpi")]
mod mpi;

use crate::collective::{fnv1a, Collective, CollectiveError, Local, Value};
use crate::model::{Batch, Model, StepError};
use crate::optim::{OptimError, Optimizer};
use nnc_spec::InputKind;
use thiserror::Error;

/// Why a pipeline could not be set up or step.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// A collective (the start-up check) failed.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// A stage's training step failed.
    #[error("stage {stage}")]
    Step {
        /// The stage.
        stage: usize,
        /// Why.
        #[source]
        source: StepError,
    },
    /// The optimizer rejected its configuration or a step.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// The stages given do not make a pipeline on these ranks.
    #[error("pipeline layout: {0}")]
    Layout(String),
    /// The ranks run different pipelines.
    #[error("pipeline layout differs on rank {rank}: {what}")]
    Disagree {
        /// The rank that differs.
        rank: usize,
        /// How.
        what: String,
    },
    /// A `train` setting the pipeline does not implement yet.
    #[error("pipeline training does not support {0} yet")]
    Unsupported(&'static str),
    /// The batch does not provide a stage's input.
    #[error("no data for input `{0}` of the pipeline")]
    MissingInput(String),
    /// A point-to-point message could not be sent or received.
    #[error("message {what} rank {peer}: {why}")]
    Message {
        /// "to" or "from".
        what: &'static str,
        /// The other rank.
        peer: usize,
        /// Why.
        why: String,
    },
}

/// Ranks that exchange point-to-point messages besides collectives: sends
/// and receives of f32 buffers between two ranks, matched in order.
pub trait PointToPoint: Collective {
    /// Sends `data` to rank `to` (returns once the buffer may be reused).
    fn send(&self, to: usize, data: &[f32]) -> Result<(), PipelineError>;
    /// Receives exactly `data.len()` values from rank `from`.
    fn recv(&self, from: usize, data: &mut [f32]) -> Result<(), PipelineError>;
}

/// One process holds every stage: nothing is ever sent.
impl PointToPoint for Local {
    fn send(&self, to: usize, _data: &[f32]) -> Result<(), PipelineError> {
        Err(PipelineError::Message {
            what: "to",
            peer: to,
            why: "a single process has no other rank".into(),
        })
    }
    fn recv(&self, from: usize, _data: &mut [f32]) -> Result<(), PipelineError> {
        Err(PipelineError::Message {
            what: "from",
            peer: from,
            why: "a single process has no other rank".into(),
        })
    }
}

/// What a run of the schedule costs, per step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineReport {
    /// Stages of the pipeline.
    pub stages: usize,
    /// Micro-batches per step.
    pub micro_batches: usize,
    /// The schedule's bubble: the fraction of a stage's time slots idle in
    /// one step, `(S − 1) / (M + S − 1)` for GPipe with `S` stages and `M`
    /// micro-batches of equal cost.
    pub bubble: f64,
    /// Bytes this rank's stages passed on across stage boundaries in the
    /// last step: the activations of its non-last stages, forward, and the
    /// incoming-activation gradients of its non-first stages, back (summed
    /// over ranks: every boundary's traffic, once).
    pub bytes_per_step: u64,
    /// Of those, the bytes sent to other ranks (none on one process).
    pub bytes_sent_by_rank: u64,
}

/// One local stage: its model, optimizer and buffers.
struct Stage<'m> {
    model: &'m mut dyn Model,
    optimizer: Box<dyn Optimizer>,
    /// The gradient of the whole batch, summed over micro-batches.
    acc: Vec<f32>,
    /// Each micro-batch's incoming activation (not for stage 0).
    act_in: Vec<Vec<f32>>,
    /// Each micro-batch's gradient w.r.t. the incoming activation, kept by
    /// the last stage until the backward phase sends it.
    grad_in: Vec<Vec<f32>>,
    /// Values per sample of the incoming activation (0 for stage 0) and of
    /// the outgoing one (0 for the last stage).
    in_width: usize,
    out_width: usize,
    /// Index among the features of the incoming activation and of the
    /// cotangent input `g_<out>`.
    in_at: Option<usize>,
    g_at: Option<usize>,
}

/// A pipelined training run on this rank: its stages (every stage on one
/// process, one stage per rank otherwise), GPipe schedule over
/// `micro_batches` micro-batches.
pub struct Pipeline<'m, 'c> {
    comm: &'c dyn PointToPoint,
    stages: Vec<Stage<'m>>,
    /// Index of this rank's first stage.
    first: usize,
    count: usize,
    micro: usize,
    report: PipelineReport,
}

impl<'m, 'c> Pipeline<'m, 'c> {
    /// Sets up rank `comm.rank()`'s part of a pipeline of `count` stages:
    /// `local` is every stage (in order) on a single process, or stage
    /// `rank` when there is one rank per stage. Checks on every rank that
    /// all ranks run the same pipeline (network, stage count, micro-batches,
    /// activation widths between neighbours), naming the first rank that
    /// differs.
    pub fn new(
        local: Vec<&'m mut dyn Model>,
        count: usize,
        micro_batches: usize,
        comm: &'c dyn PointToPoint,
    ) -> Result<Self, PipelineError> {
        let (rank, size) = (comm.rank(), comm.size());
        if count < 2 {
            return Err(PipelineError::Layout(format!(
                "{count} stage(s): a pipeline has at least 2"
            )));
        }
        let first = match size {
            1 if local.len() == count => 0,
            n if n == count && local.len() == 1 => rank,
            _ => {
                return Err(PipelineError::Layout(format!(
                    "{} stage(s) on rank {rank} of {size}, for a pipeline of {count}: one \
                     process holds every stage, or each of {count} ranks one",
                    local.len()
                )))
            }
        };
        if micro_batches == 0 {
            return Err(PipelineError::Layout("0 micro-batches".into()));
        }
        let mut stages = Vec::with_capacity(local.len());
        let mut family = None;
        for (i, model) in local.into_iter().enumerate() {
            let s = first + i;
            let stage = Stage::new(model, s, count)?;
            let name = stage.model.spec().name.to_string();
            let base = name
                .strip_suffix(&format!("Stage{s}"))
                .ok_or_else(|| {
                    PipelineError::Layout(format!("model `{name}` is not stage {s} of a pipeline"))
                })?
                .to_string();
            if family.get_or_insert_with(|| base.clone()) != &base {
                return Err(PipelineError::Layout(format!(
                    "stage {s} is `{name}`, not a stage of `{}`",
                    family.unwrap_or_default()
                )));
            }
            stages.push(stage);
        }
        let family = family.unwrap_or_default();
        // The same pipeline everywhere: network, stages, micro-batches.
        comm.check_agreement(&[
            ("pipelined network", Value::Hash(fnv1a(family.bytes()))),
            ("stage count", Value::Count(count as u64)),
            ("micro-batches", Value::Count(micro_batches as u64)),
        ])?;
        if size > 1 {
            // Neighbours agree on the activation between them.
            let st = &stages[0];
            let mine = [st.in_width as u64, st.out_width as u64];
            let mut all = vec![0u64; 2 * size];
            comm.all_gather_u64(&mine, &mut all)?;
            for r in 1..size {
                let (sent, got) = (all[2 * (r - 1) + 1], all[2 * r]);
                if sent != got {
                    return Err(PipelineError::Disagree {
                        rank: r,
                        what: format!(
                            "its stage takes {got} values a sample, rank {} sends {sent}",
                            r - 1
                        ),
                    });
                }
            }
        }
        let bubble = (count - 1) as f64 / (micro_batches + count - 1) as f64;
        Ok(Pipeline {
            comm,
            stages,
            first,
            count,
            micro: micro_batches,
            report: PipelineReport {
                stages: count,
                micro_batches,
                bubble,
                bytes_per_step: 0,
                bytes_sent_by_rank: 0,
            },
        })
    }

    /// The cost of the last step (bubble, bytes).
    pub fn report(&self) -> PipelineReport {
        self.report
    }

    /// The local stages' models, in stage order.
    pub fn models(&self) -> Vec<&dyn Model> {
        self.stages
            .iter()
            .map(|s| &*s.model as &dyn Model)
            .collect()
    }

    /// Index of this rank's first stage.
    pub fn first_stage(&self) -> usize {
        self.first
    }

    /// One training step on a global batch of `batch` samples: every rank
    /// passes the same batch (`inputs` and `labels` by name, whole-batch
    /// slices; each stage reads what it declares), the GPipe schedule runs,
    /// and every local stage takes one optimizer step at rate `lr`. Returns
    /// the batch's mean loss on the rank holding the last stage, `None`
    /// elsewhere.
    pub fn step(
        &mut self,
        inputs: &[(&str, &[f32])],
        labels: &[(&str, &[u32])],
        batch: usize,
        lr: f32,
    ) -> Result<Option<f32>, PipelineError> {
        let ranges = micro_ranges(batch, self.micro);
        let mut report = self.report;
        report.bytes_per_step = 0;
        report.bytes_sent_by_rank = 0;
        let last = self.count - 1;
        let mut loss = None;
        for st in &mut self.stages {
            st.acc.iter_mut().for_each(|g| *g = 0.0);
            st.act_in.resize(ranges.len(), Vec::new());
            st.grad_in.resize(ranges.len(), Vec::new());
        }
        // Forward: stage by stage, every micro-batch.
        for i in 0..self.stages.len() {
            let s = self.first + i;
            let mut total = 0.0f32;
            for (m, r) in ranges.iter().enumerate() {
                let b = r.len();
                if s > 0 {
                    let width = self.stages[i].in_width;
                    let mut act = std::mem::take(&mut self.stages[i].act_in[m]);
                    act.resize(b * width, 0.0);
                    if i == 0 {
                        self.comm.recv(s - 1, &mut act)?;
                    }
                    // (a local previous stage wrote it already)
                    self.stages[i].act_in[m] = act;
                }
                if s == last {
                    let w = b as f32 / batch as f32;
                    let l = self.stages[i].backward(s, m, r.clone(), inputs, labels, None, w)?;
                    total += w * l;
                } else {
                    let out = self.stages[i].forward(s, m, r.clone(), inputs)?;
                    report.bytes_per_step += 4 * out.len() as u64;
                    if i + 1 < self.stages.len() {
                        self.stages[i + 1].act_in[m] = out;
                    } else {
                        self.comm.send(s + 1, &out)?;
                        report.bytes_sent_by_rank += 4 * out.len() as u64;
                    }
                }
            }
            if s == last {
                loss = Some(total);
            }
        }
        // Backward: stage by stage from the last, every micro-batch.
        for i in (0..self.stages.len()).rev() {
            let s = self.first + i;
            for (m, r) in ranges.iter().enumerate() {
                if s != last {
                    let width = self.stages[i].out_width;
                    let mut g = vec![0.0f32; r.len() * width];
                    if i + 1 < self.stages.len() {
                        g.copy_from_slice(&self.stages[i + 1].grad_in[m]);
                    } else {
                        self.comm.recv(s + 1, &mut g)?;
                    }
                    self.stages[i].backward(s, m, r.clone(), inputs, labels, Some(&g), 1.0)?;
                }
                if s > 0 {
                    let gin = &self.stages[i].grad_in[m];
                    report.bytes_per_step += 4 * gin.len() as u64;
                    if i == 0 {
                        self.comm.send(s - 1, gin)?;
                        report.bytes_sent_by_rank += 4 * gin.len() as u64;
                    }
                }
            }
        }
        for st in &mut self.stages {
            let Stage {
                model,
                optimizer,
                acc,
                ..
            } = st;
            optimizer.step(model.params_mut(), acc, lr)?;
        }
        self.report = report;
        Ok(loss)
    }
}

impl<'m> Stage<'m> {
    fn new(model: &'m mut dyn Model, s: usize, count: usize) -> Result<Self, PipelineError> {
        let spec = model.spec();
        let train = &spec.train;
        if train.clip_norm.is_some() {
            return Err(PipelineError::Unsupported("clip_norm"));
        }
        if train.weight_decay != 0.0 {
            return Err(PipelineError::Unsupported("weight_decay"));
        }
        let features: Vec<_> = spec
            .inputs
            .iter()
            .filter(|i| i.kind == InputKind::Features)
            .collect();
        let layout = |what: String| PipelineError::Layout(format!("stage {s}: {what}"));
        let (in_at, in_width) = if s > 0 {
            let name = model
                .backprop_inputs()
                .first()
                .ok_or_else(|| layout(format!("`{}` has no incoming activation", spec.name)))?;
            let at = features
                .iter()
                .position(|i| i.name == *name)
                .ok_or_else(|| layout(format!("no input `{name}`")))?;
            (Some(at), features[at].per_sample)
        } else {
            (None, 0)
        };
        let (g_at, out_width) = if s + 1 < count {
            let out = spec
                .outputs
                .first()
                .ok_or_else(|| layout(format!("`{}` has no outgoing activation", spec.name)))?;
            let g = format!("g_{}", out.name);
            let at = features
                .iter()
                .position(|i| i.name == g)
                .ok_or_else(|| layout(format!("no cotangent input `{g}`")))?;
            (Some(at), out.per_sample)
        } else {
            (None, 0)
        };
        let optimizer = crate::optim::build(&train.optimizer, spec.param_count)?;
        Ok(Stage {
            acc: vec![0.0; spec.param_count],
            optimizer,
            act_in: Vec::new(),
            grad_in: Vec::new(),
            in_width,
            out_width,
            in_at,
            g_at,
            model,
        })
    }

    /// The stage's features for micro-batch `m` (rows `r` of the batch):
    /// the incoming activation, data inputs by name, the cotangent `g`.
    fn features<'a>(
        &'a self,
        m: usize,
        r: &std::ops::Range<usize>,
        inputs: &[(&str, &'a [f32])],
        g: Option<&'a [f32]>,
        predict_only: bool,
    ) -> Result<Vec<&'a [f32]>, PipelineError> {
        let spec = self.model.spec();
        let mut out = Vec::new();
        for (k, i) in spec
            .inputs
            .iter()
            .filter(|i| i.kind == InputKind::Features)
            .enumerate()
        {
            if predict_only && !i.predict {
                continue;
            }
            if Some(k) == self.in_at {
                out.push(&self.act_in[m][..]);
            } else if Some(k) == self.g_at {
                out.push(g.unwrap_or(&[]));
            } else {
                let (_, data) = inputs
                    .iter()
                    .find(|(n, _)| *n == i.name)
                    .ok_or_else(|| PipelineError::MissingInput(i.name.to_string()))?;
                let w = i.per_sample;
                out.push(&data[r.start * w..r.end * w]);
            }
        }
        Ok(out)
    }

    /// Micro-batch `m`'s outgoing activation (a non-last stage's forward).
    fn forward(
        &mut self,
        s: usize,
        m: usize,
        r: std::ops::Range<usize>,
        inputs: &[(&str, &[f32])],
    ) -> Result<Vec<f32>, PipelineError> {
        let mut out = vec![0.0f32; r.len() * self.out_width];
        let feats = self.features(m, &r, inputs, None, true)?;
        // `predict` needs `&mut self.model` while `feats` borrows the
        // stashed activation: move it out for the call.
        let feats: Vec<Vec<f32>> = feats.into_iter().map(<[f32]>::to_vec).collect();
        let refs: Vec<&[f32]> = feats.iter().map(Vec::as_slice).collect();
        self.model
            .predict(&refs, &mut [&mut out])
            .map_err(|source| PipelineError::Step { stage: s, source })?;
        Ok(out)
    }

    /// Micro-batch `m`'s backward (for the last stage, forward and
    /// backward): adds `weight ×` its parameter gradient to the stage's
    /// sum and keeps `weight ×` the incoming activation's gradient for the
    /// previous stage. `g` is the outgoing activation's gradient (none for
    /// the last stage). Returns the stage's objective (the last stage's
    /// micro-batch mean loss).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        s: usize,
        m: usize,
        r: std::ops::Range<usize>,
        inputs: &[(&str, &[f32])],
        labels: &[(&str, &[u32])],
        g: Option<&[f32]>,
        weight: f32,
    ) -> Result<f32, PipelineError> {
        let spec = self.model.spec();
        let mut labs: Vec<&[u32]> = Vec::new();
        for i in spec
            .inputs
            .iter()
            .filter(|i| matches!(i.kind, InputKind::Labels { .. }))
        {
            let (_, data) = labels
                .iter()
                .find(|(n, _)| *n == i.name)
                .ok_or_else(|| PipelineError::MissingInput(i.name.to_string()))?;
            let w = i.per_sample;
            labs.push(&data[r.start * w..r.end * w]);
        }
        let mut gin = std::mem::take(&mut self.grad_in[m]);
        gin.resize(r.len() * self.in_width, 0.0);
        let feats = self.features(m, &r, inputs, g, false)?;
        let feats: Vec<Vec<f32>> = feats.into_iter().map(<[f32]>::to_vec).collect();
        let refs: Vec<&[f32]> = feats.iter().map(Vec::as_slice).collect();
        let batch = Batch {
            inputs: &refs,
            labels: &labs,
        };
        let step = |e| PipelineError::Step {
            stage: s,
            source: e,
        };
        let loss = if s == 0 {
            self.model.train_step(&batch).map_err(step)?
        } else {
            self.model
                .train_step_backprop(&batch, &mut [&mut gin])
                .map_err(step)?
        };
        if weight != 1.0 {
            gin.iter_mut().for_each(|v| *v *= weight);
        }
        for (a, &d) in self.acc.iter_mut().zip(self.model.grads()) {
            *a += weight * d;
        }
        self.grad_in[m] = gin;
        Ok(loss)
    }
}

/// The rows of each of `micro` micro-batches of a batch of `batch`
/// samples: contiguous, the first `batch % micro` one sample longer; no
/// empty micro-batch (fewer when the batch is smaller).
pub fn micro_ranges(batch: usize, micro: usize) -> Vec<std::ops::Range<usize>> {
    let m = micro.min(batch).max(1);
    let (q, extra) = (batch / m, batch % m);
    let mut start = 0;
    (0..m)
        .map(|k| {
            let len = q + usize::from(k < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}
