//! Running a plan: in f32 (calibration, recording the statistics of the
//! values int8 steps read) and in int8.

use std::collections::BTreeMap;

use super::{Layer, Layout, Packed, Plan, PlanError, Step};
use crate::gemm::Parallelism;
use crate::kernels::conv;
use crate::kernels::{matmul, softmax};
use crate::quant::kernel::ROW_UNIT;
use crate::quant::{
    conv2d_layout, conv_scratch_len, dequantize_u8, max_pool2d_u8, max_pool2d_u8_channels_last,
    qgemm, quantize_u8, ActQuant, Channels, Epilogue, MinMax, Output, QMatRef,
};

/// The buffers a run works in: one f32 and one u8 tensor per value (each
/// grown to the batch on first use, then reused), and the convolutions'
/// scratch space.
#[derive(Debug, Default)]
pub(super) struct Buffers {
    f: Vec<Vec<f32>>,
    q: Vec<Vec<u8>>,
    fscratch: Vec<f32>,
    qscratch: Vec<u8>,
}

/// Elements of a chunk's largest value in an int8 run (bytes for the u8
/// values int8 steps pass between them; an f32 value is 4 times that, which
/// the margin below L2 absorbs): a larger batch runs
/// in chunks of samples whose values stay in L2 between the step that
/// writes them and the step that reads them (LeNet's first convolution
/// writes 4.7 kB per sample: 1.2 MB for a batch of 256, beyond a 1 MB L2,
/// and its pooling read it back from L3). Plans of small values (the MLP's
/// are at most 784 per sample) run whole batches of 256: chunks would only
/// cut the products' row tiles.
const CHUNK_BYTES: usize = 256 * 1024;

/// Samples per chunk of plan `plan`'s int8 runs: a multiple of the GEMM's
/// row unit (whole tiles), at least one unit.
fn chunk(plan: &Plan) -> usize {
    let widest = plan.values.iter().copied().max().unwrap_or(0).max(1);
    (CHUNK_BYTES / widest).max(ROW_UNIT) / ROW_UNIT * ROW_UNIT
}

/// Grows `v` to at least `len` elements (never shrinks: a smaller batch
/// uses a prefix).
fn grow<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

/// The f32 values of value `v` in an int8 run: the caller's `input` for
/// the plan's input (read in place: a copy of a batch of MNIST digits is
/// 800 kB of memory traffic), else its buffer's first `b` samples.
fn f32s<'a>(fs: &'a [Vec<f32>], input: &'a [f32], plan: &Plan, v: usize, b: usize) -> &'a [f32] {
    if v == plan.input {
        input
    } else {
        &fs[v][..plan.values[v] * b]
    }
}

impl Buffers {
    fn size(&mut self, plan: &Plan, b: usize) {
        let n = plan.values.len();
        self.f.resize_with(n, Vec::new);
        self.q.resize_with(n, Vec::new);
        for (v, &len) in plan.values.iter().enumerate() {
            grow(&mut self.f[v], len * b);
        }
    }

    /// The f32 forward pass with the model's f32 weights (`get` by name),
    /// observing into `stats` every value it has an entry for, just before
    /// an int8 step reads it.
    pub(super) fn forward_f32<'p>(
        &mut self,
        plan: &Plan,
        get: &dyn Fn(&str) -> Result<&'p [f32], PlanError>,
        input: &[f32],
        b: usize,
        stats: &mut BTreeMap<usize, MinMax>,
    ) -> Result<(), PlanError> {
        self.size(plan, b);
        let len = |v: usize| plan.values[v] * b;
        self.f[plan.input][..input.len()].copy_from_slice(input);
        for s in &plan.steps {
            let (x, y) = (s.input(), s.out());
            if let Some(m) = stats.get_mut(&x) {
                m.observe(&self.f[x][..len(x)]);
            }
            let mut out = std::mem::take(&mut self.f[y]);
            let (xs, ys) = (&self.f[x][..len(x)], &mut out[..len(y)]);
            match s {
                Step::Dense {
                    weight, bias, relu, ..
                } => {
                    let (k, n) = (plan.values[x], plan.values[y]);
                    matmul(ys, xs, get(weight)?, 1, b, k, n, true);
                    let bias = bias.as_deref().map(get).transpose()?;
                    finish(ys, bias, *relu, 1);
                }
                Step::Conv {
                    weight,
                    bias,
                    relu,
                    geometry: g,
                    ..
                } => {
                    grow(&mut self.fscratch, g.scratch_len());
                    conv::conv2d(g, b, ys, xs, get(weight)?, &mut self.fscratch);
                    let (oh, ow) = g.out_hw();
                    let bias = bias.as_deref().map(get).transpose()?;
                    finish(ys, bias, *relu, oh * ow);
                }
                _ => f32_step(s, xs, ys, b),
            }
            self.f[y] = out;
        }
        Ok(())
    }

    /// The output value of the last f32 pass.
    #[cfg(test)]
    pub(super) fn output(&self, plan: &Plan, b: usize) -> Vec<f32> {
        self.f[plan.output][..plan.values[plan.output] * b].to_vec()
    }

    /// The int8 forward pass (`layout` derived from `plan`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_int8(
        &mut self,
        plan: &Plan,
        layers: &[Option<Layer>],
        acts: &BTreeMap<usize, ActQuant>,
        layout: &Layout,
        input: &[f32],
        out: &mut [f32],
        b: usize,
    ) -> Result<(), PlanError> {
        let (ni, no) = (plan.values[plan.input] * b, plan.values[plan.output] * b);
        if b == 0 || input.len() != ni || out.len() != no {
            return Err(PlanError::Batch(format!(
                "{b} samples need {ni} input and {no} output floats, got {} and {}",
                input.len(),
                out.len()
            )));
        }
        let chunk = chunk(plan);
        // (A plan whose input or output is empty has nothing to cut.)
        if b > chunk && ni > 0 && no > 0 {
            // Sample by sample the steps are independent (fixed activation
            // scales, per-row products), so chunks give the same bits.
            let (si, so) = (ni / b, no / b);
            for (xi, yo) in input.chunks(si * chunk).zip(out.chunks_mut(so * chunk)) {
                self.forward_int8(plan, layers, acts, layout, xi, yo, xi.len() / si)?;
            }
            return Ok(());
        }
        self.size(plan, b);
        for &v in acts.keys() {
            grow(&mut self.q[v], plan.values[v] * b);
        }
        let len = |v: usize| plan.values[v] * b;
        let act = |v: usize| {
            acts.get(&v)
                .copied()
                .ok_or_else(|| PlanError::Plan(format!("value {v} has no activation scale")))
        };
        let par = Parallelism::Rayon(0);
        for ((s, layer), &on_bytes) in plan.steps.iter().zip(layers).zip(&layout.u8_pool) {
            let (x, y) = (s.input(), s.out());
            let Some(layer) = layer else {
                let mut o = std::mem::take(&mut self.f[y]);
                match s {
                    Step::MaxPool { pool, .. } if on_bytes => {
                        let mut qo = std::mem::take(&mut self.q[y]);
                        grow(&mut qo, len(y));
                        let (yq, xq) = (&mut qo[..len(y)], &self.q[x][..len(x)]);
                        if layout.last[x].is_some() {
                            max_pool2d_u8_channels_last(pool, b, yq, xq);
                        } else {
                            max_pool2d_u8(pool, b, yq, xq);
                        }
                        if !layout.u8_only[y] {
                            dequantize_u8(act(x)?, &qo[..len(y)], &mut o[..len(y)]);
                        }
                        self.q[y] = qo;
                    }
                    _ => f32_step(s, f32s(&self.f, input, plan, x, b), &mut o[..len(y)], b),
                }
                self.f[y] = o;
                continue;
            };
            let xa = act(x)?;
            if !layout.u8_only[x] {
                quantize_u8(
                    xa,
                    f32s(&self.f, input, plan, x, b),
                    &mut self.q[x][..len(x)],
                );
            }
            let relu = matches!(
                s,
                Step::Dense { relu: true, .. } | Step::Conv { relu: true, .. }
            );
            let ep = Epilogue {
                bias: layer.bias.as_deref(),
                relu,
            };
            let (mut fo, mut qo) = (
                std::mem::take(&mut self.f[y]),
                std::mem::take(&mut self.q[y]),
            );
            let sink = if layout.u8_only[y] {
                Output::U8(&mut qo[..len(y)], ep, act(y)?)
            } else {
                Output::F32(&mut fo[..len(y)], ep)
            };
            let xq = &self.q[x][..len(x)];
            let r = match &layer.packed {
                Packed::Dense(w) => {
                    let k = plan.values[x];
                    qgemm(par, b, QMatRef::new(xq, k, xa), w, sink, w.outputs())
                }
                Packed::Conv(w) => {
                    let g = w.geometry();
                    grow(&mut self.qscratch, conv_scratch_len(g));
                    let out_layout = match layout.last[y] {
                        Some(_) => Channels::Last,
                        None => Channels::First,
                    };
                    let scratch = &mut self.qscratch;
                    conv2d_layout(par, g, b, xq, xa, w, sink, out_layout, scratch)
                }
            };
            self.f[y] = fo;
            self.q[y] = qo;
            r?;
        }
        out.copy_from_slice(f32s(&self.f, input, plan, plan.output, b));
        Ok(())
    }
}

/// Adds the bias (one per channel; a channel is `inner` consecutive
/// elements, rows of `n` channels) and applies ReLU, in place.
fn finish(y: &mut [f32], bias: Option<&[f32]>, relu: bool, inner: usize) {
    if let Some(bias) = bias {
        let row = bias.len() * inner;
        for r in y.chunks_mut(row) {
            for (c, &bv) in r.chunks_mut(inner).zip(bias) {
                c.iter_mut().for_each(|v| *v += bv);
            }
        }
    }
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.0));
    }
}

/// A step without an int8 kernel, in f32.
fn f32_step(s: &Step, x: &[f32], y: &mut [f32], b: usize) {
    match s {
        Step::Relu { .. } => y.iter_mut().zip(x).for_each(|(o, &v)| *o = v.max(0.0)),
        Step::MaxPool { pool, .. } => conv::max_pool2d(pool, b, y, x),
        Step::AvgPool { pool, .. } => conv::avg_pool2d(pool, b, y, x),
        Step::Softmax { n, .. } => softmax(y, x, x.len() / n, *n, 1, false),
        Step::Dense { .. } | Step::Conv { .. } => {
            unreachable!("int8 steps never reach the f32 step runner")
        }
    }
}
