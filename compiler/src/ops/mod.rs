//! The ops. Each op family lives in one file with its four faces side by side:
//! the shape rule (`infer`), the f64 semantics (`eval`), the gradient rule
//! (`grad`, in terms of other ops) and the surface functions that name it in
//! the language. The stages (lower, autodiff, interp) are drivers that ask the
//! op; [`Op`] only dispatches to the family.

pub mod conv;
pub mod elementwise;
pub mod grad;
pub mod kernel;
pub mod leaf;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod quant;
pub mod reduce;
pub mod sequence;
pub mod shape;
pub mod signature;
pub mod softmax;

pub use conv::{ConvOp, ConvParams, PoolParams};
pub use elementwise::{BinaryOp, UnaryOp};
pub use grad::GradCtx;
pub use kernel::Kernel;
pub use leaf::LeafOp;
pub use loss::LossOp;
pub use matmul::Matmul;
pub use norm::NormOp;
pub use quant::QuantOp;
pub use reduce::{ReduceKind, ReduceOp};
pub use sequence::SeqOp;
pub use shape::ShapeOp;
pub use signature::{ArgKind, ArgValue, Args, Function, Lit, Param};
pub use softmax::{SoftmaxKind, SoftmaxOp};

use crate::graph::{DType, NodeId, Shape, TensorType};
use ndarray::ArrayD;
use std::fmt;

/// A tensor value in the reference interpreter.
pub type Tensor = ArrayD<f64>;

/// What an op's shape rule or gradient rule reports when it cannot proceed.
#[derive(Clone, Debug, PartialEq)]
pub struct OpError {
    /// The class of the error (shape, type or argument).
    pub kind: crate::diagnostic::ErrorKind,
    /// What was expected and what was found.
    pub message: String,
    /// The operand the error is about, where it is about one.
    pub operand: Option<usize>,
    /// A suggestion for the fix.
    pub help: Option<String>,
}

impl OpError {
    /// A shape error.
    pub fn shape(message: impl Into<String>) -> Self {
        OpError {
            kind: crate::diagnostic::ErrorKind::ShapeMismatch,
            message: message.into(),
            operand: None,
            help: None,
        }
    }

    /// An argument error.
    pub fn argument(message: impl Into<String>) -> Self {
        OpError {
            kind: crate::diagnostic::ErrorKind::BadArgument,
            ..OpError::shape(message)
        }
    }

    /// An internal error: an invariant of nnc did not hold.
    pub fn internal(message: impl Into<String>) -> Self {
        OpError {
            kind: crate::diagnostic::ErrorKind::Internal,
            ..OpError::shape(message)
        }
    }

    /// Names the operand the error concerns.
    pub fn at(mut self, operand: usize) -> Self {
        self.operand = Some(operand);
        self
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// What evaluation needs besides operand values.
#[derive(Clone, Copy, Debug)]
pub struct EvalCtx {
    /// The batch size this evaluation binds `batch` to.
    pub batch: usize,
    /// Which training step this is (dropout masks depend on it).
    pub key: StepKey,
}

impl EvalCtx {
    /// An evaluation at `batch` with the default step key.
    pub fn new(batch: usize) -> Self {
        EvalCtx {
            batch,
            key: StepKey::default(),
        }
    }
}

/// What makes a training step's random choices (dropout masks) unique: the
/// run's seed, the optimizer step, and the global index of the first sample
/// of the evaluated batch (a data-parallel shard starts past 0). The same
/// fields as `nnc_runtime::model::StepKey`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepKey {
    /// The `train` block's seed.
    pub seed: u64,
    /// The optimizer step, from 0.
    pub step: u64,
    /// Global index of the batch's first sample.
    pub offset: u64,
}

/// An operation of the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Inputs, labels, parameters and constants.
    Leaf(LeafOp),
    /// One-operand elementwise functions.
    Unary(UnaryOp),
    /// Two-operand elementwise arithmetic with broadcasting.
    Binary(BinaryOp),
    /// Matrix product (batched over leading dimensions).
    Matmul(Matmul),
    /// Sum, mean and max over axes.
    Reduce(ReduceOp),
    /// Softmax and log-softmax along an axis.
    Softmax(SoftmaxOp),
    /// Reshape, transpose, broadcast and its adjoint.
    Shape(ShapeOp),
    /// Losses and label encodings.
    Loss(LossOp),
    /// Convolution and pooling over NCHW tensors, and their gradients.
    Conv(ConvOp),
    /// Batch normalisation and dropout (training and inference forms).
    Norm(NormOp),
    /// Layer norm, embeddings, concat and slice, the causal mask, and
    /// their gradients.
    Seq(SeqOp),
    /// Fake quantization (quantization-aware training) and its
    /// straight-through gradient's mask.
    Quant(QuantOp),
}

impl Op {
    /// The shape rule: the result type for these operand types, or why not.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
        let arity = self.arity();
        if inputs.len() != arity {
            return Err(OpError::internal(format!(
                "{self} takes {arity} operands, got {}",
                inputs.len()
            )));
        }
        match self {
            Op::Leaf(op) => Ok(op.infer()),
            Op::Unary(op) => op.infer(inputs[0]),
            Op::Binary(op) => op.infer(inputs[0], inputs[1]),
            Op::Matmul(op) => op.infer(inputs[0], inputs[1]),
            Op::Reduce(op) => op.infer(inputs[0]),
            Op::Softmax(op) => op.infer(inputs[0]),
            Op::Shape(op) => op.infer(inputs[0]),
            Op::Loss(op) => op.infer(inputs),
            Op::Conv(op) => op.infer(inputs),
            Op::Norm(op) => op.infer(inputs),
            Op::Seq(op) => op.infer(inputs),
            Op::Quant(op) => op.infer(inputs),
        }
    }

    /// Number of operands.
    pub fn arity(&self) -> usize {
        match self {
            Op::Leaf(_) => 0,
            Op::Unary(_) | Op::Reduce(_) | Op::Softmax(_) | Op::Shape(_) => 1,
            Op::Binary(_) | Op::Matmul(_) => 2,
            Op::Loss(op) => op.arity(),
            Op::Conv(op) => op.arity(),
            Op::Norm(op) => op.arity(),
            Op::Seq(op) => op.arity(),
            Op::Quant(op) => op.arity(),
        }
    }

    /// The f64 semantics. Leaves other than constants are bound by the
    /// interpreter, not computed here.
    pub fn eval(&self, inputs: &[&Tensor], cx: &EvalCtx) -> Result<Tensor, OpError> {
        match self {
            Op::Leaf(op) => op.eval(cx),
            Op::Unary(op) => Ok(op.eval(inputs[0])),
            Op::Binary(op) => op.eval(inputs[0], inputs[1]),
            Op::Matmul(op) => op.eval(inputs[0], inputs[1]),
            Op::Reduce(op) => Ok(op.eval(inputs[0])),
            Op::Softmax(op) => Ok(op.eval(inputs[0])),
            Op::Shape(op) => op.eval(inputs[0], cx),
            Op::Loss(op) => op.eval(inputs),
            Op::Conv(op) => op.eval(inputs),
            Op::Norm(op) => op.eval(inputs, cx),
            Op::Seq(op) => op.eval(inputs, cx),
            Op::Quant(op) => op.eval(inputs),
        }
    }

    /// The gradient rule: given the gradient `dout` of the objective with
    /// respect to this node's result `out`, the gradients with respect to each
    /// operand (`None` where it is zero or the operand is not differentiable).
    pub fn grad(
        &self,
        cx: &mut GradCtx<'_>,
        inputs: &[NodeId],
        out: NodeId,
        dout: NodeId,
    ) -> Result<Vec<Option<NodeId>>, OpError> {
        match self {
            Op::Leaf(_) => Ok(Vec::new()),
            Op::Unary(op) => op.grad(cx, inputs[0], out, dout).map(|g| vec![g]),
            Op::Binary(op) => op.grad(cx, inputs[0], inputs[1], out, dout),
            Op::Matmul(op) => op.grad(cx, inputs[0], inputs[1], dout),
            Op::Reduce(op) => op.grad(cx, inputs[0], out, dout).map(|g| vec![g]),
            Op::Softmax(op) => op.grad(cx, inputs[0], out, dout).map(|g| vec![Some(g)]),
            Op::Shape(op) => op.grad(cx, inputs[0], dout).map(|g| vec![Some(g)]),
            Op::Loss(op) => op.grad(cx, inputs, dout),
            Op::Conv(op) => op.grad(cx, inputs, dout),
            Op::Norm(op) => op.grad(cx, inputs, dout),
            Op::Seq(op) => op.grad(cx, inputs, dout),
            Op::Quant(op) => op.grad(cx, inputs, dout),
        }
    }

    /// Floating-point operations for one evaluation with `batch = 1`: the
    /// basis of `nnc check`'s per-sample FLOP counts.
    pub fn flops(&self, inputs: &[&TensorType], out: &TensorType) -> u64 {
        // Saturating: a legal graph of huge tensors must not overflow the count.
        let n = |s: &Shape| s.numel(1) as u64;
        match self {
            Op::Leaf(_) => 0,
            Op::Unary(op) => op.flops_per_element().saturating_mul(n(&out.shape)),
            Op::Binary(_) => n(&out.shape),
            Op::Matmul(_) => {
                let k = match inputs[0].shape.dims().last() {
                    Some(d) => d.resolve(1) as u64,
                    None => 0,
                };
                k.saturating_mul(n(&out.shape)).saturating_mul(2)
            }
            Op::Reduce(_) => n(&inputs[0].shape),
            Op::Softmax(_) => n(&inputs[0].shape).saturating_mul(4),
            Op::Shape(ShapeOp::SumTo { .. }) => n(&inputs[0].shape),
            Op::Shape(_) => 0,
            Op::Loss(op) => op.flops(inputs),
            Op::Conv(op) => op.flops(inputs, out),
            Op::Norm(op) => op.flops(inputs),
            Op::Seq(op) => op.flops(inputs),
            Op::Quant(op) => op.flops(inputs),
        }
    }

    /// Elements of scratch space (fixed, not per sample) the node's f32
    /// kernel needs besides its operands and result: codegen places a
    /// region of this size in the workspace, live only while the kernel
    /// runs, and passes it as `scratch` (see [`Kernel`]). 0 for most ops;
    /// the convolutions' padded copies or im2col matrix.
    pub fn scratch(&self, inputs: &[&TensorType]) -> usize {
        match self {
            Op::Conv(op) => op.scratch(inputs),
            _ => 0,
        }
    }

    /// The codegen face: the body of the node's f32 kernel (see [`Kernel`]
    /// for the names it uses). `None` for leaves, which are operands, not
    /// kernels.
    pub fn emit(&self, k: &Kernel<'_>) -> Option<proc_macro2::TokenStream> {
        Some(match self {
            Op::Leaf(_) => return None,
            Op::Unary(op) => op.emit(k),
            Op::Binary(op) => op.emit(k),
            Op::Matmul(op) => op.emit(k),
            Op::Reduce(op) => op.emit(k),
            Op::Softmax(op) => op.emit(k),
            Op::Shape(op) => op.emit(k),
            Op::Loss(op) => op.emit(k),
            Op::Conv(op) => op.emit(k),
            Op::Norm(op) => op.emit(k),
            Op::Seq(op) => op.emit(k),
            Op::Quant(op) => op.emit(k),
        })
    }

    /// Whether this op is a leaf of the given kind of declaration.
    pub fn leaf(&self) -> Option<&LeafOp> {
        match self {
            Op::Leaf(l) => Some(l),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Leaf(op) => write!(f, "{op}"),
            Op::Unary(op) => write!(f, "{op}"),
            Op::Binary(op) => write!(f, "{op}"),
            Op::Matmul(_) => f.write_str("matmul"),
            Op::Reduce(op) => write!(f, "{op}"),
            Op::Softmax(op) => write!(f, "{op}"),
            Op::Shape(op) => write!(f, "{op}"),
            Op::Loss(op) => write!(f, "{op}"),
            Op::Conv(op) => write!(f, "{op}"),
            Op::Norm(op) => write!(f, "{op}"),
            Op::Seq(op) => write!(f, "{op}"),
            Op::Quant(op) => write!(f, "{op}"),
        }
    }
}

/// Every surface function that names a primitive op, from all families.
pub fn functions() -> impl Iterator<Item = &'static Function> {
    elementwise::FUNCTIONS
        .iter()
        .chain(matmul::FUNCTIONS)
        .chain(reduce::FUNCTIONS)
        .chain(softmax::FUNCTIONS)
        .chain(shape::FUNCTIONS)
        .chain(loss::FUNCTIONS)
        .chain(conv::FUNCTIONS)
        .chain(sequence::FUNCTIONS)
        .chain(quant::FUNCTIONS)
}

/// The functions `dense(..., activation: NAME)` accepts: shape-preserving
/// functions of one tensor (the elementwise ones and the softmaxes) whose
/// other parameters have defaults.
pub fn activations() -> impl Iterator<Item = &'static Function> {
    elementwise::FUNCTIONS
        .iter()
        .chain(softmax::FUNCTIONS)
        .filter(|f| f.params[1..].iter().all(|p| !p.required))
}

/// Requires an f32 operand: class labels are indices, not numbers.
pub(crate) fn expect_f32(ty: &TensorType, operand: usize, what: &str) -> Result<(), OpError> {
    match ty.dtype {
        DType::F32 => Ok(()),
        DType::Class { .. } => Err(OpError {
            kind: crate::diagnostic::ErrorKind::TypeMismatch,
            message: format!("{what} expects an f32 tensor, found class labels {ty}"),
            operand: Some(operand),
            help: Some(
                "labels are class indices; use them in cross_entropy(logits, labels) \
                 or turn them into floats with one_hot(labels)"
                    .to_string(),
            ),
        }
        .at(operand)),
    }
}

/// How an op takes part in a model's int8 inference plan (`nnc compile
/// --quantize int8`, `codegen::int8`): each op family declares it next to
/// its other faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8 {
    /// A product with an int8 kernel (dense `x @ weight`, `conv2d(x,
    /// weight)`), when its right operand is a parameter.
    Kernel,
    /// Fused into the epilogue of the int8 product it follows (a bias add,
    /// ReLU); ReLU after anything else is an f32 step.
    Epilogue,
    /// An f32 step of the plan, between int8 products (pooling, softmax).
    F32,
    /// The same elements in another shape: no step at all.
    Alias,
    /// No int8 lowering and no f32 step: an int8 plan refuses the model.
    None,
}

impl Op {
    /// This op's part in an int8 inference plan.
    pub fn int8(&self) -> Int8 {
        match self {
            Op::Matmul(m) => m.int8(),
            Op::Conv(c) => c.int8(),
            Op::Unary(u) => u.int8(),
            Op::Binary(b) => b.int8(),
            Op::Shape(s) => s.int8(),
            Op::Softmax(s) => s.int8(),
            Op::Norm(n) => n.int8(),
            _ => Int8::None,
        }
    }
}
