//! The builder gradient rules write their results with: each op's gradient
//! face (`grad`) adds nodes through a [`GradCtx`], so a rule is stated in
//! terms of other ops. Autodiff drives the rules; the builder is theirs.

use super::{BinaryOp, LeafOp, Op, OpError, ShapeOp, UnaryOp};
use crate::diagnostic::Span;
use crate::graph::{Graph, NodeId, Shape, TensorType};

/// The builder that gradient rules add nodes through. New nodes carry the
/// span of the forward node whose rule made them.
pub struct GradCtx<'g> {
    graph: &'g mut Graph,
    span: Span,
}

impl<'g> GradCtx<'g> {
    /// A builder over `graph` whose new nodes carry `span`.
    pub fn new(graph: &'g mut Graph, span: Span) -> Self {
        GradCtx { graph, span }
    }

    /// Appends a node.
    pub fn add(&mut self, op: Op, operands: &[NodeId]) -> Result<NodeId, OpError> {
        self.graph.add(op, operands, self.span)
    }

    /// The type of a node.
    pub fn ty(&self, id: NodeId) -> &TensorType {
        self.graph.ty(id)
    }

    /// A scalar constant.
    pub fn constant(&mut self, value: f64) -> Result<NodeId, OpError> {
        self.add(Op::Leaf(LeafOp::scalar(value)), &[])
    }

    /// A unary elementwise node.
    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> Result<NodeId, OpError> {
        self.add(Op::Unary(op), &[x])
    }

    /// A binary elementwise node.
    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId, OpError> {
        self.add(Op::Binary(op), &[a, b])
    }

    /// Sums `g` down to `shape` (the adjoint of broadcasting); `g` itself
    /// when it already has that shape.
    pub fn sum_to(&mut self, g: NodeId, shape: &Shape) -> Result<NodeId, OpError> {
        if &self.ty(g).shape == shape {
            Ok(g)
        } else {
            self.add(Op::Shape(ShapeOp::SumTo { to: shape.clone() }), &[g])
        }
    }

    /// Zeros of a shape.
    pub fn zeros(&mut self, shape: &Shape) -> Result<NodeId, OpError> {
        let z = self.constant(0.0)?;
        self.add(Op::Shape(ShapeOp::Broadcast { to: shape.clone() }), &[z])
    }
}
