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
use crate::ops::{BinaryOp, GradCtx, LeafOp, Op, ReduceKind, ReduceOp, SeqOp};

/// The name of the cotangent input of an explanation graph (and of the
/// generated entry point's argument).
pub const COTANGENT: &str = "cotangent";

/// The explanation graph of `net` (its inference form, for a modal
/// network): the loss's prediction (`net.loss_decl.scores`) as the one
/// output `scores`, a cotangent input [`COTANGENT`] of the prediction's
/// shape, and in `inputs` the gradient of Σ scores · cotangent with respect
/// to every float input the prediction reads. Token inputs (class ids)
/// have no gradient: one read only through an embedding lookup of a
/// parameter is attributed through its embeddings (the lookup is cut, see
/// [`TrainingGraph::embedded`]); others are left out. Parameters are listed (the layout
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
    let features = || {
        net.inputs
            .iter()
            .filter(|i| i.kind == InputKind::Features && read.contains(&i.node.index()))
    };
    let mut floats: Vec<(String, NodeId)> = features()
        .filter(|i| matches!(graph.node(i.node).op, Op::Leaf(LeafOp::Input { .. })))
        .map(|i| (i.name.clone(), i.node))
        .collect();
    // A prediction that reads token ids only (a sequence model): each token
    // input read only through one embedding lookup of a parameter table is
    // cut there, a float input `e_<name>` standing for the gathered vectors
    // (Captum's LayerIntegratedGradients on the embedding layer), so that
    // attributions can move along a path of embeddings. Models with a float
    // input keep their entry point as it was: their token inputs are not
    // attributed.
    let mut embedded: Vec<(String, String)> = Vec::new();
    let tokens: Vec<_> = if floats.is_empty() {
        features().collect()
    } else {
        Vec::new()
    };
    for i in tokens {
        if !matches!(graph.node(i.node).op, Op::Leaf(LeafOp::Tokens { .. })) {
            continue;
        }
        let Some((gather, table)) = lookup(&graph, i.node, &read) else {
            continue;
        };
        let name = format!("e_{}", i.name);
        if let Some(clash) = net.inputs.iter().find(|j| j.name == name) {
            return Err(Diagnostic::new(
                ErrorKind::Invalid,
                clash.span,
                format!(
                    "an input named `{name}` collides with the embeddings of `{}` \
                     the explain entry point takes; rename it",
                    i.name
                ),
            ));
        }
        let shape = graph.ty(gather).shape.clone();
        let span = graph.node(gather).span;
        graph
            .replace(gather, Op::Leaf(LeafOp::Input { name, shape }), &[])
            .map_err(|e| internal(span, e))?;
        floats.push((i.name.clone(), gather));
        embedded.push((i.name.clone(), table));
    }
    if floats.is_empty() {
        return Err(Diagnostic::new(
            ErrorKind::Invalid,
            net.span,
            format!(
                "cannot explain `{}`: its prediction reads no float input (token ids have no \
                 gradient, and none is read only through one embedding lookup to attribute \
                 to its embeddings)",
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
        let what = if embedded.iter().any(|e| e.0 == *name) {
            format!("d scores / d embeddings of {name}")
        } else {
            format!("d scores / d {name}")
        };
        graph.set_name(g, &what);
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
        embedded,
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

/// The one embedding lookup through which the prediction (the nodes in
/// `read`) reads the token input `ids`, and its table's parameter name;
/// `None` when the ids are read any other way (then they are not
/// attributed).
fn lookup(
    graph: &crate::graph::Graph,
    ids: NodeId,
    read: &std::collections::BTreeSet<usize>,
) -> Option<(NodeId, String)> {
    let mut users: Vec<NodeId> = graph
        .users(ids)
        .into_iter()
        .filter(|u| read.contains(&u.index()))
        .collect();
    users.dedup();
    let [gather] = users[..] else {
        return None;
    };
    if !matches!(graph.node(gather).op, Op::Seq(SeqOp::Embedding)) {
        return None;
    }
    let operands = graph.operands(gather);
    if operands.get(1) != Some(&ids) || operands.first() == Some(&ids) {
        return None;
    }
    match &graph.node(operands[0]).op {
        Op::Leaf(LeafOp::Param { name, .. }) => Some((gather, name.clone())),
        _ => None,
    }
}
