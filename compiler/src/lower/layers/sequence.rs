//! The sequence layers: `embedding` and `self_attention`.

use super::{always, wrong_input, Layer, LayerCall};
use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::graph::{DType, Dim, NodeId, Shape};
use crate::ir::Init;
use crate::lower::{Lowerer, Reported, L};
use crate::ops::{self, ArgKind, BinaryOp, Lit, Matmul, Op, Param};

pub(super) static LAYERS: &[Layer] = &[
    Layer {
        name: "embedding",
        params: &[
            Param::req("tokens", ArgKind::Tensor),
            Param::req("dim", ArgKind::Int),
            Param::opt("init", ArgKind::Init).or(Lit::Name("normal")),
        ],
        doc: "looks up a row of a learned table per token id",
        applies: always,
        expand: embedding,
    },
    Layer {
        name: "self_attention",
        params: &[
            Param::req("x", ArgKind::Tensor),
            Param::req("heads", ArgKind::Int),
            Param::opt("causal", ArgKind::Bool).or(Lit::Bool(false)),
        ],
        doc: "multi-head scaled dot-product self-attention with projections",
        applies: always,
        expand: self_attention,
    },
];

/// `embedding(tokens, dim, init: normal)`: a table `{name}.weight`
/// `f32[V, dim]` for ids `class[...] of V`, looked up row by row
/// (PyTorch's default initialisation, a standard normal).
fn embedding(me: &mut Lowerer, l: &LayerCall<'_>) -> L<NodeId> {
    let span = l.span;
    let (a, ids, ty) = (&l.a, l.x, &l.xty);
    let arg_span = |i: usize| l.arg_span(i);
    let DType::Class { classes } = ty.dtype else {
        return Err(me.report(
            Diagnostic::new(
                ErrorKind::TypeMismatch,
                arg_span(0),
                format!("embedding expects token ids (class-typed), found {ty}"),
            )
            .with_label(format!("this is {ty}"))
            .with_help("declare integer inputs as `input tokens: class[batch, 16] of 10;`"),
        ));
    };
    let dim = match a.int(1) {
        Some(d) if (1..=1 << 30).contains(&d) => d as usize,
        Some(d) => {
            return Err(me.report(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    arg_span(1),
                    format!("`dim` of `embedding` must be a positive integer, found {d}"),
                )
                .with_label("not a valid width"),
            ))
        }
        None => return Err(Reported),
    };
    let init = l.init(me, 2)?;
    let name = me.layer_name();
    let table = me.add_param(
        format!("{name}.weight"),
        Shape::fixed(&[classes, dim]),
        init,
        span,
    )?;
    me.add_op(
        Op::Seq(ops::SeqOp::Embedding),
        &[(table, span), (ids, arg_span(0))],
        span,
    )
}

/// `self_attention(x, heads: 4, causal: false)` over `x: f32[batch, T,
/// D]`: query, key and value projections (`{name}.query.weight` `[D,
/// D]`, `.bias` `[D]`, and so on), split into heads `[batch, heads, T,
/// D/heads]`, scores `q @ kᵀ / √(D/heads)`, the causal mask when asked,
/// softmax over the keys, the weighted sum of values, heads merged back
/// to `[batch, T, D]`, and the output projection `{name}.output.*`.
fn self_attention(me: &mut Lowerer, l: &LayerCall<'_>) -> L<NodeId> {
    let span = l.span;
    let (a, x, xty, x_span) = (&l.a, l.x, &l.xty, l.x_span);
    let heads_span = l.arg_span(1);
    let (n, t, d) = match xty.shape.dims() {
        [n, Dim::Fixed(t), Dim::Fixed(d)] if xty.dtype == DType::F32 => (*n, *t, *d),
        _ => return Err(me.report(wrong_input(
            xty,
            x_span,
            "self_attention expects a sequence f32[batch, length, width] (fixed length and width)",
        ))),
    };
    let heads = match a.int(1) {
        Some(h) if h >= 1 && (h as u64) <= d as u64 && d % h as usize == 0 => h as usize,
        Some(h) => {
            let mut diag = Diagnostic::new(
                ErrorKind::BadArgument,
                heads_span,
                format!("self_attention: {h} heads do not divide the width {d} of {xty}"),
            )
            .with_label(format!("does not divide {d}"))
            .with_note(x_span, format!("this is {xty}"));
            let divisors: Vec<String> = (1..=d.min(64))
                .filter(|k| d % k == 0)
                .map(|k| k.to_string())
                .collect();
            diag = diag.with_help(format!(
                "each head gets width / heads features; choose heads among {}",
                divisors.join(", ")
            ));
            return Err(me.report(diag));
        }
        None => return Err(Reported),
    };
    let causal = l.bool(me, 2)?;
    let dh = d / heads;
    let name = me.layer_name();
    let at = |v: NodeId| (v, span);
    // One projection `x @ W + b` per role, split into heads.
    let proj = |me: &mut Lowerer, role: &str, x: NodeId| -> L<NodeId> {
        let w = me.add_param(
            format!("{name}.{role}.weight"),
            Shape::fixed(&[d, d]),
            Init::GlorotUniform,
            span,
        )?;
        let b = me.add_param(
            format!("{name}.{role}.bias"),
            Shape::fixed(&[d]),
            Init::Zeros,
            span,
        )?;
        let y = me.add_op(Op::Matmul(Matmul), &[at(x), at(w)], span)?;
        me.add_op(Op::Binary(BinaryOp::Add), &[at(y), at(b)], span)
    };
    let split = |me: &mut Lowerer, v: NodeId| -> L<NodeId> {
        let to = Shape(vec![n, Dim::Fixed(t), Dim::Fixed(heads), Dim::Fixed(dh)]);
        let r = me.add_op(Op::Shape(ops::ShapeOp::Reshape { to }), &[at(v)], span)?;
        let perm = vec![0, 2, 1, 3];
        me.add_op(Op::Shape(ops::ShapeOp::Transpose { perm }), &[at(r)], span)
    };
    let q = proj(me, "query", x)?;
    let q = split(me, q)?;
    let k = proj(me, "key", x)?;
    let k = split(me, k)?;
    let v = proj(me, "value", x)?;
    let v = split(me, v)?;
    let kt = me.add_op(
        Op::Shape(ops::ShapeOp::Transpose {
            perm: vec![0, 1, 3, 2],
        }),
        &[at(k)],
        span,
    )?;
    let s = me.add_op(Op::Matmul(Matmul), &[at(q), at(kt)], span)?;
    let scale = me.leaf(ops::LeafOp::scalar(1.0 / (dh as f64).sqrt()), span)?;
    let mut s = me.add_op(Op::Binary(BinaryOp::Mul), &[at(s), at(scale)], span)?;
    if causal {
        s = me.add_op(Op::Seq(ops::SeqOp::CausalMask), &[at(s)], span)?;
    }
    let p = me.add_op(
        Op::Softmax(ops::SoftmaxOp {
            kind: ops::SoftmaxKind::Softmax,
            axis: 3,
        }),
        &[at(s)],
        span,
    )?;
    let c = me.add_op(Op::Matmul(Matmul), &[at(p), at(v)], span)?;
    let c = me.add_op(
        Op::Shape(ops::ShapeOp::Transpose {
            perm: vec![0, 2, 1, 3],
        }),
        &[at(c)],
        span,
    )?;
    let to = Shape(vec![n, Dim::Fixed(t), Dim::Fixed(d)]);
    let c = me.add_op(Op::Shape(ops::ShapeOp::Reshape { to }), &[at(c)], span)?;
    proj(me, "output", c)
}
