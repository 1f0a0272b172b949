//! Layer sugar and initializers: `dense` expands into named parameters and
//! primitive ops; `mse` and `l1` expand into primitive arithmetic.

use super::args::{suggest, ArgSrc};
use super::{Lowerer, Reported, L};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::graph::{Dim, NodeId, Shape};
use crate::ops::{
    self, ArgKind, ArgValue, Args as OpArgs, BinaryOp, Matmul, Op, Param, ReduceKind, ReduceOp,
    UnaryOp,
};
use crate::syntax::ast::{self, Expr, ExprKind};

/// Function names that are layer sugar rather than primitive ops.
pub const SUGAR: &[&str] = &["dense", "mse", "l1", "l1_loss"];

/// How a parameter is initialised. Fans follow the `x @ weight` layout: a
/// dense weight `[in, out]` has fan-in `in` and fan-out `out`.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// Every element the same value.
    Constant(f64),
    /// Normal with a mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Uniform on `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// Glorot/Xavier uniform: bound `sqrt(6 / (fan_in + fan_out))`.
    GlorotUniform,
    /// Glorot/Xavier normal: std `sqrt(2 / (fan_in + fan_out))`.
    GlorotNormal,
    /// He/Kaiming uniform: bound `sqrt(6 / fan_in)`.
    HeUniform,
    /// He/Kaiming normal: std `sqrt(2 / fan_in)`.
    HeNormal,
}

impl Init {
    /// The default when none is written: Glorot uniform for weights (rank 2
    /// or more, as Keras does), zeros for vectors and scalars.
    pub fn default_for(shape: &Shape) -> Init {
        if shape.rank() >= 2 {
            Init::GlorotUniform
        } else {
            Init::Zeros
        }
    }
}

const INIT_NAMES: &[&str] = &[
    "zeros",
    "ones",
    "constant",
    "normal",
    "uniform",
    "glorot_uniform",
    "glorot_normal",
    "xavier_uniform",
    "xavier_normal",
    "he_uniform",
    "he_normal",
    "kaiming_uniform",
    "kaiming_normal",
];

impl Lowerer {
    /// Parses an initializer: a name (`he_normal`) or a call (`normal(std: 0.01)`).
    pub(super) fn init(&mut self, e: &Expr) -> L<Init> {
        let (name, args, span): (&ast::Ident, &[ast::Arg], Span) = match &e.kind {
            ExprKind::Name(n) => (n, &[], e.span),
            ExprKind::Call { func, args } => (func, args, e.span),
            _ => {
                return Err(self.report(
                    Diagnostic::new(
                        ErrorKind::BadArgument,
                        e.span,
                        format!(
                            "expected an initializer such as `he_normal` or `normal(std: 0.01)`, found {}",
                            super::args::found(e)
                        ),
                    )
                    .with_label("not an initializer"),
                ))
            }
        };
        const F: ArgKind = ArgKind::Float;
        let params: &[Param] = match name.name.as_str() {
            "constant" => &[Param::req("value", F)],
            "normal" => &[Param::opt("mean", F), Param::opt("std", F)],
            "uniform" => &[Param::opt("low", F), Param::opt("high", F)],
            n if INIT_NAMES.contains(&n) => &[],
            _ => {
                let mut d = Diagnostic::new(
                    ErrorKind::BadArgument,
                    name.span,
                    format!(
                        "unknown initializer `{}`; expected one of: {}",
                        name.name,
                        INIT_NAMES.join(", ")
                    ),
                )
                .with_label("unknown initializer");
                if let Some(s) = suggest(&name.name, INIT_NAMES.iter().copied()) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                return Err(self.report(d));
            }
        };
        let (v, _) = self.args(&name.name, span, params, None, args)?;
        let a = OpArgs { values: v };
        let init = match name.name.as_str() {
            "zeros" => Init::Zeros,
            "ones" => Init::Constant(1.0),
            "constant" => Init::Constant(a.float(0).unwrap_or(0.0)),
            "normal" => Init::Normal {
                mean: a.float(0).unwrap_or(0.0),
                std: a.float(1).unwrap_or(1.0),
            },
            "uniform" => Init::Uniform {
                low: a.float(0).unwrap_or(0.0),
                high: a.float(1).unwrap_or(1.0),
            },
            "glorot_uniform" | "xavier_uniform" => Init::GlorotUniform,
            "glorot_normal" | "xavier_normal" => Init::GlorotNormal,
            "he_uniform" | "kaiming_uniform" => Init::HeUniform,
            _ => Init::HeNormal,
        };
        let bad = match &init {
            Init::Normal { std, .. } if *std <= 0.0 => Some("`std` must be positive"),
            Init::Uniform { low, high } if low >= high => Some("`low` must be below `high`"),
            _ => None,
        };
        if let Some(msg) = bad {
            return Err(self.report(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    span,
                    format!("{}: {msg}", name.name),
                )
                .with_label("invalid initializer"),
            ));
        }
        Ok(init)
    }

    /// Lowers layer sugar; `None` when `func` is not sugar.
    pub(super) fn sugar(
        &mut self,
        func: &ast::Ident,
        first: Option<ArgSrc<'_>>,
        args: &[ast::Arg],
        span: Span,
    ) -> Option<L<NodeId>> {
        match func.name.as_str() {
            "dense" => Some(self.dense(first, args, span)),
            "mse" => Some(self.pointwise_loss("mse", first, args, span, false)),
            "l1" | "l1_loss" => Some(self.pointwise_loss(&func.name, first, args, span, true)),
            _ => None,
        }
    }

    /// `dense(x, units, activation: relu, init: he_normal, bias: true)`:
    /// `x @ {name}.weight + {name}.bias`, then the activation. The name is the
    /// binding the call stands in; a second layer in the same statement gets
    /// `{name}.1`, a third `{name}.2`.
    fn dense(&mut self, first: Option<ArgSrc<'_>>, args: &[ast::Arg], span: Span) -> L<NodeId> {
        const PARAMS: &[Param] = &[
            Param::req("x", ArgKind::Tensor),
            Param::req("units", ArgKind::Int),
            Param::opt("activation", ArgKind::Name),
            Param::opt("init", ArgKind::Name),
            Param::opt("bias", ArgKind::Bool),
        ];
        let bound = self.bind("dense", span, PARAMS, first, args)?;
        let mut values = Vec::new();
        for (i, (p, b)) in PARAMS.iter().zip(&bound).enumerate() {
            // `init` may be a call (normal(std: 0.01)): parsed separately.
            values.push(match b {
                Some(src) if i != 3 => Some(self.convert("dense", p, *src)?),
                _ => None,
            });
        }
        let a = OpArgs { values };
        let (x, xty) = a.tensor(0).map_err(|e| self.op_error(e, &[], span))?;
        let xty = xty.clone();
        let x_span = bound[0].map_or(span, |s| s.span());
        let units_span = bound[1].map_or(span, |s| s.span());
        let units = match a.int(1) {
            Some(u) if (1..=1 << 30).contains(&u) => u as usize,
            Some(u) => {
                return Err(self.report(
                    Diagnostic::new(
                        ErrorKind::BadArgument,
                        units_span,
                        format!("`units` of `dense` must be a positive integer, found {u}"),
                    )
                    .with_label("not a valid width"),
                ))
            }
            None => return Err(Reported),
        };
        let fan_in = match xty.shape.dims().last() {
            Some(Dim::Fixed(n)) if xty.dtype == crate::graph::DType::F32 => *n,
            _ => {
                return Err(self.report(
                    Diagnostic::new(
                        if xty.dtype == crate::graph::DType::F32 {
                            ErrorKind::ShapeMismatch
                        } else {
                            ErrorKind::TypeMismatch
                        },
                        x_span,
                        format!(
                            "dense expects an f32 input whose last dimension is a fixed number of features, found {xty}"
                        ),
                    )
                    .with_label(format!("this is {xty}")),
                ))
            }
        };
        let init = match bound[3] {
            Some(ArgSrc::Expr(e)) => self.init(e)?,
            _ => Init::GlorotUniform,
        };
        let name = if self.layer_count == 0 {
            self.prefix.clone()
        } else {
            format!("{}.{}", self.prefix, self.layer_count)
        };
        self.layer_count += 1;
        let w = self.add_param(
            format!("{name}.weight"),
            Shape::fixed(&[fan_in, units]),
            init,
            span,
        )?;
        let mut y = self.add_op(Op::Matmul(Matmul), &[(x, x_span), (w, span)], span)?;
        if a.bool(4).unwrap_or(true) {
            let b = self.add_param(
                format!("{name}.bias"),
                Shape::fixed(&[units]),
                Init::Zeros,
                span,
            )?;
            y = self.add_op(Op::Binary(BinaryOp::Add), &[(y, span), (b, span)], span)?;
        }
        if let Some(act) = a.name(2) {
            if act != "linear" && act != "none" {
                let act_span = bound[2].map_or(span, |s| s.span());
                y = self.activation(act, y, act_span)?;
            }
        }
        Ok(y)
    }

    /// Applies a one-argument function by name (relu, tanh, softmax, ...).
    fn activation(&mut self, name: &str, x: NodeId, span: Span) -> L<NodeId> {
        let Some(f) = ops::activations().find(|f| f.name == name) else {
            let names: Vec<&str> = ops::activations().map(|f| f.name).collect();
            let mut d = Diagnostic::new(
                ErrorKind::BadArgument,
                span,
                format!(
                    "unknown activation `{name}`; expected `linear` or one of: {}",
                    names.join(", ")
                ),
            )
            .with_label("unknown activation");
            if let Some(s) = suggest(name, names.iter().copied()) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            return Err(self.report(d));
        };
        let mut values = vec![None; f.params.len()];
        values[0] = Some(ArgValue::Tensor(x, self.graph.ty(x).clone()));
        let (op, operands) =
            (f.build)(&OpArgs { values }).map_err(|e| self.op_error(e, &[], span))?;
        let spans: Vec<(NodeId, Span)> = operands.iter().map(|&o| (o, span)).collect();
        self.add_op(op, &spans, span)
    }

    /// `mse(pred, target)` = mean((pred − target)²); `l1(pred, target)` =
    /// mean(|pred − target|). The shapes must be equal: broadcasting a
    /// `[batch, 1]` prediction against a `[batch]` target is a classic silent
    /// bug, so it is an error here.
    fn pointwise_loss(
        &mut self,
        func: &str,
        first: Option<ArgSrc<'_>>,
        args: &[ast::Arg],
        span: Span,
        l1: bool,
    ) -> L<NodeId> {
        const PARAMS: &[Param] = &[
            Param::req("pred", ArgKind::Tensor),
            Param::req("target", ArgKind::Tensor),
        ];
        let (values, spans) = self.args(func, span, PARAMS, first, args)?;
        let a = OpArgs { values };
        let ((p, pty), (t, tty)) = match (a.tensor(0), a.tensor(1)) {
            (Ok(p), Ok(t)) => (p, t),
            _ => return Err(Reported),
        };
        let (ps, ts) = (spans[0].unwrap_or(span), spans[1].unwrap_or(span));
        // Report class labels against this call, not the `-` it expands to.
        for (i, ty) in [pty, tty].into_iter().enumerate() {
            if let Err(e) = ops::expect_f32(ty, i, func) {
                return Err(self.op_error(e, &[(p, ps), (t, ts)], span));
            }
        }
        if pty.shape != tty.shape {
            let msg = format!("{func} of {pty} and {tty}: shapes differ");
            return Err(self.report(
                Diagnostic::new(ErrorKind::ShapeMismatch, span, msg)
                    .with_note(ps, format!("this is {pty}"))
                    .with_note(ts, format!("this is {tty}"))
                    .with_help("reshape one side so both have the same shape"),
            ));
        }
        let d = self.add_op(Op::Binary(BinaryOp::Sub), &[(p, ps), (t, ts)], span)?;
        let e = if l1 {
            self.add_op(Op::Unary(UnaryOp::Abs), &[(d, span)], span)?
        } else {
            self.add_op(Op::Binary(BinaryOp::Mul), &[(d, span), (d, span)], span)?
        };
        let mean = Op::Reduce(ReduceOp {
            kind: ReduceKind::Mean,
            axes: Vec::new(),
            keepdims: false,
        });
        self.add_op(mean, &[(e, span)], span)
    }
}
