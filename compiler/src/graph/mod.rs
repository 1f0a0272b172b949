//! The IR: a petgraph `StableDiGraph` whose nodes carry an op, a tensor type
//! and the source span they came from, and whose edges are ordered operands.
//!
//! Invariant: nodes are only ever appended with operands that already exist,
//! so index order is a topological order. Stages that walk the graph rely on
//! it; [`Graph::verify`] checks it.

mod dot;
mod types;

pub use dot::to_dot;
pub use types::{DType, Dim, Shape, TensorType};

use crate::diagnostic::Span;
use crate::ops::{Op, OpError};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// Index of a node in a [`Graph`].
pub type NodeId = NodeIndex<u32>;

/// One operation in the graph with its result type.
#[derive(Clone, Debug)]
pub struct Node {
    /// What the node computes.
    pub op: Op,
    /// Element type and shape of the result.
    pub ty: TensorType,
    /// The source the node came from (gradient nodes keep their forward node's).
    pub span: Span,
    /// The binding name in the source, where there is one.
    pub name: Option<String>,
}

/// Edge weight: the position of the source node among the consumer's operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand(pub u8);

/// A computation graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    inner: StableDiGraph<Node, Operand>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty graph with room for `nodes` nodes and `edges` operand
    /// edges: a pass rebuilding a big graph grows none of its tables.
    pub fn with_capacity(nodes: usize, edges: usize) -> Self {
        Graph {
            inner: StableDiGraph::with_capacity(nodes, edges),
        }
    }

    /// The number of operand edges.
    pub fn edge_count(&self) -> usize {
        self.inner.edge_count()
    }

    /// Appends a node after checking the op's arity and shape rule.
    pub fn add(&mut self, op: Op, operands: &[NodeId], span: Span) -> Result<NodeId, OpError> {
        let types: Vec<&TensorType> = operands.iter().map(|&n| &self.inner[n].ty).collect();
        let ty = op.infer(&types)?;
        Ok(self.add_typed(op, operands, span, ty))
    }

    /// Appends a node whose type the caller already knows: `ty` must be
    /// what `op` infers from its operands' types (a pass copying a node
    /// whose operands' types did not change), so the shape rule is not run
    /// again.
    pub(crate) fn add_typed(
        &mut self,
        op: Op,
        operands: &[NodeId],
        span: Span,
        ty: TensorType,
    ) -> NodeId {
        let id = self.inner.add_node(Node {
            op,
            ty,
            span,
            name: None,
        });
        for (i, &o) in operands.iter().enumerate() {
            self.inner.add_edge(o, id, Operand(i as u8));
        }
        id
    }

    /// Replaces a node's op and operands in place, keeping its index, name
    /// and span: how a modal op (dropout, batch norm) becomes its inference
    /// form. The operands must precede the node and the result type must
    /// stay the same, so every user remains valid.
    pub fn replace(&mut self, id: NodeId, op: Op, operands: &[NodeId]) -> Result<(), OpError> {
        if let Some(bad) = operands.iter().find(|o| o.index() >= id.index()) {
            return Err(OpError::internal(format!(
                "node {} cannot use later node {}",
                id.index(),
                bad.index()
            )));
        }
        let types: Vec<&TensorType> = operands.iter().map(|&n| &self.inner[n].ty).collect();
        let ty = op.infer(&types)?;
        if ty != self.inner[id].ty {
            return Err(OpError::internal(format!(
                "replacing node {} would change its type from {} to {ty}",
                id.index(),
                self.inner[id].ty
            )));
        }
        let old: Vec<_> = self
            .inner
            .edges_directed(id, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.inner.remove_edge(e);
        }
        for (i, &o) in operands.iter().enumerate() {
            self.inner.add_edge(o, id, Operand(i as u8));
        }
        self.inner[id].op = op;
        Ok(())
    }

    /// The node at `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.inner[id]
    }

    /// Sets the source name shown for a node (in graphs and generated code).
    pub fn set_name(&mut self, id: NodeId, name: &str) {
        if self.inner[id].name.is_none() {
            self.inner[id].name = Some(name.to_string());
        }
    }

    /// The type of the node at `id`.
    pub fn ty(&self, id: NodeId) -> &TensorType {
        &self.inner[id].ty
    }

    /// The operands of a node, in order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(u8, NodeId)> = self
            .inner
            .edges_directed(id, Direction::Incoming)
            .map(|e| (e.weight().0, e.source()))
            .collect();
        edges.sort_by_key(|&(i, _)| i);
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// The nodes that use `id` as an operand (once per use).
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        self.inner
            .edges_directed(id, Direction::Outgoing)
            .map(|e| e.target())
            .collect()
    }

    /// All node ids in a topological order (operands before users).
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.inner.node_indices()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.inner.node_count()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.inner.node_count() == 0
    }

    /// Removes every node at index `from` or later that `keep` does not
    /// contain (dead work a pass appended). Index order stays topological.
    pub fn remove_dead_after(&mut self, from: usize, keep: &std::collections::BTreeSet<usize>) {
        let dead: Vec<NodeId> = self
            .ids()
            .filter(|id| id.index() >= from && !keep.contains(&id.index()))
            .collect();
        for id in dead {
            self.inner.remove_node(id);
        }
    }

    /// The indices of `targets` and of every node they depend on.
    pub fn ancestors(&self, targets: &[NodeId]) -> std::collections::BTreeSet<usize> {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack: Vec<NodeId> = targets.to_vec();
        while let Some(n) = stack.pop() {
            if seen.insert(n.index()) {
                stack.extend(self.operands(n));
            }
        }
        seen
    }

    /// FLOPs of the nodes whose index is in `range`, for one sample (batch
    /// 1), summed from each op's FLOP face.
    pub fn flops(&self, range: std::ops::Range<usize>) -> u64 {
        self.ids()
            .filter(|id| range.contains(&id.index()))
            .map(|id| {
                let types: Vec<&TensorType> =
                    self.operands(id).iter().map(|&o| self.ty(o)).collect();
                let node = self.node(id);
                node.op.flops(&types, &node.ty)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// The underlying petgraph graph, for algorithms and rendering.
    pub fn petgraph(&self) -> &StableDiGraph<Node, Operand> {
        &self.inner
    }

    /// Checks the invariants: operands precede their users, every node's type
    /// is what its op infers from its operands.
    pub fn verify(&self) -> Result<(), String> {
        for id in self.ids() {
            let ops = self.operands(id);
            if let Some(bad) = ops.iter().find(|o| o.index() >= id.index()) {
                return Err(format!(
                    "node {} uses later node {}",
                    id.index(),
                    bad.index()
                ));
            }
            let types: Vec<&TensorType> = ops.iter().map(|&n| self.ty(n)).collect();
            let node = self.node(id);
            match node.op.infer(&types) {
                Ok(ty) if ty == node.ty => {}
                Ok(ty) => {
                    return Err(format!(
                        "node {} ({}) has type {} but its op infers {}",
                        id.index(),
                        node.op,
                        node.ty,
                        ty
                    ))
                }
                Err(e) => return Err(format!("node {} ({}): {}", id.index(), node.op, e.message)),
            }
        }
        Ok(())
    }
}
