//! The sequence ops transformers are built from: layer normalisation over
//! the last axis (one fused per-row kernel forward and one backward),
//! embedding lookups of token ids and their scatter-add gradient,
//! concatenation and slicing along an axis (each the other's gradient,
//! with zero padding), and the causal mask of attention scores.
//!
//! Multi-head self-attention is not an op: the `self_attention` layer
//! (`lower/layers.rs`) expands to matmul, reshape, transpose, softmax and
//! [`SeqOp::CausalMask`]. The f32 kernels are in `nnc_runtime::sequence`.

use super::grad::GradCtx;
use super::kernel::Kernel;
use super::loss::class_index;
use super::signature::{normalize_axis, ArgKind, Args, Built, Function, Param};
use super::{expect_f32, EvalCtx, Op, OpError, Tensor};
use crate::diagnostic::ErrorKind;
use crate::graph::{DType, Dim, NodeId, Shape, TensorType};
use ndarray::{Axis, IxDyn, Slice};
use proc_macro2::{Literal, TokenStream};
use quote::quote;
use std::fmt;
use std::hash::{Hash, Hasher};

/// What the causal mask writes above the diagonal: large and negative, so
/// softmax gives those entries weight 0 (`exp(-1e9 − max)` is 0 in f32),
/// yet finite, so a row never becomes `NaN` and finite differences work.
pub const MASKED: f64 = -1e9;

/// The most tensors one `concat` takes.
pub const MAX_CONCAT: usize = 8;

/// A sequence op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SeqOp {
    /// `x̂ = (x − mean) / √(var + eps)` over the last axis (biased
    /// variance): layer normalisation without its affine part, which the
    /// `layer_norm` layer adds as broadcast `gamma` and `beta` parameters.
    LayerNorm {
        /// Added to the variance.
        eps: f64,
    },
    /// Layer norm's gradient with respect to its input: `(x, g) → dx`, one
    /// pass per row.
    LayerNormGrad {
        /// Added to the variance.
        eps: f64,
    },
    /// `(table: f32[V, D], ids: class[...] of V) → f32[..., D]`: row
    /// `ids[i]` of the table for each id.
    Embedding,
    /// The embedding's gradient with respect to its table: `(ids, g:
    /// f32[..., D]) → f32[V, D]`, each row of `g` added into the table row
    /// of its id.
    EmbeddingGrad {
        /// The table's row count V.
        vocab: usize,
    },
    /// Concatenation of `n` tensors along `axis`.
    Concat {
        /// The (non-negative) axis.
        axis: usize,
        /// How many operands.
        n: usize,
    },
    /// `x[.., start..end, ..]` along `axis`.
    Slice {
        /// The (non-negative) axis.
        axis: usize,
        /// First index taken.
        start: usize,
        /// One past the last index taken.
        end: usize,
    },
    /// The slice's gradient: zeros of extent `total` along `axis` with the
    /// operand placed from `start`.
    Pad {
        /// The (non-negative) axis.
        axis: usize,
        /// Where the operand starts.
        start: usize,
        /// The result's extent along `axis`.
        total: usize,
    },
    /// Copies `x: f32[..., m, n]` with every entry above the diagonal of the
    /// last two axes (column > row) set to [`MASKED`]: position `i` attends
    /// to positions `0..=i` only.
    CausalMask,
    /// The causal mask's gradient: the same copy with 0 above the diagonal.
    CausalMaskGrad,
}

impl Eq for SeqOp {}

impl Hash for SeqOp {
    fn hash<H: Hasher>(&self, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        match *self {
            SeqOp::LayerNorm { eps } | SeqOp::LayerNormGrad { eps } => eps.to_bits().hash(h),
            SeqOp::EmbeddingGrad { vocab } => vocab.hash(h),
            SeqOp::Concat { axis, n } => (axis, n).hash(h),
            SeqOp::Slice { axis, start, end } => (axis, start, end).hash(h),
            SeqOp::Pad { axis, start, total } => (axis, start, total).hash(h),
            SeqOp::Embedding | SeqOp::CausalMask | SeqOp::CausalMaskGrad => {}
        }
    }
}

/// A fixed extent, or why a dimension is not one.
fn fixed_dim(ty: &TensorType, axis: usize, what: &str) -> Result<usize, OpError> {
    match ty.shape.dims().get(axis) {
        Some(Dim::Fixed(n)) => Ok(*n),
        Some(Dim::Batch) => Err(OpError::shape(format!(
            "{what} of {ty}: axis {axis} is batch, whose size is unknown at compile time"
        ))),
        None => Err(OpError::argument(format!(
            "axis {axis} is out of range for {ty}"
        ))),
    }
}

fn class_count(ty: &TensorType, operand: usize, what: &str) -> Result<usize, OpError> {
    match ty.dtype {
        DType::Class { classes } => Ok(classes),
        DType::F32 => Err(OpError {
            kind: ErrorKind::TypeMismatch,
            message: format!("{what} expects token ids (class-typed), found {ty}"),
            operand: Some(operand),
            help: Some(
                "declare integer inputs as `input tokens: class[batch, 16] of 10;`".to_string(),
            ),
        }),
    }
}

impl SeqOp {
    /// Number of operands.
    pub fn arity(&self) -> usize {
        match self {
            SeqOp::LayerNormGrad { .. } | SeqOp::Embedding | SeqOp::EmbeddingGrad { .. } => 2,
            SeqOp::Concat { n, .. } => *n,
            _ => 1,
        }
    }

    /// The shape rule.
    pub fn infer(&self, t: &[&TensorType]) -> Result<TensorType, OpError> {
        match *self {
            SeqOp::LayerNorm { eps } | SeqOp::LayerNormGrad { eps } => {
                expect_f32(t[0], 0, "layer_norm")?;
                if !(eps > 0.0 && eps.is_finite()) {
                    return Err(OpError::argument(format!(
                        "layer_norm: `eps` must be positive, found {eps}"
                    )));
                }
                let last = t[0].shape.rank().checked_sub(1).ok_or_else(|| {
                    OpError::shape(format!("layer_norm of a scalar {}", t[0])).at(0)
                })?;
                fixed_dim(t[0], last, "layer_norm").map_err(|e| e.at(0))?;
                if t.len() == 2 {
                    expect_f32(t[1], 1, "layer_norm_grad")?;
                    if t[0].shape != t[1].shape {
                        return Err(OpError::shape(format!(
                            "layer_norm_grad of {} with a gradient {}: shapes differ",
                            t[0], t[1]
                        )));
                    }
                }
                Ok(t[0].clone())
            }
            SeqOp::Embedding => {
                let table = t[0];
                expect_f32(table, 0, "embedding")?;
                let (v, d) = match table.shape.dims() {
                    [Dim::Fixed(v), Dim::Fixed(d)] => (*v, *d),
                    _ => {
                        return Err(OpError::shape(format!(
                            "embedding expects a table f32[vocab, dim], found {table}"
                        ))
                        .at(0))
                    }
                };
                let classes = class_count(t[1], 1, "embedding")?;
                if classes != v {
                    return Err(OpError::shape(format!(
                        "embedding: the table has {v} rows, the ids {} are in 0..{classes}",
                        t[1]
                    )));
                }
                let mut dims = t[1].shape.dims().to_vec();
                dims.push(Dim::Fixed(d));
                Ok(TensorType::f32(Shape(dims)))
            }
            SeqOp::EmbeddingGrad { vocab } => {
                let classes = class_count(t[0], 0, "embedding_grad")?;
                expect_f32(t[1], 1, "embedding_grad")?;
                let gd = t[1].shape.dims();
                let ok = classes == vocab
                    && gd.len() == t[0].shape.rank() + 1
                    && gd[..gd.len() - 1] == *t[0].shape.dims()
                    && matches!(gd.last(), Some(Dim::Fixed(_)));
                if !ok {
                    return Err(OpError::shape(format!(
                        "embedding_grad of ids {} and a gradient {}: they do not agree",
                        t[0], t[1]
                    )));
                }
                Ok(TensorType::f32(Shape(vec![
                    Dim::Fixed(vocab),
                    *gd.last().unwrap_or(&Dim::Fixed(1)),
                ])))
            }
            SeqOp::Concat { axis, n } => {
                if t.len() != n || n == 0 {
                    return Err(OpError::internal("concat arity"));
                }
                let first = t[0];
                let mut total = 0usize;
                for (i, ty) in t.iter().enumerate() {
                    expect_f32(ty, i, "concat")?;
                    let same_rank = ty.shape.rank() == first.shape.rank();
                    let others_agree = same_rank
                        && ty
                            .shape
                            .dims()
                            .iter()
                            .zip(first.shape.dims())
                            .enumerate()
                            .all(|(a, (x, y))| a == axis || x == y);
                    if !others_agree {
                        return Err(OpError::shape(format!(
                            "concat along axis {axis}: {ty} does not match {first} in the other dimensions"
                        ))
                        .at(i));
                    }
                    total = total
                        .checked_add(fixed_dim(ty, axis, "concat").map_err(|e| e.at(i))?)
                        .ok_or_else(|| OpError::shape("concat: the result is too large"))?;
                }
                let mut dims = first.shape.dims().to_vec();
                dims[axis] = Dim::Fixed(total);
                Ok(TensorType::f32(Shape(dims)))
            }
            SeqOp::Slice { axis, start, end } => {
                expect_f32(t[0], 0, "slice")?;
                let n = fixed_dim(t[0], axis, "slice").map_err(|e| e.at(0))?;
                if start >= end || end > n {
                    return Err(OpError::argument(format!(
                        "slice {start}..{end} of axis {axis} of {}: the range must be non-empty and within 0..{n}",
                        t[0]
                    )));
                }
                let mut dims = t[0].shape.dims().to_vec();
                dims[axis] = Dim::Fixed(end - start);
                Ok(TensorType::f32(Shape(dims)))
            }
            SeqOp::Pad { axis, start, total } => {
                expect_f32(t[0], 0, "pad")?;
                let n = fixed_dim(t[0], axis, "pad")?;
                if start.checked_add(n).is_none_or(|e| e > total) {
                    return Err(OpError::shape(format!(
                        "pad of {} to {total} from {start} along axis {axis}: does not fit",
                        t[0]
                    )));
                }
                let mut dims = t[0].shape.dims().to_vec();
                dims[axis] = Dim::Fixed(total);
                Ok(TensorType::f32(Shape(dims)))
            }
            SeqOp::CausalMask | SeqOp::CausalMaskGrad => {
                expect_f32(t[0], 0, "causal_mask")?;
                let r = t[0].shape.rank();
                if r < 2 {
                    return Err(OpError::shape(format!(
                        "causal_mask expects scores f32[..., queries, keys] of rank 2 or more, found {}",
                        t[0]
                    ))
                    .at(0));
                }
                fixed_dim(t[0], r - 2, "causal_mask").map_err(|e| e.at(0))?;
                fixed_dim(t[0], r - 1, "causal_mask").map_err(|e| e.at(0))?;
                Ok(t[0].clone())
            }
        }
    }

    /// f64 evaluation.
    pub fn eval(&self, x: &[&Tensor], _cx: &EvalCtx) -> Result<Tensor, OpError> {
        let internal = |e: ndarray::ShapeError| OpError::internal(e.to_string());
        match *self {
            SeqOp::LayerNorm { eps } => {
                let mut out = x[0].clone();
                let last = Axis(out.ndim().saturating_sub(1));
                for mut lane in out.lanes_mut(last) {
                    let (mean, inv) = moments(lane.iter(), eps);
                    lane.mapv_inplace(|v| (v - mean) * inv);
                }
                Ok(out)
            }
            SeqOp::LayerNormGrad { eps } => {
                let last = Axis(x[0].ndim().saturating_sub(1));
                let mut out = x[1].clone();
                for (mut o, xr) in out.lanes_mut(last).into_iter().zip(x[0].lanes(last)) {
                    let (mean, inv) = moments(xr.iter(), eps);
                    let n = xr.len() as f64;
                    let xh: Vec<f64> = xr.iter().map(|&v| (v - mean) * inv).collect();
                    let mg = o.sum() / n;
                    let mgx = o.iter().zip(&xh).map(|(g, h)| g * h).sum::<f64>() / n;
                    for (g, h) in o.iter_mut().zip(&xh) {
                        *g = (*g - mg - h * mgx) * inv;
                    }
                }
                Ok(out)
            }
            SeqOp::Embedding => {
                let (table, ids) = (x[0], x[1]);
                let (v, d) = match table.shape() {
                    [v, d] => (*v, *d),
                    _ => return Err(OpError::shape("embedding table is not a matrix")),
                };
                let mut shape = ids.shape().to_vec();
                shape.push(d);
                let mut out = Vec::with_capacity(ids.len() * d);
                for &id in ids.iter() {
                    let r = class_index(id, v)?;
                    out.extend(table.index_axis(Axis(0), r).iter().copied());
                }
                Tensor::from_shape_vec(IxDyn(&shape), out).map_err(internal)
            }
            SeqOp::EmbeddingGrad { vocab } => {
                let (ids, g) = (x[0], x[1]);
                let d = *g.shape().last().unwrap_or(&1);
                let mut out = Tensor::zeros(IxDyn(&[vocab, d]));
                let rows = g.to_shape((ids.len(), d)).map_err(internal)?;
                for (row, &id) in rows.outer_iter().zip(ids.iter()) {
                    let r = class_index(id, vocab)?;
                    let mut o = out.index_axis_mut(Axis(0), r);
                    o += &row;
                }
                Ok(out)
            }
            SeqOp::Concat { axis, .. } => {
                let views: Vec<_> = x.iter().map(|t| t.view()).collect();
                ndarray::concatenate(Axis(axis), &views).map_err(internal)
            }
            SeqOp::Slice { axis, start, end } => Ok(x[0]
                .slice_axis(Axis(axis), Slice::from(start..end))
                .to_owned()),
            SeqOp::Pad { axis, start, total } => {
                let mut shape = x[0].shape().to_vec();
                let n = shape[axis];
                shape[axis] = total;
                let mut out = Tensor::zeros(IxDyn(&shape));
                out.slice_axis_mut(Axis(axis), Slice::from(start..start + n))
                    .assign(x[0]);
                Ok(out)
            }
            SeqOp::CausalMask | SeqOp::CausalMaskGrad => {
                let fill = if *self == SeqOp::CausalMask {
                    MASKED
                } else {
                    0.0
                };
                let mut out = x[0].clone();
                let r = out.ndim();
                for (idx, v) in out.indexed_iter_mut() {
                    if idx[r - 1] > idx[r - 2] {
                        *v = fill;
                    }
                }
                Ok(out)
            }
        }
    }

    /// Floating-point operations for one sample.
    pub fn flops(&self, t: &[&TensorType]) -> u64 {
        let n = t[0].shape.numel(1) as u64;
        match self {
            SeqOp::LayerNorm { .. } => n.saturating_mul(6),
            SeqOp::LayerNormGrad { .. } => n.saturating_mul(10),
            SeqOp::EmbeddingGrad { .. } => t[1].shape.numel(1) as u64,
            _ => 0,
        }
    }

    /// The gradient rules: layer norm's is its own fused op; the embedding's
    /// a scatter-add into the table (ids get none); concat's a slice of the
    /// gradient per operand and the slice's a zero-padded placement (and
    /// back); the mask's the gradient masked with zeros.
    pub fn grad(
        &self,
        cx: &mut GradCtx<'_>,
        x: &[NodeId],
        g: NodeId,
    ) -> Result<Vec<Option<NodeId>>, OpError> {
        let op = |s: SeqOp| Op::Seq(s);
        match *self {
            SeqOp::LayerNorm { eps } => Ok(vec![Some(
                cx.add(op(SeqOp::LayerNormGrad { eps }), &[x[0], g])?,
            )]),
            SeqOp::LayerNormGrad { .. } => Err(OpError::argument(
                "the second derivative of layer_norm is not supported",
            )),
            SeqOp::Embedding => {
                let vocab = match cx.ty(x[0]).shape.dims().first() {
                    Some(Dim::Fixed(v)) => *v,
                    _ => return Err(OpError::internal("embedding table rows")),
                };
                let dt = cx.add(op(SeqOp::EmbeddingGrad { vocab }), &[x[1], g])?;
                Ok(vec![Some(dt), None])
            }
            SeqOp::EmbeddingGrad { .. } => {
                let dg = cx.add(op(SeqOp::Embedding), &[g, x[0]])?;
                Ok(vec![None, Some(dg)])
            }
            SeqOp::Concat { axis, .. } => {
                let mut start = 0;
                let mut out = Vec::with_capacity(x.len());
                for &xi in x {
                    let len = fixed_dim(cx.ty(xi), axis, "concat")?;
                    let s = SeqOp::Slice {
                        axis,
                        start,
                        end: start + len,
                    };
                    out.push(Some(cx.add(op(s), &[g])?));
                    start += len;
                }
                Ok(out)
            }
            SeqOp::Slice { axis, start, .. } => {
                let total = fixed_dim(cx.ty(x[0]), axis, "slice")?;
                let p = SeqOp::Pad { axis, start, total };
                Ok(vec![Some(cx.add(op(p), &[g])?)])
            }
            SeqOp::Pad { axis, start, .. } => {
                let len = fixed_dim(cx.ty(x[0]), axis, "pad")?;
                let s = SeqOp::Slice {
                    axis,
                    start,
                    end: start + len,
                };
                Ok(vec![Some(cx.add(op(s), &[g])?)])
            }
            SeqOp::CausalMask | SeqOp::CausalMaskGrad => {
                Ok(vec![Some(cx.add(op(SeqOp::CausalMaskGrad), &[g])?)])
            }
        }
    }

    /// The codegen face: calls into `nnc_runtime::sequence`. Axis extents
    /// fold with the axes after them (`inner`) so each kernel sees rows of
    /// a 2-D view.
    pub fn emit(&self, k: &Kernel<'_>) -> TokenStream {
        let rt = k.rt;
        let d0 = k.inputs[0].shape.dims();
        let last = |d: &[Dim]| Kernel::dim(*d.last().unwrap_or(&Dim::Fixed(1)));
        let inner = |d: &[Dim], axis: usize| Kernel::product(&d[axis..]);
        // `n` times the extent of the axes after `axis`, folded into one
        // constant where it can be (no `0 * …` or `… * 1` for clippy).
        let scaled = |n: usize, d: &[Dim], axis: usize| {
            if n == 0 {
                let l = Literal::usize_suffixed(0);
                return quote!(#l);
            }
            let mut dims = vec![Dim::Fixed(n)];
            dims.extend_from_slice(&d[axis + 1..]);
            Kernel::product(&dims)
        };
        match *self {
            SeqOp::LayerNorm { eps } => {
                let (d, e) = (last(d0), Kernel::f32(eps));
                quote!(#rt::sequence::layer_norm(out, x0, #d, #e);)
            }
            SeqOp::LayerNormGrad { eps } => {
                let (d, e) = (last(d0), Kernel::f32(eps));
                quote!(#rt::sequence::layer_norm_grad(out, x0, x1, #d, #e);)
            }
            SeqOp::Embedding => {
                let d = last(d0);
                quote!(#rt::sequence::embedding(out, x1, x0, #d);)
            }
            SeqOp::EmbeddingGrad { .. } => {
                let d = last(k.inputs[1].shape.dims());
                quote!(#rt::sequence::embedding_grad(out, x0, x1, #d);)
            }
            SeqOp::Concat { axis, .. } => {
                let od = k.out.shape.dims();
                let total = inner(od, axis);
                let mut at = 0usize;
                let calls = k.inputs.iter().enumerate().map(|(i, t)| {
                    let x = quote::format_ident!("x{}", i);
                    let n = match t.shape.dims()[axis] {
                        Dim::Fixed(n) => n,
                        Dim::Batch => 0,
                    };
                    let (a, len) = (scaled(at, od, axis), scaled(n, od, axis));
                    at += n;
                    quote!(#rt::sequence::place(out, #x, #total, #a, #len);)
                });
                quote!(#(#calls)*)
            }
            SeqOp::Slice { axis, start, end } => {
                let total = inner(d0, axis);
                let (a, len) = (scaled(start, d0, axis), scaled(end - start, d0, axis));
                quote!(#rt::sequence::slice(out, x0, #total, #a, #len);)
            }
            SeqOp::Pad { axis, start, .. } => {
                let od = k.out.shape.dims();
                let total = inner(od, axis);
                let n = match d0[axis] {
                    Dim::Fixed(n) => n,
                    Dim::Batch => 0,
                };
                let (a, len) = (scaled(start, od, axis), scaled(n, od, axis));
                quote!(#rt::sequence::pad(out, x0, #total, #a, #len);)
            }
            SeqOp::CausalMask | SeqOp::CausalMaskGrad => {
                let r = d0.len();
                let (rows, cols) = (Kernel::dim(d0[r - 2]), Kernel::dim(d0[r - 1]));
                // A negative literal token does not parse as an argument:
                // negate a positive one.
                let fill = if *self == SeqOp::CausalMask {
                    let m = Kernel::f32(-MASKED);
                    quote!(-#m)
                } else {
                    Kernel::f32(0.0)
                };
                quote!(#rt::sequence::causal_mask(out, x0, #rows, #cols, #fill);)
            }
        }
    }
}

/// The mean and `1/√(var + eps)` of one row (biased variance).
fn moments<'a>(row: impl Iterator<Item = &'a f64> + Clone, eps: f64) -> (f64, f64) {
    let n = row.clone().count().max(1) as f64;
    let mean = row.clone().sum::<f64>() / n;
    let var = row.map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl fmt::Display for SeqOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeqOp::LayerNorm { eps } => write!(f, "layer_norm(eps: {eps})"),
            SeqOp::LayerNormGrad { eps } => write!(f, "layer_norm_grad(eps: {eps})"),
            SeqOp::Embedding => f.write_str("embedding"),
            SeqOp::EmbeddingGrad { vocab } => write!(f, "embedding_grad(vocab: {vocab})"),
            SeqOp::Concat { axis, .. } => write!(f, "concat(axis: {axis})"),
            SeqOp::Slice { axis, start, end } => {
                write!(f, "slice(axis: {axis}, {start}..{end})")
            }
            SeqOp::Pad { axis, start, total } => {
                write!(f, "pad(axis: {axis}, at: {start}, to: {total})")
            }
            SeqOp::CausalMask => f.write_str("causal_mask"),
            SeqOp::CausalMaskGrad => f.write_str("causal_mask_grad"),
        }
    }
}

/// `concat`'s parameters: up to [`MAX_CONCAT`] tensors, then `axis`.
const CONCAT_PARAMS: &[Param] = &[
    Param::req("a", ArgKind::Tensor),
    Param::req("b", ArgKind::Tensor),
    Param::opt("c", ArgKind::Tensor),
    Param::opt("d", ArgKind::Tensor),
    Param::opt("e", ArgKind::Tensor),
    Param::opt("f", ArgKind::Tensor),
    Param::opt("g", ArgKind::Tensor),
    Param::opt("h", ArgKind::Tensor),
    Param::opt("axis", ArgKind::Int),
];

fn build_concat(a: &Args) -> Result<Built, OpError> {
    let mut operands = Vec::new();
    let mut rank = 0;
    for i in 0..MAX_CONCAT {
        if let Some(Some(super::ArgValue::Tensor(id, ty))) = a.values.get(i) {
            operands.push(*id);
            rank = ty.shape.rank();
        }
    }
    let axis = normalize_axis(a.int(MAX_CONCAT).unwrap_or(-1), rank)?;
    let n = operands.len();
    Ok((Op::Seq(SeqOp::Concat { axis, n }), operands))
}

fn build_slice(a: &Args) -> Result<Built, OpError> {
    let (x, ty) = a.tensor(0)?;
    let axis = normalize_axis(a.int(1).unwrap_or(0), ty.shape.rank())?;
    let n = match ty.shape.dims()[axis] {
        Dim::Fixed(n) => n as i64,
        Dim::Batch => {
            return Err(OpError::argument(format!(
                "slice of {ty}: axis {axis} is batch, whose size is unknown at compile time"
            )))
        }
    };
    let start = a.int(2).unwrap_or(0);
    let end = a.int(3).unwrap_or(n);
    if start < 0 || end > n || start >= end {
        return Err(OpError::argument(format!(
            "slice {start}..{end} of axis {axis} of {ty}: the range must be non-empty and within 0..{n}"
        )));
    }
    let (start, end) = (start as usize, end as usize);
    Ok((Op::Seq(SeqOp::Slice { axis, start, end }), vec![x]))
}

/// The sequence functions of the language (`layer_norm`, `embedding` and
/// `self_attention` are layers: see `lower/layers.rs`).
pub static FUNCTIONS: &[Function] = &[
    Function {
        name: "gather",
        params: &[
            Param::req("table", ArgKind::Tensor),
            Param::req("ids", ArgKind::Tensor),
        ],
        doc: "rows of `table: f32[V, D]` for `ids: class[...] of V` → f32[..., D] (the embedding lookup)",
        build: |a| {
            Ok((
                Op::Seq(SeqOp::Embedding),
                vec![a.tensor(0)?.0, a.tensor(1)?.0],
            ))
        },
    },
    Function {
        name: "concat",
        params: CONCAT_PARAMS,
        doc: "concatenation of 2 to 8 tensors along `axis` (default -1)",
        build: build_concat,
    },
    Function {
        name: "slice",
        params: &[
            Param::req("x", ArgKind::Tensor),
            Param::req("axis", ArgKind::Int),
            Param::req("start", ArgKind::Int),
            Param::opt("end", ArgKind::Int),
        ],
        doc: "`x[.., start..end, ..]` along `axis` (`end` defaults to the axis' extent)",
        build: build_slice,
    },
    Function {
        name: "causal_mask",
        params: &[Param::req("scores", ArgKind::Tensor)],
        doc: "scores f32[..., m, n] with entries above the diagonal (column > row) set to -1e9",
        build: |a| Ok((Op::Seq(SeqOp::CausalMask), vec![a.tensor(0)?.0])),
    },
];
