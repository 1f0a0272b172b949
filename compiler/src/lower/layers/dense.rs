//! The layers with a weight and a bias: `dense` and the `conv2d` layer.

use super::{always, wrong_input, Layer, LayerCall};
use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::graph::{DType, Dim, NodeId, Shape};
use crate::ir::Init;
use crate::lower::args::literal;
use crate::lower::{Lowerer, L};
use crate::ops::{self, ArgKind, BinaryOp, Lit, Matmul, Op, Param};
use crate::syntax::ast;

pub(super) static LAYERS: &[Layer] = &[
    Layer {
        name: "dense",
        params: &[
            Param::req("x", ArgKind::Tensor),
            Param::req("units", ArgKind::Int),
            Param::opt("activation", ArgKind::Name),
            Param::opt("init", ArgKind::Init).or(Lit::Name("glorot_uniform")),
            Param::opt("bias", ArgKind::Bool).or(Lit::Bool(true)),
        ],
        doc: "x @ weight + bias, then the activation",
        applies: always,
        expand: dense,
    },
    Layer {
        name: "conv2d",
        params: &[
            Param::req("x", ArgKind::Tensor),
            Param::req("filters", ArgKind::Int),
            Param::req("kernel", ArgKind::Ints),
            Param::opt("stride", ArgKind::Ints).or(Lit::Int(1)),
            Param::opt("padding", ArgKind::Ints).or(Lit::Int(0)),
            Param::opt("dilation", ArgKind::Ints).or(Lit::Int(1)),
            Param::opt("groups", ArgKind::Int).or(Lit::Int(1)),
            Param::opt("activation", ArgKind::Name),
            Param::opt("init", ArgKind::Init).or(Lit::Name("he_uniform")),
            Param::opt("bias", ArgKind::Bool).or(Lit::Bool(true)),
        ],
        doc: "conv2d(x, weight) + bias over NCHW, then the activation",
        applies: conv2d_layer_form,
        expand: conv2d,
    },
];

/// Whether a `conv2d` call is the layer (an integer `filters` second
/// argument, or one named `filters`) rather than the primitive op
/// `conv2d(x, w)` with a weight tensor.
fn conv2d_layer_form(piped: bool, args: &[ast::Arg]) -> bool {
    let second = args
        .iter()
        .filter(|a| a.name.is_none())
        .nth(if piped { 0 } else { 1 });
    second.is_some_and(|a| literal(&a.value).is_some_and(|(_, int)| int))
        || args
            .iter()
            .any(|a| a.name.as_ref().is_some_and(|n| n.name == "filters"))
}

/// `dense(x, units, activation: relu, init: he_normal, bias: true)`:
/// `x @ {name}.weight + {name}.bias`, then the activation. The name is the
/// binding the call stands in; a second layer in the same statement gets
/// `{name}.1`, a third `{name}.2`.
fn dense(me: &mut Lowerer, l: &LayerCall<'_>) -> L<NodeId> {
    let (x, xty, x_span, span) = (l.x, &l.xty, l.x_span, l.span);
    let units = match l.int(me, 1)? {
        u if (1..=1 << 30).contains(&u) => u as usize,
        u => {
            return Err(me.report(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    l.arg_span(1),
                    format!("`units` of `dense` must be a positive integer, found {u}"),
                )
                .with_label("not a valid width"),
            ))
        }
    };
    let fan_in = match xty.shape.dims().last() {
        Some(Dim::Fixed(n)) if xty.dtype == DType::F32 => *n,
        _ => {
            return Err(me.report(wrong_input(
                xty,
                x_span,
                "dense expects an f32 input whose last dimension is a fixed number of features",
            )))
        }
    };
    let init = l.init(me, 3)?;
    let name = me.layer_name();
    let w = me.add_param(
        format!("{name}.weight"),
        Shape::fixed(&[fan_in, units]),
        init,
        span,
    )?;
    let mut y = me.add_op(Op::Matmul(Matmul), &[(x, x_span), (w, span)], span)?;
    if l.bool(me, 4)? {
        let b = me.add_param(
            format!("{name}.bias"),
            Shape::fixed(&[units]),
            Init::Zeros,
            span,
        )?;
        y = me.add_op(Op::Binary(BinaryOp::Add), &[(y, span), (b, span)], span)?;
    }
    me.activate(l, 2, y)
}

/// `conv2d(x, filters, kernel: k, stride:, padding:, dilation:, groups:,
/// activation:, init: he_uniform, bias: true)`: `conv2d(x,
/// {name}.weight)` with a weight `[filters, C/groups, KH, KW]`, plus
/// `{name}.bias` `[filters]` broadcast over the positions, then the
/// activation.
fn conv2d(me: &mut Lowerer, l: &LayerCall<'_>) -> L<NodeId> {
    let (a, x, xty, x_span, span) = (&l.a, l.x, &l.xty, l.x_span, l.span);
    let filters = match l.int(me, 1)? {
        f if (1..=1 << 30).contains(&f) => f as usize,
        f => {
            return Err(me.report(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    l.arg_span(1),
                    format!("`filters` of `conv2d` must be a positive integer, found {f}"),
                )
                .with_label("not a valid channel count"),
            ))
        }
    };
    let params = ops::conv::conv_params(a, 3).map_err(|e| me.op_error(e, &[], span))?;
    let kernel = match a.ints(2) {
        Some(&[k]) if (1..=1 << 20).contains(&k) => [k as usize; 2],
        Some(&[h, w]) if (1..=1 << 20).contains(&h) && (1..=1 << 20).contains(&w) => {
            [h as usize, w as usize]
        }
        Some(k) => {
            return Err(me.report(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    l.arg_span(2),
                    format!(
                        "`kernel` of `conv2d` must be a positive integer or a list [height, width] of them, found {k:?}"
                    ),
                )
                .with_label("not a valid kernel size"),
            ))
        }
        None => return Err(me.missing(l, 2)),
    };
    let channels = match xty.shape.dims() {
        [_, Dim::Fixed(c), Dim::Fixed(_), Dim::Fixed(_)] if xty.dtype == DType::F32 => *c,
        _ => {
            return Err(me.report(wrong_input(
                xty,
                x_span,
                "conv2d expects an input f32[batch, channels, height, width] (NCHW, fixed channels and size)",
            )))
        }
    };
    if channels % params.groups != 0 {
        return Err(me.report(
            Diagnostic::new(
                ErrorKind::ShapeMismatch,
                span,
                format!(
                    "conv2d: the input's {channels} channels are not divisible by groups: {}",
                    params.groups
                ),
            )
            .with_note(x_span, format!("this is {xty}")),
        ));
    }
    let init = l.init(me, 8)?;
    let name = me.layer_name();
    let shape = Shape::fixed(&[filters, channels / params.groups, kernel[0], kernel[1]]);
    let w = me.add_param(format!("{name}.weight"), shape, init, span)?;
    let mut y = me.add_op(
        Op::Conv(ops::ConvOp::Conv2d(params)),
        &[(x, x_span), (w, span)],
        span,
    )?;
    if l.bool(me, 9)? {
        let b = me.add_param(
            format!("{name}.bias"),
            Shape::fixed(&[filters]),
            Init::Zeros,
            span,
        )?;
        let to = Shape::fixed(&[filters, 1, 1]);
        let b = me.add_op(Op::Shape(ops::ShapeOp::Reshape { to }), &[(b, span)], span)?;
        y = me.add_op(Op::Binary(BinaryOp::Add), &[(y, span), (b, span)], span)?;
    }
    me.activate(l, 7, y)
}
