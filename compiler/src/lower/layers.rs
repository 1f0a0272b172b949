//! Layer sugar and initializers: `dense` and the `conv2d` layer expand into
//! named parameters and primitive ops; `mse` and `l1` expand into primitive
//! arithmetic.

use super::args::{suggest, ArgSrc, Bound};
use super::{Lowerer, Reported, L};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::graph::{Dim, NodeId, Shape, TensorType};
use crate::ir::{Init, StateDecl};
use crate::ops::{
    self, ArgKind, ArgValue, Args as OpArgs, BinaryOp, Matmul, Op, Param, ReduceKind, ReduceOp,
    UnaryOp,
};
use crate::syntax::ast::{self, Expr, ExprKind};

/// Function names that are layer sugar rather than primitive ops.
/// (`conv2d` is sugar only in its layer form, `conv2d(x, filters, kernel:
/// k)`; `conv2d(x, w)` with a weight tensor is the primitive op.)
pub const SUGAR: &[&str] = &[
    "dense",
    "conv2d",
    "mse",
    "l1",
    "l1_loss",
    "dropout",
    "batch_norm",
    "layer_norm",
    "embedding",
    "self_attention",
];

/// The error for a layer's input of the wrong kind: a type error for class
/// labels, a shape error for an f32 tensor of the wrong shape. `expects`
/// says what the layer takes ("dense expects ...").
fn wrong_input(xty: &crate::graph::TensorType, span: Span, expects: &str) -> Diagnostic {
    let kind = if xty.dtype == crate::graph::DType::F32 {
        ErrorKind::ShapeMismatch
    } else {
        ErrorKind::TypeMismatch
    };
    Diagnostic::new(kind, span, format!("{expects}, found {xty}"))
        .with_label(format!("this is {xty}"))
}

/// Whether a `conv2d` call is the layer (an integer `filters` second
/// argument, or one named `filters`) rather than the primitive op.
fn conv2d_layer_form(piped: bool, args: &[ast::Arg]) -> bool {
    let second = args
        .iter()
        .filter(|a| a.name.is_none())
        .nth(if piped { 0 } else { 1 });
    second.is_some_and(|a| super::args::literal(&a.value).is_some_and(|(_, int)| int))
        || args
            .iter()
            .any(|a| a.name.as_ref().is_some_and(|n| n.name == "filters"))
}

/// A layer call after the prologue every layer shares: its arguments bound
/// and converted, and its input tensor (parameter 0) with its type and the
/// span it was written at.
struct LayerInput<'a> {
    /// The converted arguments (`None` when absent or left raw).
    a: OpArgs,
    /// Where each argument came from.
    bound: Bound<'a>,
    /// The whole call, the span of absent arguments.
    span: Span,
    /// The input tensor.
    x: NodeId,
    /// Its type.
    xty: TensorType,
    /// Where it was written.
    x_span: Span,
}

impl<'a> LayerInput<'a> {
    /// Where argument `i` was written (the call when it was not).
    fn arg_span(&self, i: usize) -> Span {
        self.bound[i].map_or(self.span, |s| s.span())
    }

    /// Argument `i` as written, if it is an expression (an initializer).
    fn raw(&self, i: usize) -> Option<&'a Expr> {
        match self.bound[i] {
            Some(ArgSrc::Expr(e)) => Some(e),
            _ => None,
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

    /// The prologue of a layer `func`: binds `args` to `params` and converts
    /// each one but `raw` (an initializer, parsed later with [`Self::init`]),
    /// then takes the input tensor, parameter 0.
    fn layer_input<'a>(
        &mut self,
        func: &str,
        params: &[Param],
        raw: Option<usize>,
        first: Option<ArgSrc<'a>>,
        args: &'a [ast::Arg],
        span: Span,
    ) -> L<LayerInput<'a>> {
        let bound = self.bind(func, span, params, first, args)?;
        let mut values = Vec::with_capacity(params.len());
        for (i, (p, b)) in params.iter().zip(&bound).enumerate() {
            values.push(match b {
                Some(src) if Some(i) != raw => Some(self.convert(func, p, *src)?),
                _ => None,
            });
        }
        let a = OpArgs { values };
        let (x, xty) = a.tensor(0).map_err(|e| self.op_error(e, &[], span))?;
        let xty = xty.clone();
        let x_span = bound[0].map_or(span, |s| s.span());
        Ok(LayerInput {
            a,
            bound,
            span,
            x,
            xty,
            x_span,
        })
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
            "conv2d" if conv2d_layer_form(first.is_some(), args) => {
                Some(self.conv2d_layer(first, args, span))
            }
            "mse" => Some(self.pointwise_loss("mse", first, args, span, false)),
            "l1" | "l1_loss" => Some(self.pointwise_loss(&func.name, first, args, span, true)),
            "dropout" => Some(self.dropout(first, args, span)),
            "batch_norm" => Some(self.batch_norm(first, args, span)),
            "layer_norm" => Some(self.layer_norm_layer(first, args, span)),
            "embedding" => Some(self.embedding_layer(first, args, span)),
            "self_attention" => Some(self.self_attention(first, args, span)),
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
        // `init` may be a call (normal(std: 0.01)): parsed separately.
        const INIT: usize = 3;
        let l = self.layer_input("dense", PARAMS, Some(INIT), first, args, span)?;
        let (a, x, xty, x_span) = (&l.a, l.x, &l.xty, l.x_span);
        let units_span = l.arg_span(1);
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
        let fan_in =
            match xty.shape.dims().last() {
                Some(Dim::Fixed(n)) if xty.dtype == crate::graph::DType::F32 => *n,
                _ => return Err(self.report(wrong_input(
                    xty,
                    x_span,
                    "dense expects an f32 input whose last dimension is a fixed number of features",
                ))),
            };
        let init = match l.raw(INIT) {
            Some(e) => self.init(e)?,
            None => Init::GlorotUniform,
        };
        let name = self.layer_name();
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
                let act_span = l.arg_span(2);
                y = self.activation(act, y, act_span)?;
            }
        }
        Ok(y)
    }

    /// The layer name a call stands in: the binding's name, then `.1`, `.2`
    /// for further layers of the same statement.
    fn layer_name(&mut self) -> String {
        let name = if self.layer_count == 0 {
            self.prefix.clone()
        } else {
            format!("{}.{}", self.prefix, self.layer_count)
        };
        self.layer_count += 1;
        name
    }

    /// `conv2d(x, filters, kernel: k, stride:, padding:, dilation:, groups:,
    /// activation:, init: he_uniform, bias: true)`: `conv2d(x,
    /// {name}.weight)` with a weight `[filters, C/groups, KH, KW]`, plus
    /// `{name}.bias` `[filters]` broadcast over the positions, then the
    /// activation.
    fn conv2d_layer(
        &mut self,
        first: Option<ArgSrc<'_>>,
        args: &[ast::Arg],
        span: Span,
    ) -> L<NodeId> {
        const PARAMS: &[Param] = &[
            Param::req("x", ArgKind::Tensor),
            Param::req("filters", ArgKind::Int),
            Param::req("kernel", ArgKind::Ints),
            Param::opt("stride", ArgKind::Ints),
            Param::opt("padding", ArgKind::Ints),
            Param::opt("dilation", ArgKind::Ints),
            Param::opt("groups", ArgKind::Int),
            Param::opt("activation", ArgKind::Name),
            Param::opt("init", ArgKind::Name),
            Param::opt("bias", ArgKind::Bool),
        ];
        const INIT: usize = 8;
        let l = self.layer_input("conv2d", PARAMS, Some(INIT), first, args, span)?;
        let (a, x, xty, x_span) = (&l.a, l.x, &l.xty, l.x_span);
        let arg_span = |i: usize| l.arg_span(i);
        let filters = match a.int(1) {
            Some(f) if (1..=1 << 30).contains(&f) => f as usize,
            Some(f) => {
                return Err(self.report(
                    Diagnostic::new(
                        ErrorKind::BadArgument,
                        arg_span(1),
                        format!("`filters` of `conv2d` must be a positive integer, found {f}"),
                    )
                    .with_label("not a valid channel count"),
                ))
            }
            None => return Err(Reported),
        };
        let params = ops::conv::conv_params(a, 3).map_err(|e| self.op_error(e, &[], span))?;
        let kernel = match a.ints(2) {
            Some(&[k]) if (1..=1 << 20).contains(&k) => [k as usize; 2],
            Some(&[h, w]) if (1..=1 << 20).contains(&h) && (1..=1 << 20).contains(&w) => {
                [h as usize, w as usize]
            }
            Some(k) => {
                return Err(self.report(
                    Diagnostic::new(
                        ErrorKind::BadArgument,
                        arg_span(2),
                        format!(
                            "`kernel` of `conv2d` must be a positive integer or a list [height, width] of them, found {k:?}"
                        ),
                    )
                    .with_label("not a valid kernel size"),
                ))
            }
            None => return Err(Reported),
        };
        let channels = match xty.shape.dims() {
            [_, Dim::Fixed(c), Dim::Fixed(_), Dim::Fixed(_)]
                if xty.dtype == crate::graph::DType::F32 =>
            {
                *c
            }
            _ => {
                return Err(self.report(
                    wrong_input(xty, x_span, "conv2d expects an input f32[batch, channels, height, width] (NCHW, fixed channels and size)"),
                ))
            }
        };
        if channels % params.groups != 0 {
            return Err(self.report(
                Diagnostic::new(
                    ErrorKind::ShapeMismatch,
                    span,
                    format!(
                        "conv2d: the input's {channels} channels are not divisible by groups: {}",
                        params.groups
                    ),
                )
                .with_note(x_span, format!("this is {xty}")),
            ));
        }
        let init = match l.raw(INIT) {
            Some(e) => self.init(e)?,
            None => Init::HeUniform,
        };
        let name = self.layer_name();
        let shape = Shape::fixed(&[filters, channels / params.groups, kernel[0], kernel[1]]);
        let w = self.add_param(format!("{name}.weight"), shape, init, span)?;
        let mut y = self.add_op(
            Op::Conv(ops::ConvOp::Conv2d(params)),
            &[(x, x_span), (w, span)],
            span,
        )?;
        if a.bool(9).unwrap_or(true) {
            let b = self.add_param(
                format!("{name}.bias"),
                Shape::fixed(&[filters]),
                Init::Zeros,
                span,
            )?;
            let to = Shape::fixed(&[filters, 1, 1]);
            let b = self.add_op(Op::Shape(ops::ShapeOp::Reshape { to }), &[(b, span)], span)?;
            y = self.add_op(Op::Binary(BinaryOp::Add), &[(y, span), (b, span)], span)?;
        }
        if let Some(act) = a.name(7) {
            if act != "linear" && act != "none" {
                y = self.activation(act, y, arg_span(7))?;
            }
        }
        Ok(y)
    }

    /// `dropout(x, rate: p)`: in training, each element is kept with
    /// probability `1 - p` and scaled by `1 / (1 - p)` (inverted dropout);
    /// in inference, the identity. The mask's salt is a hash of the layer
    /// name, so two dropout layers draw different masks.
    fn dropout(&mut self, first: Option<ArgSrc<'_>>, args: &[ast::Arg], span: Span) -> L<NodeId> {
        const PARAMS: &[Param] = &[
            Param::req("x", ArgKind::Tensor),
            Param::req("rate", ArgKind::Float),
        ];
        let l = self.layer_input("dropout", PARAMS, None, first, args, span)?;
        let (x, x_span) = (l.x, l.x_span);
        let rate_span = l.arg_span(1);
        let rate = match l.a.float(1) {
            Some(r) if (0.0..1.0).contains(&r) => r,
            Some(r) => return Err(self.report(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    rate_span,
                    format!("`rate` of `dropout` must be in [0, 1), found {r}"),
                )
                .with_label("not a drop probability")
                .with_help(
                    "the rate is the probability of zeroing an element; 1 would drop everything",
                ),
            )),
            None => return Err(Reported),
        };
        let name = self.layer_name();
        let salt = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let y = self.add_op(
            Op::Norm(ops::NormOp::dropout(rate, salt)),
            &[(x, x_span)],
            span,
        )?;
        self.modal.push((y, Vec::new()));
        Ok(y)
    }

    /// `batch_norm(x, momentum: 0.1, eps: 1e-5)` over `[batch, C]` or NCHW
    /// `[batch, C, H, W]`: normalise each channel, then `· {name}.weight +
    /// {name}.bias` (learned, initialised to 1 and 0). Training normalises
    /// with the batch's mean and biased variance and hands the batch's mean
    /// and unbiased variance to the running statistics `{name}.running_mean`
    /// and `{name}.running_var` (state, initialised to 0 and 1, PyTorch's
    /// momentum convention); inference normalises with the running ones.
    fn batch_norm(
        &mut self,
        first: Option<ArgSrc<'_>>,
        args: &[ast::Arg],
        span: Span,
    ) -> L<NodeId> {
        const PARAMS: &[Param] = &[
            Param::req("x", ArgKind::Tensor),
            Param::opt("momentum", ArgKind::Float),
            Param::opt("eps", ArgKind::Float),
        ];
        let l = self.layer_input("batch_norm", PARAMS, None, first, args, span)?;
        let (a, x, xty, x_span) = (&l.a, l.x, &l.xty, l.x_span);
        let arg_span = |i: usize| l.arg_span(i);
        let momentum = a.float(1).unwrap_or(0.1);
        if !(0.0..=1.0).contains(&momentum) {
            return Err(self.report(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    arg_span(1),
                    format!("`momentum` of `batch_norm` must be in [0, 1], found {momentum}"),
                )
                .with_label("not a blending weight"),
            ));
        }
        let eps = a.float(2).unwrap_or(1e-5);
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(self.report(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    arg_span(2),
                    format!("`eps` of `batch_norm` must be a positive number, found {eps}"),
                )
                .with_label("not positive"),
            ));
        }
        let c = match xty.shape.dims() {
            [_, Dim::Fixed(c)] | [_, Dim::Fixed(c), Dim::Fixed(_), Dim::Fixed(_)]
                if xty.dtype == crate::graph::DType::F32 =>
            {
                *c
            }
            _ => {
                return Err(self.report(
                    wrong_input(xty, x_span, "batch_norm expects f32[batch, channels] or f32[batch, channels, height, width] (fixed channels and size)"),
                ))
            }
        };
        let name = self.layer_name();
        let cs = Shape::fixed(&[c]);
        let state = |l: &mut Self, suffix: &str| {
            let n = format!("{name}.{suffix}");
            let node = l.leaf(
                ops::LeafOp::State {
                    name: n.clone(),
                    shape: cs.clone(),
                },
                span,
            )?;
            l.graph.set_name(node, &n);
            Ok::<_, Reported>((n, node))
        };
        let (mean_name, mean) = state(self, "running_mean")?;
        let (var_name, var) = state(self, "running_var")?;
        let eps_bits = eps.to_bits();
        let xhat = self.add_op(
            Op::Norm(ops::NormOp::BatchNorm { eps: eps_bits }),
            &[(x, x_span)],
            span,
        )?;
        self.modal.push((xhat, vec![mean, var]));
        for (n, node, var_stat, init) in [(mean_name, mean, false, 0.0), (var_name, var, true, 1.0)]
        {
            let update = self.add_op(
                Op::Norm(ops::NormOp::BatchStat { var: var_stat }),
                &[(x, x_span)],
                span,
            )?;
            self.states.push(StateDecl {
                name: n,
                node,
                shape: cs.clone(),
                init,
                momentum,
                update,
                span,
            });
        }
        let mut gamma = self.add_param(
            format!("{name}.weight"),
            cs.clone(),
            Init::Constant(1.0),
            span,
        )?;
        let mut beta = self.add_param(format!("{name}.bias"), cs.clone(), Init::Zeros, span)?;
        if xty.shape.rank() == 4 {
            let to = Shape::fixed(&[c, 1, 1]);
            gamma = self.add_op(
                Op::Shape(ops::ShapeOp::Reshape { to: to.clone() }),
                &[(gamma, span)],
                span,
            )?;
            beta = self.add_op(
                Op::Shape(ops::ShapeOp::Reshape { to }),
                &[(beta, span)],
                span,
            )?;
        }
        let y = self.add_op(
            Op::Binary(BinaryOp::Mul),
            &[(xhat, span), (gamma, span)],
            span,
        )?;
        self.add_op(Op::Binary(BinaryOp::Add), &[(y, span), (beta, span)], span)
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

/// The sequence layers: `layer_norm`, `embedding` and `self_attention`.
impl Lowerer {
    /// `layer_norm(x, eps: 1e-5, affine: true)`: normalises the last axis
    /// (one fused kernel per row), then `* {name}.gamma + {name}.beta`
    /// (initialised to ones and zeros) unless `affine: false`.
    fn layer_norm_layer(
        &mut self,
        first: Option<ArgSrc<'_>>,
        args: &[ast::Arg],
        span: Span,
    ) -> L<NodeId> {
        const PARAMS: &[Param] = &[
            Param::req("x", ArgKind::Tensor),
            Param::opt("eps", ArgKind::Float),
            Param::opt("affine", ArgKind::Bool),
        ];
        let l = self.layer_input("layer_norm", PARAMS, None, first, args, span)?;
        let (a, x, xty, x_span) = (&l.a, l.x, &l.xty, l.x_span);
        let eps = a.float(1).unwrap_or(1e-5);
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(self.report(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    l.arg_span(1),
                    format!("`eps` of `layer_norm` must be positive, found {eps}"),
                )
                .with_label("not a valid epsilon"),
            ));
        }
        let y = self.add_op(Op::Seq(ops::SeqOp::LayerNorm { eps }), &[(x, x_span)], span)?;
        if !a.bool(2).unwrap_or(true) {
            return Ok(y);
        }
        let Some(&Dim::Fixed(d)) = xty.shape.dims().last() else {
            return Err(Reported);
        };
        let name = self.layer_name();
        let gamma = self.add_param(
            format!("{name}.gamma"),
            Shape::fixed(&[d]),
            Init::Constant(1.0),
            span,
        )?;
        let beta = self.add_param(
            format!("{name}.beta"),
            Shape::fixed(&[d]),
            Init::Zeros,
            span,
        )?;
        let y = self.add_op(Op::Binary(BinaryOp::Mul), &[(y, span), (gamma, span)], span)?;
        self.add_op(Op::Binary(BinaryOp::Add), &[(y, span), (beta, span)], span)
    }

    /// `embedding(tokens, dim, init: normal)`: a table `{name}.weight`
    /// `f32[V, dim]` for ids `class[...] of V`, looked up row by row
    /// (PyTorch's default initialisation, a standard normal).
    fn embedding_layer(
        &mut self,
        first: Option<ArgSrc<'_>>,
        args: &[ast::Arg],
        span: Span,
    ) -> L<NodeId> {
        const PARAMS: &[Param] = &[
            Param::req("tokens", ArgKind::Tensor),
            Param::req("dim", ArgKind::Int),
            Param::opt("init", ArgKind::Name),
        ];
        const INIT: usize = 2;
        let l = self.layer_input("embedding", PARAMS, Some(INIT), first, args, span)?;
        let (a, ids, ty) = (&l.a, l.x, &l.xty);
        let arg_span = |i: usize| l.arg_span(i);
        let crate::graph::DType::Class { classes } = ty.dtype else {
            return Err(self.report(
                Diagnostic::new(
                    ErrorKind::TypeMismatch,
                    arg_span(0),
                    format!("embedding expects token ids (class-typed), found {ty}"),
                )
                .with_label(format!("this is {ty}"))
                .with_help("declare integer inputs as `input tokens: class[batch, 16] of 10;`"),
            ));
        };
        let dim = match a.int(1) {
            Some(d) if (1..=1 << 30).contains(&d) => d as usize,
            Some(d) => {
                return Err(self.report(
                    Diagnostic::new(
                        ErrorKind::BadArgument,
                        arg_span(1),
                        format!("`dim` of `embedding` must be a positive integer, found {d}"),
                    )
                    .with_label("not a valid width"),
                ))
            }
            None => return Err(Reported),
        };
        let init = match l.raw(INIT) {
            Some(e) => self.init(e)?,
            None => Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
        };
        let name = self.layer_name();
        let table = self.add_param(
            format!("{name}.weight"),
            Shape::fixed(&[classes, dim]),
            init,
            span,
        )?;
        self.add_op(
            Op::Seq(ops::SeqOp::Embedding),
            &[(table, span), (ids, arg_span(0))],
            span,
        )
    }

    /// `self_attention(x, heads: 4, causal: false)` over `x: f32[batch, T,
    /// D]`: query, key and value projections (`{name}.query.weight` `[D,
    /// D]`, `.bias` `[D]`, and so on), split into heads `[batch, heads, T,
    /// D/heads]`, scores `q @ kᵀ / √(D/heads)`, the causal mask when asked,
    /// softmax over the keys, the weighted sum of values, heads merged back
    /// to `[batch, T, D]`, and the output projection `{name}.output.*`.
    fn self_attention(
        &mut self,
        first: Option<ArgSrc<'_>>,
        args: &[ast::Arg],
        span: Span,
    ) -> L<NodeId> {
        const PARAMS: &[Param] = &[
            Param::req("x", ArgKind::Tensor),
            Param::req("heads", ArgKind::Int),
            Param::opt("causal", ArgKind::Bool),
        ];
        let l = self.layer_input("self_attention", PARAMS, None, first, args, span)?;
        let (a, x, xty, x_span) = (&l.a, l.x, &l.xty, l.x_span);
        let heads_span = l.arg_span(1);
        let (n, t, d) = match xty.shape.dims() {
            [n, Dim::Fixed(t), Dim::Fixed(d)] if xty.dtype == crate::graph::DType::F32 => {
                (*n, *t, *d)
            }
            _ => {
                return Err(self.report(
                    wrong_input(xty, x_span, "self_attention expects a sequence f32[batch, length, width] (fixed length and width)"),
                ))
            }
        };
        let heads = match a.int(1) {
            Some(h) if h >= 1 && (h as u64) <= d as u64 && d % h as usize == 0 => h as usize,
            Some(h) => {
                let mut diag = Diagnostic::new(
                    ErrorKind::BadArgument,
                    heads_span,
                    format!("self_attention: {h} heads do not divide the width {d} of {xty}"),
                )
                .with_label(format!("does not divide {d}"))
                .with_note(x_span, format!("this is {xty}"));
                let divisors: Vec<String> = (1..=d.min(64))
                    .filter(|k| d % k == 0)
                    .map(|k| k.to_string())
                    .collect();
                diag = diag.with_help(format!(
                    "each head gets width / heads features; choose heads among {}",
                    divisors.join(", ")
                ));
                return Err(self.report(diag));
            }
            None => return Err(Reported),
        };
        let causal = a.bool(2).unwrap_or(false);
        let dh = d / heads;
        let name = self.layer_name();
        let at = |v: NodeId| (v, span);
        // One projection `x @ W + b` per role, split into heads.
        let proj = |me: &mut Self, role: &str, x: NodeId| -> L<NodeId> {
            let w = me.add_param(
                format!("{name}.{role}.weight"),
                Shape::fixed(&[d, d]),
                Init::GlorotUniform,
                span,
            )?;
            let b = me.add_param(
                format!("{name}.{role}.bias"),
                Shape::fixed(&[d]),
                Init::Zeros,
                span,
            )?;
            let y = me.add_op(Op::Matmul(Matmul), &[at(x), at(w)], span)?;
            me.add_op(Op::Binary(BinaryOp::Add), &[at(y), at(b)], span)
        };
        let split = |me: &mut Self, v: NodeId| -> L<NodeId> {
            let to = Shape(vec![n, Dim::Fixed(t), Dim::Fixed(heads), Dim::Fixed(dh)]);
            let r = me.add_op(Op::Shape(ops::ShapeOp::Reshape { to }), &[at(v)], span)?;
            let perm = vec![0, 2, 1, 3];
            me.add_op(Op::Shape(ops::ShapeOp::Transpose { perm }), &[at(r)], span)
        };
        let q = proj(self, "query", x)?;
        let q = split(self, q)?;
        let k = proj(self, "key", x)?;
        let k = split(self, k)?;
        let v = proj(self, "value", x)?;
        let v = split(self, v)?;
        let kt = self.add_op(
            Op::Shape(ops::ShapeOp::Transpose {
                perm: vec![0, 1, 3, 2],
            }),
            &[at(k)],
            span,
        )?;
        let s = self.add_op(Op::Matmul(Matmul), &[at(q), at(kt)], span)?;
        let scale = self.leaf(crate::ops::LeafOp::scalar(1.0 / (dh as f64).sqrt()), span)?;
        let mut s = self.add_op(Op::Binary(BinaryOp::Mul), &[at(s), at(scale)], span)?;
        if causal {
            s = self.add_op(Op::Seq(ops::SeqOp::CausalMask), &[at(s)], span)?;
        }
        let p = self.add_op(
            Op::Softmax(ops::SoftmaxOp {
                kind: ops::SoftmaxKind::Softmax,
                axis: 3,
            }),
            &[at(s)],
            span,
        )?;
        let c = self.add_op(Op::Matmul(Matmul), &[at(p), at(v)], span)?;
        let c = self.add_op(
            Op::Shape(ops::ShapeOp::Transpose {
                perm: vec![0, 2, 1, 3],
            }),
            &[at(c)],
            span,
        )?;
        let to = Shape(vec![n, Dim::Fixed(t), Dim::Fixed(d)]);
        let c = self.add_op(Op::Shape(ops::ShapeOp::Reshape { to }), &[at(c)], span)?;
        proj(self, "output", c)
    }
}
