//! The training graph: a network's forward graph extended with its
//! backward pass, and the roots every consumer reads from it.

use super::train::Regularization;
use crate::graph::{Graph, NodeId};

/// Which gradients the training graph computes.
#[derive(Clone, Debug, Default)]
pub struct GradOptions {
    /// Loss penalties.
    pub regularization: Regularization,
    /// Also compute gradients with respect to these inputs (by name).
    pub inputs: Vec<String>,
}

/// A network's forward graph extended with the backward pass.
#[derive(Clone, Debug)]
pub struct TrainingGraph {
    /// Forward and backward nodes.
    pub graph: Graph,
    /// Number of nodes of the forward part (they come first).
    pub forward_len: usize,
    /// The data loss declared by `loss`.
    pub loss: NodeId,
    /// What is minimised: the loss plus regularisation.
    pub objective: NodeId,
    /// Each parameter's name, its node and its gradient node, in declaration order.
    pub params: Vec<(String, NodeId, NodeId)>,
    /// Requested input gradients: name, input node, gradient node.
    pub inputs: Vec<(String, NodeId, NodeId)>,
    /// In an explanation graph, the token inputs attributed through their
    /// embeddings: the token input's name and its embedding table's
    /// parameter. The lookup is cut: the graph's input `e_<name>` (the node
    /// of `inputs`' entry) stands for the gathered vectors (empty elsewhere).
    pub embedded: Vec<(String, String)>,
    /// The network's declared outputs: name and node.
    pub outputs: Vec<(String, NodeId)>,
    /// The prediction the loss scores (see `Network::loss_decl`), kept for
    /// the metrics' `loss_with_scores` and `predict_scores`.
    pub scores: Option<NodeId>,
    /// The network's state tensors (running statistics): name and element
    /// count, in the order of the flat state buffer.
    pub states: Vec<(String, usize)>,
    /// In a training-mode graph, for each state tensor the node computing
    /// the batch statistic its running value is blended towards (empty in
    /// an inference-mode graph).
    pub state_updates: Vec<(String, NodeId)>,
}

impl TrainingGraph {
    /// Per-sample FLOPs of the forward part and of the backward part.
    pub fn flops_per_sample(&self) -> (u64, u64) {
        let forward = self.graph.flops(0..self.forward_len);
        let total = self.graph.flops(0..usize::MAX);
        (forward, total.saturating_sub(forward))
    }

    /// Every node a consumer of the training graph reads: the loss, the
    /// objective, parameter and input gradients, and the outputs. Passes
    /// must keep them and map them to their new nodes.
    pub fn roots(&self) -> Vec<NodeId> {
        let mut r = vec![self.loss, self.objective];
        r.extend(self.params.iter().flat_map(|p| [p.1, p.2]));
        r.extend(self.inputs.iter().flat_map(|i| [i.1, i.2]));
        r.extend(self.outputs.iter().map(|o| o.1));
        r.extend(self.scores);
        r.extend(self.state_updates.iter().map(|s| s.1));
        r
    }
}
