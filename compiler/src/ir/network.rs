//! A lowered network and its declarations: what lowering produces and every
//! later stage reads. Nothing here computes; the graph is the IR proper.

use super::train::TrainConfig;
use crate::diagnostic::Span;
use crate::graph::{Graph, NodeId, Shape, TensorType};

/// A lowered source file.
#[derive(Clone, Debug)]
pub struct Module {
    /// Networks in source order.
    pub networks: Vec<Network>,
    /// Training configurations, one per network that has a `train` block.
    pub trains: Vec<TrainConfig>,
}

impl Module {
    /// The network of a name.
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The training configuration of a network, or the defaults.
    pub fn train_config(&self, network: &str) -> TrainConfig {
        self.trains
            .iter()
            .find(|t| t.network == network)
            .cloned()
            .unwrap_or_else(|| TrainConfig::defaults(network))
    }
}

/// Whether a fed tensor is a float input or class labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// `input`
    Features,
    /// `label`
    Labels,
}

/// A declared input or label.
#[derive(Clone, Debug)]
pub struct InputDecl {
    /// Its name.
    pub name: String,
    /// Features or labels.
    pub kind: InputKind,
    /// Its graph node.
    pub node: NodeId,
    /// Its type.
    pub ty: TensorType,
    /// The declaration.
    pub span: Span,
}

/// A trained parameter.
#[derive(Clone, Debug)]
pub struct ParamDecl {
    /// Its name: the checkpoint tensor name (`h1.weight` for a layer's).
    pub name: String,
    /// Its graph node.
    pub node: NodeId,
    /// Its shape.
    pub shape: Shape,
    /// How it is initialised.
    pub init: Init,
    /// Where it was declared (the layer call, for a layer's).
    pub span: Span,
}

/// A state tensor: a batch norm's running mean or variance. Not trained
/// and not touched by the optimizer; the training step computes `update`
/// (the batch's statistic) and the runtime blends it in,
/// `state = (1 - momentum) · state + momentum · update`.
#[derive(Clone, Debug)]
pub struct StateDecl {
    /// Its name: the checkpoint tensor name (`bn.running_mean`).
    pub name: String,
    /// Its leaf node.
    pub node: NodeId,
    /// Its shape.
    pub shape: Shape,
    /// Its initial value (0 for means, 1 for variances).
    pub init: f64,
    /// The weight of each step's statistic in the running average.
    pub momentum: f64,
    /// The node computing the batch statistic (training mode).
    pub update: NodeId,
    /// The layer call that declared it.
    pub span: Span,
}

/// A declared output.
#[derive(Clone, Debug)]
pub struct OutputDecl {
    /// Its name.
    pub name: String,
    /// Its graph node.
    pub node: NodeId,
    /// The declaration.
    pub span: Span,
}

/// A lowered, shape-checked network.
#[derive(Clone, Debug)]
pub struct Network {
    /// The network's name.
    pub name: String,
    /// The `network` block.
    pub span: Span,
    /// The forward graph.
    pub graph: Graph,
    /// Inputs and labels in declaration order.
    pub inputs: Vec<InputDecl>,
    /// Parameters in declaration order.
    pub params: Vec<ParamDecl>,
    /// Outputs in declaration order.
    pub outputs: Vec<OutputDecl>,
    /// The scalar loss node.
    pub loss: NodeId,
    /// State tensors in declaration order.
    pub states: Vec<StateDecl>,
    /// The modal nodes (dropout, batch norm) and the operands their
    /// inference form takes after their first (the running statistics).
    pub modal: Vec<(NodeId, Vec<NodeId>)>,
    /// Whether this is the inference form (`Network::for_inference`,
    /// defined with the lowering of modal ops).
    pub inference: bool,
    /// What the loss compares: which metrics describe the network.
    pub loss_decl: LossDecl,
    /// A spliced teacher's read-only tensors (`LeafOp::Frozen` leaves), in
    /// the order generated code lays them out; empty without `teacher:`.
    pub frozen: Vec<FrozenDecl>,
}

/// One read-only tensor of a spliced teacher: a parameter or running
/// statistic of the teacher network, loaded from its weights file, never
/// trained, never saved with the student.
#[derive(Clone, Debug, PartialEq)]
pub struct FrozenDecl {
    /// The leaf's name in the student's graph (`Teacher.conv1.weight`).
    pub name: String,
    /// The tensor's name in the teacher's weights file (`conv1.weight`).
    pub tensor: String,
    /// The leaf node.
    pub node: NodeId,
    /// Its shape.
    pub shape: Shape,
}

/// What a network's loss compares (found by `lower`): the contract's
/// [`nnc_spec::LossKind`] (with the index of the label or target input)
/// and the node of the prediction it scores, the logits of a
/// `cross_entropy` or the `pred` of an `mse`.
#[derive(Clone, Debug, PartialEq)]
pub struct LossDecl {
    /// Classification, binary, regression or another objective.
    pub kind: nnc_spec::LossKind,
    /// The prediction node (`None` for another objective).
    pub scores: Option<NodeId>,
}

impl Network {
    /// Whether the network behaves differently in training and inference.
    pub fn is_modal(&self) -> bool {
        !self.modal.is_empty()
    }

    /// Whether this is the inference-mode form of a network.
    pub fn is_inference(&self) -> bool {
        self.inference
    }

    /// Total number of trained scalars.
    pub fn param_count(&self) -> usize {
        self.params.iter().map(|p| p.shape.numel(1)).sum()
    }
}

/// How a parameter is initialised: the contract's type (`nnc-spec`), the
/// same value the runtime fills the tensor from.
pub use nnc_spec::Init;

/// The initializer when none is written: Glorot uniform for weights (rank
/// 2 or more, as Keras does), zeros for vectors and scalars.
pub fn default_init(shape: &Shape) -> Init {
    if shape.rank() >= 2 {
        Init::GlorotUniform
    } else {
        Init::Zeros
    }
}
