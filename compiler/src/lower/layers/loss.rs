//! The losses written as layers: the pointwise `mse` and `l1` (also spelt
//! `l1_loss`), and knowledge distillation's `distill`, each expanded into
//! primitive ops (so autodiff derives their gradients).

use super::{always, Layer, LayerCall};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::graph::NodeId;
use crate::lower::{Lowerer, L};
use crate::ops::softmax::SoftmaxKind;
use crate::ops::{
    self, ArgKind, BinaryOp, LeafOp, LossOp, Op, Param, ReduceKind, ReduceOp, SoftmaxOp, UnaryOp,
};

const PARAMS: &[Param] = &[
    Param::req("pred", ArgKind::Tensor),
    Param::req("target", ArgKind::Tensor),
];

pub(super) static LAYERS: &[Layer] = &[
    Layer {
        name: "mse",
        params: PARAMS,
        doc: "mean((pred - target)²)",
        applies: always,
        expand: |me, l| pointwise_loss(me, l, false),
    },
    Layer {
        name: "l1",
        params: PARAMS,
        doc: "mean(|pred - target|)",
        applies: always,
        expand: |me, l| pointwise_loss(me, l, true),
    },
    Layer {
        name: "l1_loss",
        params: PARAMS,
        doc: "the same as l1",
        applies: always,
        expand: |me, l| pointwise_loss(me, l, true),
    },
    Layer {
        name: "distill",
        params: &[
            Param::req("student", ArgKind::Tensor),
            Param::req("teacher", ArgKind::Tensor),
            Param::req("labels", ArgKind::Tensor),
            Param::req("temperature", ArgKind::Float),
            Param::req("alpha", ArgKind::Float),
        ],
        doc: "alpha·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha)·cross_entropy(student, labels); \
              no gradient reaches the teacher",
        applies: always,
        expand: distill,
    },
];

/// `mse(pred, target)` = mean((pred − target)²); `l1(pred, target)` =
/// mean(|pred − target|). The shapes must be equal: broadcasting a
/// `[batch, 1]` prediction against a `[batch]` target is a classic silent
/// bug, so it is an error here.
fn pointwise_loss(me: &mut Lowerer, l: &LayerCall<'_>, l1: bool) -> L<NodeId> {
    let (func, span) = (l.name(), l.span);
    let ((p, pty), (t, tty)) = match (l.a.tensor(0), l.a.tensor(1)) {
        (Ok(p), Ok(t)) => (p, t),
        (Err(e), _) | (_, Err(e)) => return Err(me.op_error(e, &[], span)),
    };
    let (ps, ts) = (l.x_span, l.arg_span(1));
    // Report class labels against this call, not the `-` it expands to.
    for (i, ty) in [pty, tty].into_iter().enumerate() {
        if let Err(e) = ops::expect_f32(ty, i, func) {
            return Err(me.op_error(e, &[(p, ps), (t, ts)], span));
        }
    }
    if pty.shape != tty.shape {
        let msg = format!("{func} of {pty} and {tty}: shapes differ");
        return Err(me.report(
            Diagnostic::new(ErrorKind::ShapeMismatch, span, msg)
                .with_note(ps, format!("this is {pty}"))
                .with_note(ts, format!("this is {tty}"))
                .with_help("reshape one side so both have the same shape"),
        ));
    }
    let d = me.add_op(Op::Binary(BinaryOp::Sub), &[(p, ps), (t, ts)], span)?;
    let e = if l1 {
        me.add_op(Op::Unary(UnaryOp::Abs), &[(d, span)], span)?
    } else {
        me.add_op(Op::Binary(BinaryOp::Mul), &[(d, span), (d, span)], span)?
    };
    let mean = Op::Reduce(ReduceOp {
        kind: ReduceKind::Mean,
        axes: Vec::new(),
        keepdims: false,
    });
    me.add_op(mean, &[(e, span)], span)
}

/// The mean over `x`'s leading axes of its sum over the last (the class)
/// axis: the per-sample total, averaged as `cross_entropy` averages.
fn mean_of_row_sums(me: &mut Lowerer, x: NodeId, span: Span) -> L<NodeId> {
    let last = me.graph.ty(x).shape.rank().saturating_sub(1);
    let sum = Op::Reduce(ReduceOp {
        kind: ReduceKind::Sum,
        axes: vec![last],
        keepdims: false,
    });
    let rows = me.add_op(sum, &[(x, span)], span)?;
    let mean = Op::Reduce(ReduceOp {
        kind: ReduceKind::Mean,
        axes: Vec::new(),
        keepdims: false,
    });
    me.add_op(mean, &[(rows, span)], span)
}

/// `distill(student, teacher, labels, temperature: T, alpha: a)`, Hinton et
/// al.'s knowledge distillation loss: `a·T²·KL(p_t ‖ p_s) + (1 − a)·
/// cross_entropy(student, labels)`, with `p_t = softmax(teacher / T)` and
/// `p_s = softmax(student / T)` over the last axis, the KL divergence summed
/// over classes and averaged over the rest (PyTorch's `KLDivLoss(reduction=
/// "batchmean")` for `[batch, C]` logits). `T²` keeps the soft term's
/// gradient on the hard term's scale as `T` grows. The teacher's logits go
/// through a stop-gradient: they are a target, never trained. Both terms are
/// built whatever `a` is, so the loss's metrics (the student's accuracy on
/// the labels) are found alike.
fn distill(me: &mut Lowerer, l: &LayerCall<'_>) -> L<NodeId> {
    let span = l.span;
    let ((s, sty), (t, tty)) = match (l.a.tensor(0), l.a.tensor(1)) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), _) | (_, Err(e)) => return Err(me.op_error(e, &[], span)),
    };
    let (s_span, t_span, y_span) = (l.x_span, l.arg_span(1), l.arg_span(2));
    for (i, ty) in [sty, tty].into_iter().enumerate() {
        if let Err(e) = ops::expect_f32(ty, i, "distill") {
            return Err(me.op_error(e, &[(s, s_span), (t, t_span)], span));
        }
    }
    if sty.shape != tty.shape {
        let msg = format!("distill of student {sty} and teacher {tty}: shapes differ");
        return Err(me.report(
            Diagnostic::new(ErrorKind::ShapeMismatch, span, msg)
                .with_note(s_span, format!("the student's logits are {sty}"))
                .with_note(t_span, format!("the teacher's logits are {tty}"))
                .with_help("the teacher must score the same classes as the student"),
        ));
    }
    let temp = l.float(me, 3)?;
    // 1/T and T² become f32 constants: both must stay finite and nonzero.
    let t_ok =
        temp > 0.0 && ((1.0 / temp) as f32).is_normal() && ((temp * temp) as f32).is_normal();
    if !t_ok {
        return Err(me.report(
            Diagnostic::new(
                ErrorKind::BadArgument,
                l.arg_span(3),
                format!("the temperature of distill must be a positive number, found {temp}"),
            )
            .with_label("not a valid temperature")
            .with_help("T = 1 compares the plain softmaxes; Hinton et al. use 2 to 20"),
        ));
    }
    let alpha = l.float(me, 4)?;
    if !(0.0..=1.0).contains(&alpha) {
        return Err(me.report(
            Diagnostic::new(
                ErrorKind::BadArgument,
                l.arg_span(4),
                format!("alpha of distill weighs the teacher's term, from 0 to 1; found {alpha}"),
            )
            .with_label("not in [0, 1]"),
        ));
    }
    let (y, _) = l.a.tensor(2).map_err(|e| me.op_error(e, &[], span))?;
    // The hard-label term first: its shape rule checks the labels.
    let ce = me.add_op(
        Op::Loss(LossOp::CrossEntropy),
        &[(s, s_span), (y, y_span)],
        span,
    )?;
    let t = me.add_op(Op::Unary(UnaryOp::StopGradient), &[(t, t_span)], span)?;
    let inv_t = me.leaf(LeafOp::scalar(1.0 / temp), l.arg_span(3))?;
    let axis = sty.shape.rank().saturating_sub(1);
    let scaled = |me: &mut Lowerer, x: NodeId| {
        me.add_op(Op::Binary(BinaryOp::Mul), &[(x, span), (inv_t, span)], span)
    };
    let (ts, ss) = (scaled(me, t)?, scaled(me, s)?);
    let softmax = |kind| Op::Softmax(SoftmaxOp { kind, axis });
    let pt = me.add_op(softmax(SoftmaxKind::Softmax), &[(ts, span)], span)?;
    let lpt = me.add_op(softmax(SoftmaxKind::LogSoftmax), &[(ts, span)], span)?;
    let lps = me.add_op(softmax(SoftmaxKind::LogSoftmax), &[(ss, span)], span)?;
    let d = me.add_op(Op::Binary(BinaryOp::Sub), &[(lpt, span), (lps, span)], span)?;
    let e = me.add_op(Op::Binary(BinaryOp::Mul), &[(pt, span), (d, span)], span)?;
    let kl = mean_of_row_sums(me, e, span)?;
    let soft_w = me.leaf(LeafOp::scalar(alpha * temp * temp), span)?;
    let hard_w = me.leaf(LeafOp::scalar(1.0 - alpha), span)?;
    let soft = me.add_op(
        Op::Binary(BinaryOp::Mul),
        &[(kl, span), (soft_w, span)],
        span,
    )?;
    let hard = me.add_op(
        Op::Binary(BinaryOp::Mul),
        &[(ce, span), (hard_w, span)],
        span,
    )?;
    me.add_op(
        Op::Binary(BinaryOp::Add),
        &[(soft, span), (hard, span)],
        span,
    )
}
