//! The pointwise losses: `mse` and `l1` (also spelt `l1_loss`), expanded
//! into primitive arithmetic.

use super::{always, Layer, LayerCall};
use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::graph::NodeId;
use crate::lower::{Lowerer, L};
use crate::ops::{self, ArgKind, BinaryOp, Op, Param, ReduceKind, ReduceOp, UnaryOp};

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
