//! Common-subexpression elimination on structural equality: two nodes with
//! equal ops (constants compared by bits) over the same operands are one.

use super::{rebuild, Pass, Rewrite};
use crate::diagnostic::Diagnostic;
use crate::graph::NodeId;
use crate::ir::TrainingGraph;
use crate::ops::Op;
use std::collections::HashMap;

/// Merges structurally equal nodes.
pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }
    fn run(&self, tg: &mut TrainingGraph) -> Result<bool, Diagnostic> {
        // Sized for every node: growing it rehashed every op (issue 22).
        let mut seen: HashMap<(Op, Vec<NodeId>), NodeId> = HashMap::with_capacity(tg.graph.len());
        let before = tg.graph.len();
        rebuild(
            tg,
            |_| true,
            |graph, node, ops| {
                let key = (node.op.clone(), ops.to_vec());
                if let Some(&n) = seen.get(&key) {
                    return Ok(Rewrite::Existing(n));
                }
                // The id the new node will get: the graph only appends.
                seen.insert(key, NodeId::new(graph.len()));
                Ok(Rewrite::Add(node.op.clone(), ops.to_vec()))
            },
        )
        .map(|changed| changed && tg.graph.len() != before)
    }
}
