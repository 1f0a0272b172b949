//! The reference interpreter: evaluates any graph in f64 on ndarray, forward
//! and backward alike (the backward pass is just more graph). It asks each op
//! for its semantics and is the oracle every other stage is tested against.

use crate::graph::{Dim, Graph, NodeId};
use crate::ops::{loss::class_index, EvalCtx, LeafOp, Op, StepKey, Tensor};
use std::collections::HashMap;

/// Why an evaluation could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// An input, label or parameter was not given a value.
    #[error("no value bound for `{0}`")]
    Unbound(String),
    /// A bound value has the wrong shape.
    #[error("`{name}` is declared {expected} but was given shape {found:?}")]
    Shape {
        /// The leaf's name.
        name: String,
        /// The declared shape.
        expected: String,
        /// The given shape.
        found: Vec<usize>,
    },
    /// Two bound values disagree about the batch size.
    #[error("`{name}` implies batch size {found}, but an earlier value implies {expected}")]
    Batch {
        /// The leaf whose shape disagreed.
        name: String,
        /// The batch size seen first.
        expected: usize,
        /// The batch size this leaf implies.
        found: usize,
    },
    /// A label is not a class index.
    #[error("`{name}`: {message}")]
    Label {
        /// The label leaf's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// An op failed (an invariant broke).
    #[error("node {node} ({op}): {message}")]
    Op {
        /// The node index.
        node: usize,
        /// The op.
        op: String,
        /// What failed.
        message: String,
    },
}

/// The value of every node after an evaluation.
#[derive(Debug, Clone)]
pub struct Values {
    values: Vec<Option<Tensor>>,
    /// The batch size the evaluation bound.
    pub batch: usize,
}

impl Values {
    /// The value of a node.
    pub fn get(&self, id: NodeId) -> &Tensor {
        self.values[id.index()]
            .as_ref()
            .unwrap_or_else(|| panic!("node {} was not evaluated", id.index()))
    }

    /// The value of a scalar node.
    pub fn scalar(&self, id: NodeId) -> f64 {
        self.get(id).iter().next().copied().unwrap_or(f64::NAN)
    }
}

/// Evaluates every node of `graph` with inputs, labels, parameters and state
/// bound by name. The batch size is read off the bound values (1 if no value
/// has a batch dimension). Dropout masks are those of step 0 of seed 0; see
/// [`evaluate_at`].
pub fn evaluate(graph: &Graph, bindings: &HashMap<String, Tensor>) -> Result<Values, InterpError> {
    evaluate_at(graph, bindings, StepKey::default())
}

/// [`evaluate`] as the training step of `key` (seed, step and the global
/// index of the batch's first sample), which fixes every dropout mask.
pub fn evaluate_at(
    graph: &Graph,
    bindings: &HashMap<String, Tensor>,
    key: StepKey,
) -> Result<Values, InterpError> {
    let batch = infer_batch(graph, bindings)?;
    let cx = EvalCtx { batch, key };
    let max = graph.ids().map(|i| i.index() + 1).max().unwrap_or(0);
    let mut values: Vec<Option<Tensor>> = vec![None; max];
    for id in graph.ids() {
        let node = graph.node(id);
        let v = match &node.op {
            Op::Leaf(
                leaf @ (LeafOp::Input { .. }
                | LeafOp::Label { .. }
                | LeafOp::Tokens { .. }
                | LeafOp::Param { .. }
                | LeafOp::State { .. }
                | LeafOp::Frozen { .. }),
            ) => {
                let name = leaf.name().unwrap_or_default();
                let v = bindings
                    .get(name)
                    .ok_or_else(|| InterpError::Unbound(name.to_string()))?;
                if let LeafOp::Label { classes, .. } | LeafOp::Tokens { classes, .. } = leaf {
                    for &l in v.iter() {
                        class_index(l, *classes).map_err(|e| InterpError::Label {
                            name: name.to_string(),
                            message: e.message,
                        })?;
                    }
                }
                v.clone()
            }
            op => {
                let operands = graph.operands(id);
                let inputs: Vec<&Tensor> = operands
                    .iter()
                    .map(|o| values[o.index()].as_ref().expect("operands precede users"))
                    .collect();
                op.eval(&inputs, &cx).map_err(|e| InterpError::Op {
                    node: id.index(),
                    op: op.to_string(),
                    message: e.message,
                })?
            }
        };
        values[id.index()] = Some(v);
    }
    Ok(Values { values, batch })
}

fn infer_batch(graph: &Graph, bindings: &HashMap<String, Tensor>) -> Result<usize, InterpError> {
    let mut batch: Option<usize> = None;
    for id in graph.ids() {
        let Op::Leaf(leaf) = &graph.node(id).op else {
            continue;
        };
        let (name, shape) = match leaf {
            LeafOp::Input { name, shape }
            | LeafOp::Label { name, shape, .. }
            | LeafOp::Tokens { name, shape, .. }
            | LeafOp::Param { name, shape }
            | LeafOp::State { name, shape }
            | LeafOp::Frozen { name, shape } => (name, shape),
            LeafOp::Constant { .. } => continue,
        };
        let Some(v) = bindings.get(name) else {
            continue;
        };
        let mismatch = || InterpError::Shape {
            name: name.clone(),
            expected: shape.to_string(),
            found: v.shape().to_vec(),
        };
        if v.ndim() != shape.rank() {
            return Err(mismatch());
        }
        for (d, &n) in shape.dims().iter().zip(v.shape()) {
            match *d {
                Dim::Fixed(f) if f != n => return Err(mismatch()),
                Dim::Batch => match batch {
                    None => batch = Some(n),
                    Some(b) if b != n => {
                        return Err(InterpError::Batch {
                            name: name.clone(),
                            expected: b,
                            found: n,
                        })
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(batch.unwrap_or(1))
}
