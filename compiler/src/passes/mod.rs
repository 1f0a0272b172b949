//! Graph → graph passes over the whole training graph: constant folding and
//! algebraic simplification, common-subexpression elimination, dead-code
//! elimination, and (at `-O2`) the softmax + cross-entropy gradient rewrite.
//! Each pass is a value; a list of passes is a pass, and
//! [`FixedPoint`] repeats one until nothing changes (the Luminal idea).
//!
//! Every pass rebuilds the graph in index order through [`rebuild`], so the
//! invariant "index order is topological" holds by construction, and maps
//! the training graph's roots (loss, gradients, outputs) to their new nodes.

mod cse;
mod dce;
mod fold;
mod softmax_ce;

pub use cse::Cse;
pub use dce::Dce;
pub use fold::Fold;
pub use softmax_ce::SoftmaxCe;

use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::graph::{Graph, Node, NodeId};
use crate::ir::TrainingGraph;
use crate::ops::OpError;

/// A graph → graph transformation that preserves meaning.
pub trait Pass {
    /// The name used by `--disable-pass` and in reports.
    fn name(&self) -> &'static str;
    /// Rewrites the training graph; returns whether anything changed.
    fn run(&self, tg: &mut TrainingGraph) -> Result<bool, Diagnostic>;
}

/// Runs its passes in order (a list of passes is a pass).
pub struct Pipeline(pub Vec<Box<dyn Pass>>);

impl Pass for Pipeline {
    fn name(&self) -> &'static str {
        "pipeline"
    }
    fn run(&self, tg: &mut TrainingGraph) -> Result<bool, Diagnostic> {
        let mut changed = false;
        for p in &self.0 {
            changed |= p.run(tg)?;
        }
        Ok(changed)
    }
}

/// Repeats a pass until it reports no change (at most `limit` times).
pub struct FixedPoint<P: Pass> {
    /// The pass.
    pub pass: P,
    /// Safety bound on the iterations.
    pub limit: usize,
}

impl<P: Pass> Pass for FixedPoint<P> {
    fn name(&self) -> &'static str {
        "fixed-point"
    }
    fn run(&self, tg: &mut TrainingGraph) -> Result<bool, Diagnostic> {
        let mut any = false;
        for _ in 0..self.limit {
            if !self.pass.run(tg)? {
                break;
            }
            any = true;
        }
        Ok(any)
    }
}

/// The optimisation level, also reachable under the stage that reads it
/// first.
pub use crate::ir::OptLevel;

/// The graph-pass names, in the order they run.
pub const PASS_NAMES: &[&str] = &["fold", "cse", "dce", "softmax-ce"];

/// The graph passes of an optimisation level, minus the disabled ones.
pub fn pipeline(level: OptLevel, disabled: &[String]) -> Pipeline {
    let mut passes: Vec<Box<dyn Pass>> = Vec::new();
    let wanted = |n: &str| !disabled.iter().any(|d| d == n);
    if level >= OptLevel::O1 {
        let mut round: Vec<Box<dyn Pass>> = Vec::new();
        if wanted("fold") {
            round.push(Box::new(Fold));
        }
        if wanted("cse") {
            round.push(Box::new(Cse));
        }
        if wanted("dce") {
            round.push(Box::new(Dce));
        }
        passes.push(Box::new(FixedPoint {
            pass: Pipeline(round),
            limit: 16,
        }));
    }
    if level >= OptLevel::O2 && wanted("softmax-ce") {
        passes.push(Box::new(SoftmaxCe));
        // The rewrite leaves the one-hot and subtraction unused.
        if wanted("dce") {
            passes.push(Box::new(Dce));
        }
    }
    Pipeline(passes)
}

/// What a rebuild callback decides for one node: reuse an existing new node,
/// or add this op over these (new) operands.
pub enum Rewrite {
    /// The node's value is this existing node of the new graph.
    Existing(NodeId),
    /// Add a node (op, new operands).
    Add(crate::ops::Op, Vec<NodeId>),
}

/// Rebuilds `tg` node by node in index order. `keep` filters old nodes;
/// `f` decides each kept node's replacement given its operands already
/// mapped into the new graph. Roots are remapped; returns whether the graph
/// changed (node count or any rewrite).
pub fn rebuild(
    tg: &mut TrainingGraph,
    keep: impl Fn(NodeId) -> bool,
    mut f: impl FnMut(&Graph, &Node, &[NodeId]) -> Result<Rewrite, OpError>,
) -> Result<bool, Diagnostic> {
    let old = &tg.graph;
    let mut new = Graph::with_capacity(old.len(), old.edge_count());
    let mut map: Vec<Option<NodeId>> =
        vec![None; old.ids().map(|i| i.index() + 1).max().unwrap_or(0)];
    let mut forward_len = 0;
    let mut changed = false;
    for id in old.ids() {
        if !keep(id) {
            changed = true;
            continue;
        }
        let node = old.node(id);
        let old_operands = old.operands(id);
        let operands: Option<Vec<NodeId>> = old_operands.iter().map(|o| map[o.index()]).collect();
        let Some(operands) = operands else {
            return Err(internal(
                node,
                "an operand was removed but its user kept".into(),
            ));
        };
        let new_id = match f(&new, node, &operands).map_err(|e| internal(node, e.message))? {
            Rewrite::Existing(n) => {
                changed = true;
                n
            }
            Rewrite::Add(op, ops) => {
                if op != node.op || ops != operands {
                    changed = true;
                }
                // The same op over operands of the same types has the
                // node's type: the shape rule is run only on what changed.
                let same = op == node.op
                    && ops.len() == old_operands.len()
                    && ops
                        .iter()
                        .zip(&old_operands)
                        .all(|(&n, &o)| new.ty(n) == old.ty(o));
                let n = if same {
                    new.add_typed(op, &ops, node.span, node.ty.clone())
                } else {
                    new.add(op, &ops, node.span)
                        .map_err(|e| internal(node, e.message))?
                };
                if let Some(name) = &node.name {
                    new.set_name(n, name);
                }
                n
            }
        };
        map[id.index()] = Some(new_id);
        if id.index() < tg.forward_len {
            forward_len = new.len();
        }
    }
    let remap = |n: NodeId| -> Result<NodeId, Diagnostic> {
        map[n.index()].ok_or_else(|| internal(old.node(n), "a root was removed".into()))
    };
    let loss = remap(tg.loss)?;
    let objective = remap(tg.objective)?;
    let mut params = Vec::new();
    for (name, p, g) in &tg.params {
        params.push((name.clone(), remap(*p)?, remap(*g)?));
    }
    let mut inputs = Vec::new();
    for (name, i, g) in &tg.inputs {
        inputs.push((name.clone(), remap(*i)?, remap(*g)?));
    }
    let mut outputs = Vec::new();
    for (name, o) in &tg.outputs {
        outputs.push((name.clone(), remap(*o)?));
    }
    let scores = tg.scores.map(remap).transpose()?;
    let mut state_updates = Vec::new();
    for (name, u) in &tg.state_updates {
        state_updates.push((name.clone(), remap(*u)?));
    }
    if new.len() != old.len() {
        changed = true;
    }
    *tg = TrainingGraph {
        states: tg.states.clone(),
        state_updates,
        graph: new,
        forward_len,
        loss,
        objective,
        params,
        inputs,
        embedded: tg.embedded.clone(),
        outputs,
        scores,
    };
    Ok(changed)
}

fn internal(node: &Node, message: String) -> Diagnostic {
    Diagnostic::new(
        ErrorKind::Internal,
        node.span,
        format!("a graph pass broke node {}: {message}", node.op),
    )
}
