//! Elementwise ops: unary functions and binary arithmetic with numpy-style
//! broadcasting.

use super::grad::GradCtx;
use super::kernel::Kernel;
use super::signature::{ArgKind, Args, Built, Function, Param};
use super::{expect_f32, LeafOp, Op, OpError, Tensor};
use crate::graph::{Dim, NodeId, Shape, TensorType};
use ndarray::{IxDyn, Zip};
use proc_macro2::TokenStream;
use quote::quote;
use std::f64::consts::{FRAC_1_SQRT_2, PI};
use std::fmt;

/// One-operand elementwise functions. Equality and hashing compare the
/// constant parameters by bits, so CSE can key on ops.
#[derive(Clone, Copy, Debug)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// Natural logarithm.
    Log,
    /// Square root.
    Sqrt,
    /// `|x|`
    Abs,
    /// `x^p` for a constant `p`.
    Pow(f64),
    /// `max(x, 0)`
    Relu,
    /// `x` for positive `x`, `alpha·x` otherwise.
    LeakyRelu(f64),
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `x·Φ(x)` with the exact normal CDF (PyTorch's default GELU).
    Gelu,
    /// Derivative of relu: 1 where `x > 0`, else 0.
    Step,
    /// Derivative of leaky relu: 1 where `x > 0`, else `alpha`.
    LeakyStep(f64),
    /// Derivative of abs: the sign of `x` (0 at 0).
    Sign,
    /// Derivative of gelu: `Φ(x) + x·φ(x)`.
    GeluGrad,
    /// `x`, through which no gradient flows: what a loss compares against
    /// but must not train (`distill`'s teacher logits).
    StopGradient,
}

impl UnaryOp {
    fn key(&self) -> (std::mem::Discriminant<Self>, u64) {
        let bits = match self {
            UnaryOp::Pow(v) | UnaryOp::LeakyRelu(v) | UnaryOp::LeakyStep(v) => v.to_bits(),
            _ => 0,
        };
        (std::mem::discriminant(self), bits)
    }
}

impl PartialEq for UnaryOp {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for UnaryOp {}

impl std::hash::Hash for UnaryOp {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// The standard normal density.
fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

/// The standard normal CDF.
fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + libm::erf(x * FRAC_1_SQRT_2))
}

impl UnaryOp {
    /// The function on one f64.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Pow(p) => x.powf(p),
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::LeakyRelu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a * x
                }
            }
            UnaryOp::Sigmoid => {
                // Two branches so that neither exp overflows.
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                }
            }
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Gelu => x * normal_cdf(x),
            UnaryOp::Step => f64::from(x > 0.0),
            UnaryOp::LeakyStep(a) => {
                if x > 0.0 {
                    1.0
                } else {
                    a
                }
            }
            UnaryOp::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            UnaryOp::GeluGrad => normal_cdf(x) + x * normal_pdf(x),
            UnaryOp::StopGradient => x,
        }
    }

    /// The shape rule: same shape, f32 only.
    pub fn infer(&self, x: &TensorType) -> Result<TensorType, OpError> {
        expect_f32(x, 0, &self.to_string())?;
        Ok(x.clone())
    }

    /// Elementwise evaluation.
    pub fn eval(&self, x: &Tensor) -> Tensor {
        x.mapv(|v| self.apply(v))
    }

    /// Rough cost per element (transcendentals count as one operation).
    pub fn flops_per_element(&self) -> u64 {
        1
    }

    /// The gradient rule, in terms of other ops.
    pub fn grad(
        &self,
        cx: &mut GradCtx<'_>,
        x: NodeId,
        y: NodeId,
        g: NodeId,
    ) -> Result<Option<NodeId>, OpError> {
        let d = match *self {
            UnaryOp::Neg => return cx.unary(UnaryOp::Neg, g).map(Some),
            UnaryOp::Exp => y,
            UnaryOp::Log => return cx.binary(BinaryOp::Div, g, x).map(Some),
            UnaryOp::Sqrt => {
                // d sqrt(x) = 1 / (2 sqrt(x)) = 0.5 / y
                let half = cx.constant(0.5)?;
                let hg = cx.binary(BinaryOp::Mul, g, half)?;
                return cx.binary(BinaryOp::Div, hg, y).map(Some);
            }
            UnaryOp::Abs => cx.unary(UnaryOp::Sign, x)?,
            UnaryOp::Pow(p) => {
                let xp = cx.unary(UnaryOp::Pow(p - 1.0), x)?;
                let c = cx.constant(p)?;
                cx.binary(BinaryOp::Mul, xp, c)?
            }
            // From the output, not the input (y > 0 exactly when x > 0): the
            // pre-activation then has one use and fuses into its producer.
            UnaryOp::Relu => cx.unary(UnaryOp::Step, y)?,
            UnaryOp::LeakyRelu(a) if a > 0.0 => cx.unary(UnaryOp::LeakyStep(a), y)?,
            UnaryOp::LeakyRelu(a) => cx.unary(UnaryOp::LeakyStep(a), x)?,
            UnaryOp::Sigmoid => {
                // y (1 - y)
                let one = cx.constant(1.0)?;
                let omy = cx.binary(BinaryOp::Sub, one, y)?;
                cx.binary(BinaryOp::Mul, y, omy)?
            }
            UnaryOp::Tanh => {
                // 1 - y²
                let one = cx.constant(1.0)?;
                let yy = cx.binary(BinaryOp::Mul, y, y)?;
                cx.binary(BinaryOp::Sub, one, yy)?
            }
            UnaryOp::Gelu => cx.unary(UnaryOp::GeluGrad, x)?,
            // Piecewise constant: the derivative is zero wherever it exists.
            UnaryOp::Step | UnaryOp::LeakyStep(_) | UnaryOp::Sign => return Ok(None),
            // By definition: the operand is a constant to what follows.
            UnaryOp::StopGradient => return Ok(None),
            UnaryOp::GeluGrad => {
                return Err(OpError::argument(
                    "the second derivative of gelu is not supported",
                ))
            }
        };
        cx.binary(BinaryOp::Mul, g, d).map(Some)
    }

    /// Whether the gradient rule exists (derivative helpers have none or a
    /// zero one), so whole-op gradient checks know what to expect.
    pub fn has_gradient(&self) -> bool {
        !matches!(self, UnaryOp::GeluGrad)
    }
}

impl UnaryOp {
    /// The f32 expression of the function applied to `x`.
    pub fn emit_expr(&self, rt: &TokenStream) -> TokenStream {
        let f = Kernel::f32;
        match *self {
            UnaryOp::Neg => quote!(-x),
            UnaryOp::Exp => quote!(x.exp()),
            UnaryOp::Log => quote!(x.ln()),
            UnaryOp::Sqrt => quote!(x.sqrt()),
            UnaryOp::Abs => quote!(x.abs()),
            UnaryOp::Pow(2.0) => quote!(x * x),
            UnaryOp::Pow(p) if p.fract() == 0.0 && p.abs() < 64.0 => {
                let p = p as i32;
                quote!(x.powi(#p))
            }
            UnaryOp::Pow(p) => {
                let p = f(p);
                quote!(x.powf(#p))
            }
            UnaryOp::Relu => quote!(x.max(0.0)),
            UnaryOp::LeakyRelu(a) => {
                let a = f(a);
                quote!(if x > 0.0 { x } else { #a * x })
            }
            UnaryOp::Sigmoid => quote!(#rt::kernels::sigmoid(x)),
            UnaryOp::Tanh => quote!(x.tanh()),
            UnaryOp::Gelu => quote!(#rt::kernels::gelu(x)),
            UnaryOp::Step => quote!(if x > 0.0 { 1.0 } else { 0.0 }),
            UnaryOp::LeakyStep(a) => {
                let a = f(a);
                quote!(if x > 0.0 { 1.0 } else { #a })
            }
            UnaryOp::Sign => quote!(if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }),
            UnaryOp::GeluGrad => quote!(#rt::kernels::gelu_grad(x)),
            // A call, not a bare `x`: a fused loop would end `let x = ..; x`
            // (clippy's let_and_return in the user's crate).
            UnaryOp::StopGradient => quote!(::core::convert::identity(x)),
        }
    }

    /// The codegen face: one loop over the elements.
    pub fn emit(&self, k: &Kernel<'_>) -> TokenStream {
        let e = self.emit_expr(k.rt);
        quote! {
            for (o, &x) in out.iter_mut().zip(x0) {
                *o = #e;
            }
        }
    }
}

impl fmt::Display for UnaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnaryOp::Neg => f.write_str("neg"),
            UnaryOp::Exp => f.write_str("exp"),
            UnaryOp::Log => f.write_str("log"),
            UnaryOp::Sqrt => f.write_str("sqrt"),
            UnaryOp::Abs => f.write_str("abs"),
            UnaryOp::Pow(p) => write!(f, "pow({p})"),
            UnaryOp::Relu => f.write_str("relu"),
            UnaryOp::LeakyRelu(a) => write!(f, "leaky_relu({a})"),
            UnaryOp::Sigmoid => f.write_str("sigmoid"),
            UnaryOp::Tanh => f.write_str("tanh"),
            UnaryOp::Gelu => f.write_str("gelu"),
            UnaryOp::Step => f.write_str("step"),
            UnaryOp::LeakyStep(a) => write!(f, "leaky_step({a})"),
            UnaryOp::Sign => f.write_str("sign"),
            UnaryOp::GeluGrad => f.write_str("gelu_grad"),
            UnaryOp::StopGradient => f.write_str("stop_gradient"),
        }
    }
}

/// Two-operand elementwise arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// 1 where `a == b`, else 0: the mask that routes max's gradient.
    Equal,
}

impl BinaryOp {
    /// The operation on two f64.
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Equal => f64::from(u8::from(a == b)),
        }
    }

    /// The operator symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Equal => "==",
        }
    }

    /// The shape rule: numpy broadcasting, f32 only.
    pub fn infer(&self, a: &TensorType, b: &TensorType) -> Result<TensorType, OpError> {
        let what = format!("`{}`", self.symbol());
        expect_f32(a, 0, &what)?;
        expect_f32(b, 1, &what)?;
        broadcast_shapes(&a.shape, &b.shape)
            .map(TensorType::f32)
            .map_err(|m| OpError::shape(format!("cannot broadcast {a} {} {b}: {m}", self.symbol())))
    }

    /// Elementwise evaluation with broadcasting.
    pub fn eval(&self, a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
        let shape = broadcast_concrete(a.shape(), b.shape()).ok_or_else(|| {
            OpError::shape(format!(
                "cannot broadcast {:?} and {:?}",
                a.shape(),
                b.shape()
            ))
        })?;
        let (Some(av), Some(bv)) = (a.broadcast(IxDyn(&shape)), b.broadcast(IxDyn(&shape))) else {
            return Err(OpError::shape("broadcast failed"));
        };
        let op = *self;
        Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| op.apply(x, y)))
    }

    /// The gradient rule; broadcast operands get their gradient summed back
    /// to their own shape.
    pub fn grad(
        &self,
        cx: &mut GradCtx<'_>,
        a: NodeId,
        b: NodeId,
        out: NodeId,
        g: NodeId,
    ) -> Result<Vec<Option<NodeId>>, OpError> {
        let (ga, gb) = match self {
            BinaryOp::Add => (g, g),
            BinaryOp::Sub => (g, cx.unary(UnaryOp::Neg, g)?),
            BinaryOp::Mul => (
                cx.binary(BinaryOp::Mul, g, b)?,
                cx.binary(BinaryOp::Mul, g, a)?,
            ),
            BinaryOp::Div => {
                // d/db (a/b) = -a/b² = -out/b
                let ga = cx.binary(BinaryOp::Div, g, b)?;
                let t = cx.binary(BinaryOp::Mul, ga, out)?;
                (ga, cx.unary(UnaryOp::Neg, t)?)
            }
            // Piecewise constant: zero wherever the derivative exists.
            BinaryOp::Equal => return Ok(vec![None, None]),
        };
        let sa = cx.ty(a).shape.clone();
        let sb = cx.ty(b).shape.clone();
        Ok(vec![Some(cx.sum_to(ga, &sa)?), Some(cx.sum_to(gb, &sb)?)])
    }
}

impl BinaryOp {
    /// The f32 expression combining the left `l` and right `r` operands.
    pub fn emit_expr(&self) -> TokenStream {
        match self {
            BinaryOp::Add => quote!(l + r),
            BinaryOp::Sub => quote!(l - r),
            BinaryOp::Mul => quote!(l * r),
            BinaryOp::Div => quote!(l / r),
            BinaryOp::Equal => quote!(if l == r { 1.0 } else { 0.0 }),
        }
    }

    /// The codegen face: a flat loop when the shapes agree or one side is a
    /// single value; the runtime's broadcasting kernel otherwise.
    pub fn emit(&self, k: &Kernel<'_>) -> TokenStream {
        let e = self.emit_expr();
        let (sa, sb) = (&k.inputs[0].shape, &k.inputs[1].shape);
        if sa == sb {
            quote! {
                for ((o, &l), &r) in out.iter_mut().zip(x0).zip(x1) {
                    *o = #e;
                }
            }
        } else if Kernel::is_scalar(sb) && sa == &k.out.shape {
            quote! {
                let r = x1[0];
                for (o, &l) in out.iter_mut().zip(x0) {
                    *o = #e;
                }
            }
        } else if Kernel::is_scalar(sa) && sb == &k.out.shape {
            quote! {
                let l = x0[0];
                for (o, &r) in out.iter_mut().zip(x1) {
                    *o = #e;
                }
            }
        } else {
            let rt = k.rt;
            let (od, ad, bd) = (
                Kernel::dims(&k.out.shape),
                Kernel::dims(sa),
                Kernel::dims(sb),
            );
            quote! {
                #rt::kernels::zip_broadcast(out, &#od, x0, &#ad, x1, &#bd, |l, r| #e);
            }
        }
    }
}

impl fmt::Display for BinaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Equal => "equal",
        })
    }
}

/// numpy broadcasting of two symbolic shapes. `batch` only matches `batch`
/// or 1: its size is unknown, so it cannot be assumed equal to any number.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let mut out = vec![Dim::Fixed(1); rank];
    for (i, slot) in out.iter_mut().enumerate() {
        let da = dim_from_end(a, rank - 1 - i);
        let db = dim_from_end(b, rank - 1 - i);
        *slot = match (da, db) {
            (x, y) if x == y => x,
            (Dim::Fixed(1), y) => y,
            (x, Dim::Fixed(1)) => x,
            (x, y) => {
                return Err(format!(
                    "dimension {} is {x} on the left and {y} on the right",
                    i as i64 - rank as i64
                ))
            }
        };
    }
    Ok(Shape(out))
}

fn dim_from_end(s: &Shape, k: usize) -> Dim {
    if k < s.rank() {
        s.dims()[s.rank() - 1 - k]
    } else {
        Dim::Fixed(1)
    }
}

/// numpy broadcasting of concrete shapes; `None` if incompatible.
pub fn broadcast_concrete(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], k: usize| if k < s.len() { s[s.len() - 1 - k] } else { 1 };
    let mut out = vec![0; rank];
    for (i, slot) in out.iter_mut().enumerate() {
        let k = rank - 1 - i;
        let (x, y) = (at(a, k), at(b, k));
        *slot = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return None;
        };
    }
    Some(out)
}

const X: Param = Param::req("x", ArgKind::Tensor);

macro_rules! unary_fn {
    ($name:literal, $op:expr, $doc:literal) => {
        Function {
            name: $name,
            params: &[X],
            doc: $doc,
            build: |a: &Args| -> Result<Built, OpError> {
                Ok((Op::Unary($op), vec![a.tensor(0)?.0]))
            },
        }
    };
}

/// The elementwise functions of the language.
pub static FUNCTIONS: &[Function] = &[
    unary_fn!("relu", UnaryOp::Relu, "max(x, 0)"),
    unary_fn!("sigmoid", UnaryOp::Sigmoid, "1 / (1 + exp(-x))"),
    unary_fn!("tanh", UnaryOp::Tanh, "hyperbolic tangent"),
    unary_fn!("gelu", UnaryOp::Gelu, "x·Φ(x), the exact (erf) form"),
    unary_fn!("exp", UnaryOp::Exp, "e^x"),
    unary_fn!("log", UnaryOp::Log, "natural logarithm"),
    unary_fn!("sqrt", UnaryOp::Sqrt, "square root"),
    unary_fn!("abs", UnaryOp::Abs, "absolute value"),
    unary_fn!("neg", UnaryOp::Neg, "-x"),
    Function {
        name: "leaky_relu",
        params: &[X, Param::opt("alpha", ArgKind::Float)],
        doc: "x if x > 0 else alpha·x (alpha defaults to 0.01)",
        build: |a| {
            let alpha = a.float(1).unwrap_or(0.01);
            Ok((Op::Unary(UnaryOp::LeakyRelu(alpha)), vec![a.tensor(0)?.0]))
        },
    },
    Function {
        name: "pow",
        params: &[X, Param::req("exponent", ArgKind::Float)],
        doc: "x^exponent for a constant exponent",
        build: |a| {
            let p = a
                .float(1)
                .ok_or_else(|| OpError::argument("pow needs an exponent"))?;
            Ok((Op::Unary(UnaryOp::Pow(p)), vec![a.tensor(0)?.0]))
        },
    },
];

/// Builds a scalar constant op (used by lowering for number literals).
pub fn constant(value: f64) -> Op {
    Op::Leaf(LeafOp::scalar(value))
}

impl UnaryOp {
    /// ReLU is fused into an int8 product's epilogue (or an f32 step);
    /// other elementwise functions have no int8 plan step yet.
    pub fn int8(&self) -> super::Int8 {
        match self {
            UnaryOp::Relu => super::Int8::Epilogue,
            _ => super::Int8::None,
        }
    }
}

impl BinaryOp {
    /// A bias add is fused into an int8 product's epilogue.
    pub fn int8(&self) -> super::Int8 {
        match self {
            BinaryOp::Add => super::Int8::Epilogue,
            _ => super::Int8::None,
        }
    }
}
