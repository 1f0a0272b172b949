//! The normalisation layers: `dropout` and `batch_norm` (modal: their
//! training and inference forms differ) and `layer_norm`.

use super::{always, wrong_input, Layer, LayerCall};
use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::graph::{DType, Dim, NodeId, Shape};
use crate::ir::{Init, StateDecl};
use crate::lower::{Lowerer, Reported, L};
use crate::ops::{self, ArgKind, BinaryOp, Lit, Op, Param};

pub(super) static LAYERS: &[Layer] = &[
    Layer {
        name: "dropout",
        params: &[
            Param::req("x", ArgKind::Tensor),
            Param::req("rate", ArgKind::Float),
        ],
        doc: "zeroes each element with probability rate in training; the identity in inference",
        applies: always,
        expand: dropout,
    },
    Layer {
        name: "batch_norm",
        params: &[
            Param::req("x", ArgKind::Tensor),
            Param::opt("momentum", ArgKind::Float).or(Lit::Float(0.1)),
            Param::opt("eps", ArgKind::Float).or(Lit::Float(1e-5)),
        ],
        doc: "normalises each channel by batch (training) or running (inference) statistics",
        applies: always,
        expand: batch_norm,
    },
    Layer {
        name: "layer_norm",
        params: &[
            Param::req("x", ArgKind::Tensor),
            Param::opt("eps", ArgKind::Float).or(Lit::Float(1e-5)),
            Param::opt("affine", ArgKind::Bool).or(Lit::Bool(true)),
        ],
        doc: "normalises the last axis, then · gamma + beta",
        applies: always,
        expand: layer_norm,
    },
];

/// `dropout(x, rate: p)`: in training, each element is kept with
/// probability `1 - p` and scaled by `1 / (1 - p)` (inverted dropout);
/// in inference, the identity. The mask's salt is a hash of the layer
/// name, so two dropout layers draw different masks.
fn dropout(me: &mut Lowerer, l: &LayerCall<'_>) -> L<NodeId> {
    let span = l.span;
    let (x, x_span) = (l.x, l.x_span);
    let rate_span = l.arg_span(1);
    let rate =
        match l.a.float(1) {
            Some(r) if (0.0..1.0).contains(&r) => r,
            Some(r) => return Err(me.report(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    rate_span,
                    format!("`rate` of `dropout` must be in [0, 1), found {r}"),
                )
                .with_label("not a drop probability")
                .with_help(
                    "the rate is the probability of zeroing an element; 1 would drop everything",
                ),
            )),
            None => return Err(Reported),
        };
    let name = me.layer_name();
    let salt = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let y = me.add_op(
        Op::Norm(ops::NormOp::dropout(rate, salt)),
        &[(x, x_span)],
        span,
    )?;
    me.modal.push((y, Vec::new()));
    Ok(y)
}

/// `batch_norm(x, momentum: 0.1, eps: 1e-5)` over `[batch, C]` or NCHW
/// `[batch, C, H, W]`: normalise each channel, then `· {name}.weight +
/// {name}.bias` (learned, initialised to 1 and 0). Training normalises
/// with the batch's mean and biased variance and hands the batch's mean
/// and unbiased variance to the running statistics `{name}.running_mean`
/// and `{name}.running_var` (state, initialised to 0 and 1, PyTorch's
/// momentum convention); inference normalises with the running ones.
fn batch_norm(me: &mut Lowerer, l: &LayerCall<'_>) -> L<NodeId> {
    let span = l.span;
    let (x, xty, x_span) = (l.x, &l.xty, l.x_span);
    let arg_span = |i: usize| l.arg_span(i);
    let momentum = l.float(me, 1)?;
    if !(0.0..=1.0).contains(&momentum) {
        return Err(me.report(
            Diagnostic::new(
                ErrorKind::BadArgument,
                arg_span(1),
                format!("`momentum` of `batch_norm` must be in [0, 1], found {momentum}"),
            )
            .with_label("not a blending weight"),
        ));
    }
    let eps = l.float(me, 2)?;
    if let Some((what, label)) = eps_problem(eps) {
        return Err(me.report(
            Diagnostic::new(
                ErrorKind::BadArgument,
                arg_span(2),
                format!("`eps` of `batch_norm` must be a positive number, found {what}"),
            )
            .with_label(label),
        ));
    }
    let c = match xty.shape.dims() {
        [_, Dim::Fixed(c)] | [_, Dim::Fixed(c), Dim::Fixed(_), Dim::Fixed(_)]
            if xty.dtype == DType::F32 =>
        {
            *c
        }
        _ => {
            return Err(me.report(
                wrong_input(xty, x_span, "batch_norm expects f32[batch, channels] or f32[batch, channels, height, width] (fixed channels and size)"),
            ))
        }
    };
    let name = me.layer_name();
    let cs = Shape::fixed(&[c]);
    let state = |l: &mut Lowerer, suffix: &str| {
        let n = format!("{name}.{suffix}");
        let node = l.leaf(
            ops::LeafOp::State {
                name: n.clone(),
                shape: cs.clone(),
            },
            span,
        )?;
        l.graph.set_name(node, &n);
        Ok::<_, Reported>((n, node))
    };
    let (mean_name, mean) = state(me, "running_mean")?;
    let (var_name, var) = state(me, "running_var")?;
    let eps_bits = eps.to_bits();
    let xhat = me.add_op(
        Op::Norm(ops::NormOp::BatchNorm { eps: eps_bits }),
        &[(x, x_span)],
        span,
    )?;
    me.modal.push((xhat, vec![mean, var]));
    for (n, node, var_stat, init) in [(mean_name, mean, false, 0.0), (var_name, var, true, 1.0)] {
        let update = me.add_op(
            Op::Norm(ops::NormOp::BatchStat { var: var_stat }),
            &[(x, x_span)],
            span,
        )?;
        me.states.push(StateDecl {
            name: n,
            node,
            shape: cs.clone(),
            init,
            momentum,
            update,
            span,
        });
    }
    let mut gamma = me.add_param(
        format!("{name}.weight"),
        cs.clone(),
        Init::Constant(1.0),
        span,
    )?;
    let mut beta = me.add_param(format!("{name}.bias"), cs.clone(), Init::Zeros, span)?;
    if xty.shape.rank() == 4 {
        let to = Shape::fixed(&[c, 1, 1]);
        gamma = me.add_op(
            Op::Shape(ops::ShapeOp::Reshape { to: to.clone() }),
            &[(gamma, span)],
            span,
        )?;
        beta = me.add_op(
            Op::Shape(ops::ShapeOp::Reshape { to }),
            &[(beta, span)],
            span,
        )?;
    }
    let y = me.add_op(
        Op::Binary(BinaryOp::Mul),
        &[(xhat, span), (gamma, span)],
        span,
    )?;
    me.add_op(Op::Binary(BinaryOp::Add), &[(y, span), (beta, span)], span)
}

/// `layer_norm(x, eps: 1e-5, affine: true)`: normalises the last axis
/// (one fused kernel per row), then `* {name}.gamma + {name}.beta`
/// (initialised to ones and zeros) unless `affine: false`.
fn layer_norm(me: &mut Lowerer, l: &LayerCall<'_>) -> L<NodeId> {
    let span = l.span;
    let (x, xty, x_span) = (l.x, &l.xty, l.x_span);
    let eps = l.float(me, 1)?;
    if let Some((what, label)) = eps_problem(eps) {
        return Err(me.report(
            Diagnostic::new(
                ErrorKind::BadArgument,
                l.arg_span(1),
                format!("`eps` of `layer_norm` must be positive, found {what}"),
            )
            .with_label(label),
        ));
    }
    let y = me.add_op(Op::Seq(ops::SeqOp::LayerNorm { eps }), &[(x, x_span)], span)?;
    if !l.bool(me, 2)? {
        return Ok(y);
    }
    let Some(&Dim::Fixed(d)) = xty.shape.dims().last() else {
        return Err(Reported);
    };
    let name = me.layer_name();
    let gamma = me.add_param(
        format!("{name}.gamma"),
        Shape::fixed(&[d]),
        Init::Constant(1.0),
        span,
    )?;
    let beta = me.add_param(
        format!("{name}.beta"),
        Shape::fixed(&[d]),
        Init::Zeros,
        span,
    )?;
    let y = me.add_op(Op::Binary(BinaryOp::Mul), &[(y, span), (gamma, span)], span)?;
    me.add_op(Op::Binary(BinaryOp::Add), &[(y, span), (beta, span)], span)
}

/// Why `eps` is no epsilon for the `f32` kernels (what was found, and the
/// label): not positive, or so small it rounds to 0 in `f32` (`1e-50`).
fn eps_problem(eps: f64) -> Option<(String, &'static str)> {
    if !(eps > 0.0 && eps.is_finite()) {
        Some((eps.to_string(), "not positive"))
    } else if (eps as f32) <= 0.0 {
        Some((format!("{eps:e}, which rounds to 0 in f32"), "0 in f32"))
    } else {
        None
    }
}
