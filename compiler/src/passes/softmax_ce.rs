//! Softmax + cross-entropy fusion for the backward pass: autodiff writes
//! cross-entropy's gradient as `(softmax(x) − one_hot(labels)) · scale`,
//! four kernels and two full-size temporaries. This pass rewrites that
//! pattern into one [`LossOp::CrossEntropyGrad`] node, which runs as one
//! stable pass over each row (the forward loss is already one op). The
//! softmax survives only if something else (an output) still reads it.

use super::{rebuild, Pass, Rewrite};
use crate::diagnostic::Diagnostic;
use crate::graph::{Dim, Graph, NodeId};
use crate::ir::TrainingGraph;
use crate::ops::{BinaryOp, LossOp, Op, SoftmaxKind};

/// Rewrites cross-entropy gradients into one op.
pub struct SoftmaxCe;

impl Pass for SoftmaxCe {
    fn name(&self) -> &'static str {
        "softmax-ce"
    }
    fn run(&self, tg: &mut TrainingGraph) -> Result<bool, Diagnostic> {
        rebuild(
            tg,
            |_| true,
            |g, node, ops| {
                if node.op == Op::Binary(BinaryOp::Mul) {
                    for (d, s) in [(ops[0], ops[1]), (ops[1], ops[0])] {
                        if let Some((x, labels)) = softmax_minus_one_hot(g, d) {
                            let scalar = g.ty(s).shape.dims().iter().all(|&d| d == Dim::Fixed(1));
                            // Only where the product has the logits' exact
                            // type: broadcasting by the scale stays as it is.
                            if scalar && g.ty(x) == &node.ty {
                                return Ok(Rewrite::Add(
                                    Op::Loss(LossOp::CrossEntropyGrad),
                                    vec![x, labels, s],
                                ));
                            }
                        }
                    }
                }
                Ok(Rewrite::Add(node.op.clone(), ops.to_vec()))
            },
        )
    }
}

/// `(x, labels)` if `d` is `softmax(x) − one_hot(labels)` over x's last axis.
fn softmax_minus_one_hot(g: &Graph, d: NodeId) -> Option<(NodeId, NodeId)> {
    if g.node(d).op != Op::Binary(BinaryOp::Sub) {
        return None;
    }
    let [p, oh] = g.operands(d)[..] else {
        return None;
    };
    let Op::Softmax(sm) = &g.node(p).op else {
        return None;
    };
    let x = g.operands(p)[0];
    let last = g.ty(x).shape.rank().checked_sub(1)?;
    let Op::Loss(LossOp::OneHot { .. }) = g.node(oh).op else {
        return None;
    };
    let labels = g.operands(oh)[0];
    let same = g.ty(p) == g.ty(oh) && g.ty(d) == g.ty(p);
    (sm.kind == SoftmaxKind::Softmax && sm.axis == last && same).then_some((x, labels))
}
