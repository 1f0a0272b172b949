//! Layers: calls that expand into named parameters and primitive ops
//! (`dense` → `h1.weight`, `h1.bias`, a matrix product, an add and an
//! activation). One table, [`layers`], lists every layer with its
//! signature (parameters, kinds, defaults) and its expansion; name lookup,
//! dispatch and the "did you mean" hints all read it. Each family file
//! holds its layers' table entries next to their expansions.
//!
//! Adding a layer: one entry and one expansion function in a family file
//! (or a new family file chained into [`layers`]), and a use of it in
//! `tests/models/every_layer.nn`, which a test requires and which is
//! gradient-checked.

mod dense;
mod loss;
mod norm;
mod sequence;

use super::args::{default, suggest, ArgSrc, Bound};
use super::{Lowerer, Reported, L};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::graph::{DType, NodeId, TensorType};
use crate::ir::Init;
use crate::ops::{self, ArgKind, ArgValue, Args as OpArgs, Lit, Param};
use crate::syntax::ast;

/// A layer of the language.
pub struct Layer {
    /// The name it is called by.
    pub name: &'static str,
    /// Its parameters, positional order first, the input tensor first of
    /// all, with their defaults.
    pub params: &'static [Param],
    /// One line for the reference and error hints.
    pub doc: &'static str,
    /// Whether a call is this layer, given whether its first argument is
    /// piped in and its written arguments: a layer that shares its name
    /// with a primitive op (`conv2d`) is the layer only in its own form.
    pub applies: fn(piped: bool, args: &[ast::Arg]) -> bool,
    /// Lowers a call whose arguments are bound and converted.
    pub(crate) expand: fn(&mut Lowerer, &LayerCall<'_>) -> L<NodeId>,
}

/// Every layer, in the order hints list them.
pub fn layers() -> impl Iterator<Item = &'static Layer> {
    dense::LAYERS
        .iter()
        .chain(loss::LAYERS)
        .chain(norm::LAYERS)
        .chain(sequence::LAYERS)
}

/// For layers that are always themselves.
fn always(_piped: bool, _args: &[ast::Arg]) -> bool {
    true
}

/// A layer call after the prologue every layer shares: its arguments bound
/// and converted (defaults filled in; initializers left as written, see
/// [`LayerCall::init`]), and its input tensor (parameter 0) with its type
/// and the span it was written at.
pub(crate) struct LayerCall<'a> {
    /// The layer.
    pub layer: &'static Layer,
    /// The converted arguments.
    pub a: OpArgs,
    /// Where each argument came from.
    pub bound: Bound<'a>,
    /// The whole call, the span of absent arguments.
    pub span: Span,
    /// The input tensor.
    pub x: NodeId,
    /// Its type.
    pub xty: TensorType,
    /// Where it was written.
    pub x_span: Span,
}

impl<'a> LayerCall<'a> {
    /// Where argument `i` was written (the call when it was not).
    pub fn arg_span(&self, i: usize) -> Span {
        self.bound[i].map_or(self.span, |s| s.span())
    }

    /// The layer's name.
    pub fn name(&self) -> &'static str {
        self.layer.name
    }

    /// The initializer at parameter `i`: as written, else the signature's
    /// default. Parsed here, after the layer's own checks, so that a call
    /// with several mistakes reports the layer's first (one statement, one
    /// error).
    pub fn init(&self, me: &mut Lowerer, i: usize) -> L<Init> {
        if let Some(ArgSrc::Expr(e)) = self.bound[i] {
            return me.init(e);
        }
        match self.layer.params[i].default {
            Some(Lit::Name(name)) => me.default_init(name, self.span),
            _ => Err(me.missing(self, i)),
        }
    }

    /// The number at parameter `i` (given or defaulted).
    pub fn float(&self, me: &mut Lowerer, i: usize) -> L<f64> {
        self.a.float(i).ok_or_else(|| me.missing(self, i))
    }

    /// The flag at parameter `i` (given or defaulted).
    pub fn bool(&self, me: &mut Lowerer, i: usize) -> L<bool> {
        self.a.bool(i).ok_or_else(|| me.missing(self, i))
    }

    /// The integer at parameter `i` (given or defaulted).
    pub fn int(&self, me: &mut Lowerer, i: usize) -> L<i64> {
        self.a.int(i).ok_or_else(|| me.missing(self, i))
    }
}

/// The error for a layer's input of the wrong kind: a type error for class
/// labels, a shape error for an f32 tensor of the wrong shape. `expects`
/// says what the layer takes ("dense expects ...").
fn wrong_input(xty: &TensorType, span: Span, expects: &str) -> Diagnostic {
    let kind = if xty.dtype == DType::F32 {
        ErrorKind::ShapeMismatch
    } else {
        ErrorKind::TypeMismatch
    };
    Diagnostic::new(kind, span, format!("{expects}, found {xty}"))
        .with_label(format!("this is {xty}"))
}

impl Lowerer {
    /// Lowers a layer call; `None` when `func` names no layer (or not in
    /// this form), so that it is an op function.
    pub(super) fn layer(
        &mut self,
        func: &ast::Ident,
        first: Option<ArgSrc<'_>>,
        args: &[ast::Arg],
        span: Span,
    ) -> Option<L<NodeId>> {
        let layer = layers().find(|l| l.name == func.name && (l.applies)(first.is_some(), args))?;
        Some(
            self.layer_call(layer, first, args, span)
                .and_then(|call| (layer.expand)(self, &call)),
        )
    }

    /// The prologue of a layer call: binds `args` to the layer's parameters
    /// and converts each one but the initializers (see [`LayerCall::init`]),
    /// fills in the defaults, then takes the input tensor, parameter 0.
    fn layer_call<'a>(
        &mut self,
        layer: &'static Layer,
        first: Option<ArgSrc<'a>>,
        args: &'a [ast::Arg],
        span: Span,
    ) -> L<LayerCall<'a>> {
        let params = layer.params;
        let bound = self.bind(layer.name, span, params, first, args)?;
        let mut values = Vec::with_capacity(params.len());
        for (p, b) in params.iter().zip(&bound) {
            values.push(match b {
                Some(src) if p.kind != ArgKind::Init => Some(self.convert(layer.name, p, *src)?),
                Some(_) => None,
                None => default(p),
            });
        }
        let a = OpArgs { values };
        let (x, xty) = a.tensor(0).map_err(|e| self.op_error(e, &[], span))?;
        let xty = xty.clone();
        let x_span = bound[0].map_or(span, |s| s.span());
        Ok(LayerCall {
            layer,
            a,
            bound,
            span,
            x,
            xty,
            x_span,
        })
    }

    /// The internal error for an argument a layer reads that was neither
    /// given nor defaulted by its signature.
    fn missing(&mut self, call: &LayerCall<'_>, i: usize) -> Reported {
        let p = &call.layer.params[i];
        self.report(Diagnostic::new(
            ErrorKind::Internal,
            call.span,
            format!(
                "layer `{}` reads argument `{}`, which has no value and no default",
                call.layer.name, p.name
            ),
        ))
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

    /// The optional activation at parameter `i` of a layer call, applied to
    /// `y` (none, `linear` and `none` leave it as it is).
    fn activate(&mut self, call: &LayerCall<'_>, i: usize, y: NodeId) -> L<NodeId> {
        match call.a.name(i) {
            Some(act) if act != "linear" && act != "none" => {
                let at = call.arg_span(i);
                self.activation(act, y, at)
            }
            _ => Ok(y),
        }
    }
}
