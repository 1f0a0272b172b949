//! What a network's loss compares, read off its graph: the one loss term
//! (`cross_entropy`, `binary_cross_entropy`, `mse`, `l1`) the `loss`
//! statement sums, scales or adds penalties to, the input its labels or
//! targets come from, and the node of its prediction ("scores"). The
//! runtime turns this into metrics (accuracy, F1, RMSE, ...) and `nnc
//! predict` into classes and probabilities.
//!
//! Read from the graph rather than from the call that wrote it, so a term
//! bound to a name first (`l = cross_entropy(..); loss l;`) or written out
//! by hand (`mean((p - t) * (p - t))`) is found too.

use crate::graph::{Graph, NodeId};
use crate::ir::{InputDecl, LossDecl};
use crate::ops::{BinaryOp, LeafOp, LossOp, Op, ReduceKind, UnaryOp};
use nnc_spec::LossKind;

/// The loss terms under `loss`: through sums, differences, negations and
/// products or quotients with a scalar, never into a term's operands.
fn terms(g: &Graph, loss: NodeId, out: &mut Vec<NodeId>, depth: usize) {
    // Losses nest only as deep as the `loss` statement's arithmetic.
    if depth > 64 {
        return;
    }
    if term(g, loss).is_some() {
        out.push(loss);
        return;
    }
    let ops = g.operands(loss);
    let scalar = |n: NodeId| g.ty(n).shape.fixed_numel() == Some(1);
    match &g.node(loss).op {
        Op::Binary(BinaryOp::Add | BinaryOp::Sub) => {
            for o in ops.iter().copied() {
                terms(g, o, out, depth + 1);
            }
        }
        Op::Binary(BinaryOp::Mul | BinaryOp::Div) => {
            for o in ops.iter().copied() {
                if scalar(o) && !matches!(g.node(o).op, Op::Leaf(LeafOp::Constant { .. })) {
                    terms(g, o, out, depth + 1);
                }
            }
        }
        Op::Unary(UnaryOp::Neg) => terms(g, ops[0], out, depth + 1),
        _ => {}
    }
}

/// A recognised loss term: its kind (with the target's node) and its
/// prediction.
enum Term {
    Classes { scores: NodeId, labels: NodeId },
    Binary { scores: NodeId, target: NodeId },
    Regression { scores: NodeId, target: NodeId },
}

fn term(g: &Graph, n: NodeId) -> Option<Term> {
    let ops = g.operands(n);
    match &g.node(n).op {
        Op::Loss(LossOp::CrossEntropy) => Some(Term::Classes {
            scores: ops[0],
            labels: ops[1],
        }),
        Op::Loss(LossOp::BinaryCrossEntropy) => Some(Term::Binary {
            scores: ops[0],
            target: ops[1],
        }),
        // mean((p - t)²) written as mean(d * d), or mean(|p - t|).
        Op::Reduce(r) if r.kind == ReduceKind::Mean && g.ty(n).shape.rank() == 0 => {
            let e = ops[0];
            let d = match (&g.node(e).op, g.operands(e).as_slice()) {
                (Op::Binary(BinaryOp::Mul), &[a, b]) if a == b => a,
                (Op::Unary(UnaryOp::Abs), &[a]) => a,
                _ => return None,
            };
            match (&g.node(d).op, g.operands(d).as_slice()) {
                (Op::Binary(BinaryOp::Sub), &[p, t]) => Some(Term::Regression {
                    scores: p,
                    target: t,
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// What `loss` compares (see the [module docs](self)); `Other` when it is
/// no single known term, or its labels or targets are not an input.
pub fn loss_decl(g: &Graph, loss: NodeId, inputs: &[InputDecl]) -> LossDecl {
    let mut found = Vec::new();
    terms(g, loss, &mut found, 0);
    let other = LossDecl {
        kind: LossKind::Other,
        scores: None,
    };
    let [only] = found.as_slice() else {
        return other;
    };
    let input = |node: NodeId| inputs.iter().position(|i| i.node == node);
    // A prediction computed from labels (`mse(one_hot(y), x)`) is nothing
    // `predict` could make: no metrics for such an objective.
    let reads_labels = |node: NodeId| {
        g.ancestors(&[node])
            .iter()
            .any(|&i| matches!(g.node(NodeId::new(i)).op, Op::Leaf(LeafOp::Label { .. })))
    };
    let per_sample = |node: NodeId| g.ty(node).shape.fixed_numel().unwrap_or(0);
    let term = term(g, *only);
    let scores = match &term {
        Some(
            Term::Classes { scores, .. }
            | Term::Binary { scores, .. }
            | Term::Regression { scores, .. },
        ) => *scores,
        None => return other,
    };
    if reads_labels(scores) {
        return other;
    }
    match term {
        Some(Term::Classes { scores, labels }) => {
            let (Some(label), Op::Leaf(LeafOp::Label { classes, .. })) =
                (input(labels), &g.node(labels).op)
            else {
                return other;
            };
            LossDecl {
                kind: LossKind::Classification {
                    label,
                    classes: *classes as u32,
                    positions: per_sample(labels) as u32,
                },
                scores: Some(scores),
            }
        }
        Some(Term::Binary { scores, target }) => match input(target) {
            Some(target) => LossDecl {
                kind: LossKind::Binary { target },
                scores: Some(scores),
            },
            None => other,
        },
        Some(Term::Regression { scores, target }) => match input(target) {
            Some(target)
                if matches!(
                    g.node(inputs[target].node).op,
                    Op::Leaf(LeafOp::Input { .. })
                ) =>
            {
                LossDecl {
                    kind: LossKind::Regression { target },
                    scores: Some(scores),
                }
            }
            _ => other,
        },
        None => other,
    }
}
