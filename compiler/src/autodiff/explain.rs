//! The explanation graph: the gradient of a network's prediction with
//! respect to its float inputs, for attributions (saliency, gradient ×
//! input, integrated gradients, SmoothGrad).
//!
//! The prediction is a tensor, so it is first made a scalar with a
//! cotangent the caller feeds: objective = Σ scores · cotangent. Its
//! gradient with respect to an input is the vector-Jacobian product
//! cotangentᵀ · ∂scores/∂input, per sample (samples do not mix in an
//! inference graph), which is ∂score_c/∂input for a one-hot cotangent on
//! class `c`. The same reverse pass as training builds it; no parameter
//! gradient is kept.

use super::{gradients, internal};
use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::graph::NodeId;
use crate::ir::{InputKind, Network, TrainingGraph};
use crate::ops::{BinaryOp, GradCtx, LeafOp, Op, ReduceKind, ReduceOp};

/// The name of the cotangent input of an explanation graph (and of the
/// generated entry point's argument).
pub const COTANGENT: &str = "cotangent";

/// The explanation graph of `net` (its inference form, for a modal
/// network): the loss's prediction (`net.loss_decl.scores`) as the one
/// output `scores`, a cotangent input [`COTANGENT`] of the prediction's
/// shape, and in `inputs` the gradient of Σ scores · cotangent with respect
/// to every float input the prediction reads. Token inputs (class ids)
/// have no gradient and are left out. Parameters are listed (the layout
/// places them) with themselves as their "gradient": none is computed.
pub fn input_gradient_graph(net: &Network) -> Result<TrainingGraph, Diagnostic> {
    let Some(scores) = net.loss_decl.scores else {
        return Err(Diagnostic::new(
            ErrorKind::Invalid,
            net.span,
            format!(
                "cannot explain `{}`: its loss compares no prediction (explain needs a \
                 classification, binary or regression loss)",
                net.name
            ),
        ));
    };
    let mut graph = net.graph.clone();
    let forward_len = graph.len();
    let read = graph.ancestors(&[scores]);
    let floats: Vec<(String, NodeId)> = net
        .inputs
        .iter()
        .filter(|i| i.kind == InputKind::Features && read.contains(&i.node.index()))
        .filter(|i| matches!(graph.node(i.node).op, Op::Leaf(LeafOp::Input { .. })))
        .map(|i| (i.name.clone(), i.node))
        .collect();
    if floats.is_empty() {
        return Err(Diagnostic::new(
            ErrorKind::Invalid,
            net.span,
            format!(
                "cannot explain `{}`: its prediction reads no float input (token ids have no \
                 gradient; attribute to the embeddings instead)",
                net.name
            ),
        ));
    }
    if let Some(clash) = net.inputs.iter().find(|i| i.name == COTANGENT) {
        return Err(Diagnostic::new(
            ErrorKind::Invalid,
            clash.span,
            format!("an input named `{COTANGENT}` collides with the explain entry point's argument; rename it"),
        ));
    }
    let span = graph.node(scores).span;
    let shape = graph.ty(scores).shape.clone();
    let objective = (|| {
        let cot = graph.add(
            Op::Leaf(LeafOp::Input {
                name: COTANGENT.to_string(),
                shape,
            }),
            &[],
            span,
        )?;
        let mut cx = GradCtx::new(&mut graph, span);
        let product = cx.binary(BinaryOp::Mul, scores, cot)?;
        cx.add(
            Op::Reduce(ReduceOp {
                kind: ReduceKind::Sum,
                axes: Vec::new(),
                keepdims: false,
            }),
            &[product],
        )
    })()
    .map_err(|e| internal(span, e))?;
    let wrt: Vec<NodeId> = floats.iter().map(|f| f.1).collect();
    let grads = gradients(&mut graph, objective, &wrt)?;
    let mut live_targets = grads.clone();
    live_targets.push(scores);
    live_targets.push(objective);
    let live = graph.ancestors(&live_targets);
    graph.remove_dead_after(forward_len, &live);
    for ((name, _), &g) in floats.iter().zip(&grads) {
        graph.set_name(g, &format!("d scores / d {name}"));
    }
    Ok(TrainingGraph {
        forward_len,
        loss: objective,
        objective,
        params: net
            .params
            .iter()
            .map(|p| (p.name.clone(), p.node, p.node))
            .collect(),
        inputs: floats
            .into_iter()
            .zip(grads)
            .map(|((n, node), g)| (n, node, g))
            .collect(),
        outputs: vec![("scores".to_string(), scores)],
        scores: Some(scores),
        states: net
            .states
            .iter()
            .map(|s| (s.name.clone(), s.shape.numel(1)))
            .collect(),
        state_updates: Vec::new(),
        graph,
    })
}
