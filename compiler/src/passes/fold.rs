//! Constant folding and algebraic simplification: arithmetic on constants
//! becomes a constant; `x * 1`, `x + 0`, `x - 0`, `x / 1`, `--x`, a
//! transpose of a transpose, a reshape of a reshape, and reshapes,
//! broadcasts and sums to the shape a value already has disappear. A rewrite
//! only applies when the result has exactly the type of the node it
//! replaces (broadcasting by a constant can change a shape).

use super::{rebuild, Pass, Rewrite};
use crate::diagnostic::Diagnostic;
use crate::graph::{Graph, Node, NodeId};
use crate::ir::TrainingGraph;
use crate::ops::{BinaryOp, LeafOp, Op, OpError, ShapeOp, UnaryOp};

/// Folds constants and simplifies algebra.
pub struct Fold;

impl Pass for Fold {
    fn name(&self) -> &'static str {
        "fold"
    }
    fn run(&self, tg: &mut TrainingGraph) -> Result<bool, Diagnostic> {
        rebuild(tg, |_| true, simplify)
    }
}

fn constant(g: &Graph, id: NodeId) -> Option<(f64, i32)> {
    match g.node(id).op {
        Op::Leaf(LeafOp::Constant { value, batch_pow }) => Some((value, batch_pow)),
        _ => None,
    }
}

fn is_const(g: &Graph, id: NodeId, v: f64) -> bool {
    constant(g, id) == Some((v, 0))
}

fn simplify(g: &Graph, node: &Node, ops: &[NodeId]) -> Result<Rewrite, OpError> {
    let keep = || Rewrite::Add(node.op.clone(), ops.to_vec());
    // Replace by an existing node only if it has this node's exact type.
    let same = |n: NodeId| g.ty(n) == &node.ty;
    let c = |value: f64, batch_pow: i32| {
        Rewrite::Add(Op::Leaf(LeafOp::Constant { value, batch_pow }), vec![])
    };
    Ok(match &node.op {
        Op::Binary(op) => {
            let (a, b) = (ops[0], ops[1]);
            match (op, constant(g, a), constant(g, b)) {
                (BinaryOp::Mul, Some((x, p)), Some((y, q))) => c(x * y, p + q),
                (BinaryOp::Div, Some((x, p)), Some((y, q))) => c(x / y, p - q),
                (BinaryOp::Add, Some((x, p)), Some((y, q))) if p == q => c(x + y, p),
                (BinaryOp::Sub, Some((x, p)), Some((y, q))) if p == q => c(x - y, p),
                (BinaryOp::Mul, _, _) if is_const(g, b, 1.0) && same(a) => Rewrite::Existing(a),
                (BinaryOp::Mul, _, _) if is_const(g, a, 1.0) && same(b) => Rewrite::Existing(b),
                (BinaryOp::Div, _, _) if is_const(g, b, 1.0) && same(a) => Rewrite::Existing(a),
                (BinaryOp::Add | BinaryOp::Sub, _, _) if is_const(g, b, 0.0) && same(a) => {
                    Rewrite::Existing(a)
                }
                (BinaryOp::Add, _, _) if is_const(g, a, 0.0) && same(b) => Rewrite::Existing(b),
                _ => keep(),
            }
        }
        Op::Unary(op) => match (op, constant(g, ops[0])) {
            (UnaryOp::Neg, Some((v, p))) => c(-v, p),
            (op, Some((v, 0))) => c(op.apply(v), 0),
            (UnaryOp::Neg, None) => match &g.node(ops[0]).op {
                Op::Unary(UnaryOp::Neg) => Rewrite::Existing(g.operands(ops[0])[0]),
                _ => keep(),
            },
            _ => keep(),
        },
        Op::Shape(shape_op) => {
            let x = ops[0];
            let inner = g.node(x);
            match shape_op {
                ShapeOp::Reshape { .. } | ShapeOp::Broadcast { .. } | ShapeOp::SumTo { .. }
                    if same(x) =>
                {
                    Rewrite::Existing(x)
                }
                ShapeOp::Reshape { to } => match &inner.op {
                    Op::Shape(ShapeOp::Reshape { .. }) => {
                        let src = g.operands(x)[0];
                        if g.ty(src) == &node.ty {
                            Rewrite::Existing(src)
                        } else {
                            Rewrite::Add(Op::Shape(ShapeOp::Reshape { to: to.clone() }), vec![src])
                        }
                    }
                    _ => keep(),
                },
                ShapeOp::Transpose { perm } => match &inner.op {
                    Op::Shape(ShapeOp::Transpose { perm: first }) => {
                        // out[i] = in[first[perm[i]]]
                        let composed: Vec<usize> = perm.iter().map(|&p| first[p]).collect();
                        let src = g.operands(x)[0];
                        if composed.iter().enumerate().all(|(i, &p)| i == p) {
                            Rewrite::Existing(src)
                        } else {
                            Rewrite::Add(
                                Op::Shape(ShapeOp::Transpose { perm: composed }),
                                vec![src],
                            )
                        }
                    }
                    _ if perm.iter().enumerate().all(|(i, &p)| i == p) => Rewrite::Existing(x),
                    _ => keep(),
                },
                _ => keep(),
            }
        }
        _ => keep(),
    })
}
