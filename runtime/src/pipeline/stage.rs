//! One local stage of a pipeline: its model, optimizer and the buffers a
//! step keeps per micro-batch, and its forward and backward of one
//! micro-batch.

use super::PipelineError;
use crate::model::{Batch, Model};
use crate::optim::Optimizer;
use nnc_spec::InputKind;

/// One local stage: its model, optimizer and buffers.
pub(super) struct Stage<'m> {
    pub(super) model: &'m mut dyn Model,
    pub(super) optimizer: Box<dyn Optimizer>,
    /// The gradient of the whole batch, summed over micro-batches.
    pub(super) acc: Vec<f32>,
    /// Each micro-batch's incoming activation (not for stage 0), held from
    /// its arrival to the micro-batch's backward (empty: not held).
    pub(super) act_in: Vec<Vec<f32>>,
    /// Each micro-batch's gradient w.r.t. the incoming activation, held
    /// until it is passed back (empty: not held).
    pub(super) grad_in: Vec<Vec<f32>>,
    /// Each micro-batch's gradient w.r.t. the outgoing activation received
    /// from the next rank ahead of the backward that needs it.
    pub(super) g_out: Vec<Vec<f32>>,
    /// Values per sample of the incoming activation (0 for stage 0) and of
    /// the outgoing one (0 for the last stage).
    pub(super) in_width: usize,
    pub(super) out_width: usize,
    /// Index among the features of the incoming activation and of the
    /// cotangent input `g_<out>`.
    in_at: Option<usize>,
    g_at: Option<usize>,
}

impl<'m> Stage<'m> {
    pub(super) fn new(
        model: &'m mut dyn Model,
        s: usize,
        count: usize,
    ) -> Result<Self, PipelineError> {
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
            g_out: Vec::new(),
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
    pub(super) fn forward(
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
    pub(super) fn backward(
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
