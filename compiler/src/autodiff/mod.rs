//! Symbolic reverse-mode differentiation as a graph → graph pass.
//!
//! Seed d(objective) = 1, walk the original nodes in reverse topological
//! order, ask each op for its gradient rule, and sum the contributions that
//! reach a node over its fan-out. The new nodes are appended to the same
//! graph, so forward and backward form one training graph that later passes
//! optimise as a whole.

use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::graph::{Graph, NodeId};
use crate::ir::Network;

/// IR types autodiff makes, also reachable under the stage's name (the
/// paths the facade's end-to-end tests use).
pub use crate::ir::{GradOptions, TrainingGraph};
use crate::ops::{BinaryOp, GradCtx, Op, OpError, ReduceKind, ReduceOp, UnaryOp};
use std::collections::HashMap;

mod explain;
pub use explain::{input_gradient_graph, COTANGENT};

fn internal(span: Span, e: OpError) -> Diagnostic {
    Diagnostic::new(
        if e.kind == ErrorKind::Internal {
            ErrorKind::Internal
        } else {
            e.kind
        },
        span,
        format!("cannot differentiate: {}", e.message),
    )
}

/// Appends to `graph` the gradient of the scalar `objective` with respect to
/// each node of `wrt`, and returns the gradient nodes in the same order.
/// A node the objective does not depend on gets a zero gradient.
pub fn gradients(
    graph: &mut Graph,
    objective: NodeId,
    wrt: &[NodeId],
) -> Result<Vec<NodeId>, Diagnostic> {
    let obj_span = graph.node(objective).span;
    if graph.ty(objective).shape.rank() != 0 {
        return Err(Diagnostic::new(
            ErrorKind::ShapeMismatch,
            obj_span,
            format!(
                "the objective must be a scalar, found {}",
                graph.ty(objective)
            ),
        ));
    }
    let original: Vec<NodeId> = graph.ids().collect();
    // By node index: whether a node is in `wrt` (a deep model has tens of
    // thousands of parameters, and a search of `wrt` per node was
    // quadratic), and whether it depends on something in `wrt` (only those
    // nodes need a gradient).
    let bound = original.last().map_or(0, |n| n.index() + 1);
    let mut asked = vec![false; bound];
    for w in wrt.iter().filter(|w| w.index() < bound) {
        asked[w.index()] = true;
    }
    let asked = |id: NodeId| asked.get(id.index()).copied().unwrap_or(false);
    let mut depends = vec![false; bound];
    for &id in &original {
        depends[id.index()] = asked(id) || graph.operands(id).iter().any(|o| depends[o.index()]);
    }
    let mut contributions: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    let seed = GradCtx::new(graph, obj_span)
        .constant(1.0)
        .map_err(|e| internal(obj_span, e))?;
    contributions.insert(objective, vec![seed]);

    for &id in original.iter().rev() {
        if !depends[id.index()] || asked(id) && graph.node(id).op.leaf().is_some() {
            continue;
        }
        let Some(parts) = contributions.remove(&id) else {
            continue;
        };
        // The op and span only: the rest of the node (its type, its name)
        // is not needed past here, and cloning it per node was wasted work.
        let (op, span) = {
            let node = graph.node(id);
            (node.op.clone(), node.span)
        };
        let mut cx = GradCtx::new(graph, span);
        let g = sum_all(&mut cx, &parts).map_err(|e| internal(span, e))?;
        if let Some(name) = &graph.node(id).name {
            let name = format!("d_{name}");
            graph.set_name(g, &name);
        }
        if asked(id) {
            // A non-leaf asked for: keep its gradient, and also propagate.
            contributions.insert(id, vec![g]);
        }
        let operands = graph.operands(id);
        let mut cx = GradCtx::new(graph, span);
        let grads = op
            .grad(&mut cx, &operands, id, g)
            .map_err(|e| internal(span, e))?;
        for (operand, d) in operands.iter().zip(grads) {
            if let Some(d) = d {
                if depends[operand.index()] {
                    contributions.entry(*operand).or_default().push(d);
                }
            }
        }
    }

    let mut out = Vec::with_capacity(wrt.len());
    for &w in wrt {
        let span = graph.node(w).span;
        let mut cx = GradCtx::new(graph, span);
        let g = match contributions.get(&w) {
            Some(parts) => sum_all(&mut cx, parts),
            None => {
                let shape = cx.ty(w).shape.clone();
                cx.zeros(&shape)
            }
        }
        .map_err(|e| internal(span, e))?;
        out.push(g);
    }
    Ok(out)
}

fn sum_all(cx: &mut GradCtx<'_>, parts: &[NodeId]) -> Result<NodeId, OpError> {
    let mut acc = parts[0];
    for &p in &parts[1..] {
        acc = cx.binary(BinaryOp::Add, acc, p)?;
    }
    Ok(acc)
}

/// Builds the training graph of a network: objective = loss + penalties,
/// gradients for every parameter (and requested inputs).
pub fn training_graph(net: &Network, opts: &GradOptions) -> Result<TrainingGraph, Diagnostic> {
    let mut graph = net.graph.clone();
    let forward_len = graph.len();
    let span = graph.node(net.loss).span;
    let reg = opts.regularization;
    let mut objective = net.loss;
    let build = |graph: &mut Graph, objective: &mut NodeId| -> Result<(), OpError> {
        for p in net.params.iter().filter(|p| p.shape.rank() >= 2) {
            for (coeff, square) in [(reg.l1, false), (reg.l2 / 2.0, true)] {
                if coeff == 0.0 {
                    continue;
                }
                let mut cx = GradCtx::new(graph, p.span);
                let t = if square {
                    cx.binary(BinaryOp::Mul, p.node, p.node)?
                } else {
                    cx.unary(UnaryOp::Abs, p.node)?
                };
                let s = cx.add(
                    Op::Reduce(ReduceOp {
                        kind: ReduceKind::Sum,
                        axes: Vec::new(),
                        keepdims: false,
                    }),
                    &[t],
                )?;
                let c = cx.constant(coeff)?;
                let term = cx.binary(BinaryOp::Mul, s, c)?;
                *objective = cx.binary(BinaryOp::Add, *objective, term)?;
            }
        }
        Ok(())
    };
    build(&mut graph, &mut objective).map_err(|e| internal(span, e))?;
    let mut wrt: Vec<NodeId> = net.params.iter().map(|p| p.node).collect();
    let mut inputs = Vec::new();
    for name in &opts.inputs {
        let Some(input) = net.inputs.iter().find(|i| &i.name == name) else {
            return Err(Diagnostic::new(
                ErrorKind::UnknownName,
                span,
                format!("no input named `{name}` to differentiate with respect to"),
            ));
        };
        inputs.push((name.clone(), input.node));
        wrt.push(input.node);
    }
    let grads = gradients(&mut graph, objective, &wrt)?;
    // Gradient rules build every operand's gradient; drop the ones nothing
    // asked for (such as the gradient of the input images).
    let mut live_targets = grads.clone();
    live_targets.push(objective);
    live_targets.extend(net.outputs.iter().map(|o| o.node));
    live_targets.extend(net.loss_decl.scores);
    let state_updates: Vec<(String, NodeId)> = if net.is_inference() {
        Vec::new()
    } else {
        net.states
            .iter()
            .map(|s| (s.name.clone(), s.update))
            .collect()
    };
    live_targets.extend(state_updates.iter().map(|s| s.1));
    let live = graph.ancestors(&live_targets);
    graph.remove_dead_after(forward_len, &live);
    let np = net.params.len();
    for (p, &g) in net.params.iter().zip(&grads) {
        graph.set_name(g, &format!("grad {}", p.name));
    }
    Ok(TrainingGraph {
        forward_len,
        loss: net.loss,
        objective,
        params: net
            .params
            .iter()
            .zip(&grads)
            .map(|(p, &g)| (p.name.clone(), p.node, g))
            .collect(),
        inputs: inputs
            .into_iter()
            .zip(&grads[np..])
            .map(|((n, node), &g)| (n, node, g))
            .collect(),
        embedded: Vec::new(),
        outputs: net
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.node))
            .collect(),
        scores: net.loss_decl.scores,
        states: net
            .states
            .iter()
            .map(|s| (s.name.clone(), s.shape.numel(1)))
            .collect(),
        state_updates,
        graph,
    })
}
