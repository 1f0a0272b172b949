//! Leaves: the values a graph starts from. Inputs, labels and parameters are
//! bound by whoever evaluates the graph; constants carry their value, scaled by
//! a power of the batch size so that means over `batch` stay symbolic.

use super::{EvalCtx, OpError, Tensor};
use crate::graph::{DType, Shape, TensorType};
use ndarray::{ArrayD, IxDyn};
use std::fmt;

/// A leaf of the graph. Constants compare and hash by the bits of their
/// value, so CSE can key on ops.
#[derive(Clone, Debug)]
pub enum LeafOp {
    /// A float input fed each step.
    Input {
        /// The declared name.
        name: String,
        /// The declared shape.
        shape: Shape,
    },
    /// Integer class labels fed each step.
    Label {
        /// The declared name.
        name: String,
        /// The declared shape.
        shape: Shape,
        /// Number of classes.
        classes: usize,
    },
    /// Integer token ids fed each step with the float inputs (so
    /// `predict` has them too): `input tokens: class[batch, 16] of 10;`.
    Tokens {
        /// The declared name.
        name: String,
        /// The declared shape.
        shape: Shape,
        /// Number of distinct ids.
        classes: usize,
    },
    /// A trained parameter.
    Param {
        /// The parameter's name (also its checkpoint tensor name).
        name: String,
        /// Its shape (never mentions `batch`).
        shape: Shape,
    },
    /// Model state that is not trained: a batch norm's running statistics.
    /// Read by inference, updated by the training step, saved in checkpoints.
    State {
        /// Its name (also its checkpoint tensor name).
        name: String,
        /// Its shape (never mentions `batch`).
        shape: Shape,
    },
    /// A read-only tensor loaded from a file: a spliced teacher network's
    /// parameter or running statistic. Bound like a parameter, but never
    /// differentiated, trained or saved with the network.
    Frozen {
        /// Its name (`Teacher.conv1.weight`).
        name: String,
        /// Its shape (never mentions `batch`).
        shape: Shape,
    },
    /// A scalar `value * batch^batch_pow`.
    Constant {
        /// The fixed factor.
        value: f64,
        /// Power of the batch size the value is multiplied by.
        batch_pow: i32,
    },
}

impl PartialEq for LeafOp {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                LeafOp::Constant {
                    value: a,
                    batch_pow: p,
                },
                LeafOp::Constant {
                    value: b,
                    batch_pow: q,
                },
            ) => a.to_bits() == b.to_bits() && p == q,
            (LeafOp::Input { name: a, shape: s }, LeafOp::Input { name: b, shape: t })
            | (LeafOp::Param { name: a, shape: s }, LeafOp::Param { name: b, shape: t })
            | (LeafOp::State { name: a, shape: s }, LeafOp::State { name: b, shape: t })
            | (LeafOp::Frozen { name: a, shape: s }, LeafOp::Frozen { name: b, shape: t }) => {
                a == b && s == t
            }
            (
                LeafOp::Label {
                    name: a,
                    shape: s,
                    classes: c,
                },
                LeafOp::Label {
                    name: b,
                    shape: t,
                    classes: d,
                },
            ) => a == b && s == t && c == d,
            (
                LeafOp::Tokens {
                    name: a,
                    shape: s,
                    classes: c,
                },
                LeafOp::Tokens {
                    name: b,
                    shape: t,
                    classes: d,
                },
            ) => a == b && s == t && c == d,
            _ => false,
        }
    }
}

impl Eq for LeafOp {}

impl std::hash::Hash for LeafOp {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            LeafOp::Input { name, shape }
            | LeafOp::Param { name, shape }
            | LeafOp::State { name, shape }
            | LeafOp::Frozen { name, shape } => {
                name.hash(state);
                shape.hash(state);
            }
            LeafOp::Label {
                name,
                shape,
                classes,
            }
            | LeafOp::Tokens {
                name,
                shape,
                classes,
            } => {
                name.hash(state);
                shape.hash(state);
                classes.hash(state);
            }
            LeafOp::Constant { value, batch_pow } => {
                value.to_bits().hash(state);
                batch_pow.hash(state);
            }
        }
    }
}

impl LeafOp {
    /// A plain scalar constant.
    pub fn scalar(value: f64) -> Self {
        LeafOp::Constant {
            value,
            batch_pow: 0,
        }
    }

    /// The leaf's type.
    pub fn infer(&self) -> TensorType {
        match self {
            LeafOp::Input { shape, .. }
            | LeafOp::Param { shape, .. }
            | LeafOp::State { shape, .. }
            | LeafOp::Frozen { shape, .. } => TensorType::f32(shape.clone()),
            LeafOp::Label { shape, classes, .. } | LeafOp::Tokens { shape, classes, .. } => {
                TensorType {
                    dtype: DType::Class { classes: *classes },
                    shape: shape.clone(),
                }
            }
            LeafOp::Constant { .. } => TensorType::scalar(),
        }
    }

    /// The value of a constant; other leaves are bound by the interpreter.
    pub fn eval(&self, cx: &EvalCtx) -> Result<Tensor, OpError> {
        match self {
            LeafOp::Constant { value, batch_pow } => {
                let v = value * (cx.batch as f64).powi(*batch_pow);
                Ok(ArrayD::from_elem(IxDyn(&[]), v))
            }
            other => Err(OpError::internal(format!(
                "{other} has no value of its own; it must be bound"
            ))),
        }
    }

    /// The declared name of an input, label, parameter or state.
    pub fn name(&self) -> Option<&str> {
        match self {
            LeafOp::Input { name, .. }
            | LeafOp::Label { name, .. }
            | LeafOp::Tokens { name, .. }
            | LeafOp::Param { name, .. }
            | LeafOp::State { name, .. }
            | LeafOp::Frozen { name, .. } => Some(name),
            LeafOp::Constant { .. } => None,
        }
    }
}

impl fmt::Display for LeafOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafOp::Input { name, .. } => write!(f, "input {name}"),
            LeafOp::Label { name, .. } => write!(f, "label {name}"),
            LeafOp::Tokens { name, .. } => write!(f, "input {name}"),
            LeafOp::Param { name, .. } => write!(f, "param {name}"),
            LeafOp::State { name, .. } => write!(f, "state {name}"),
            LeafOp::Frozen { name, .. } => write!(f, "frozen {name}"),
            LeafOp::Constant {
                value,
                batch_pow: 0,
            } => write!(f, "{value}"),
            LeafOp::Constant { value, batch_pow } => write!(f, "{value}·batch^{batch_pow}"),
        }
    }
}
