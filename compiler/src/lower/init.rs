//! Initializers: one table of the names a parameter's `= ...` (or a
//! layer's `init:`) accepts, each with its signature and the [`Init`] it
//! builds.

use super::args::{found, suggest};
use super::{Lowerer, L};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::ir::Init;
use crate::ops::{ArgKind, Args, Lit, Param};
use crate::syntax::ast::{self, Expr, ExprKind};

/// An initializer of the language.
pub struct Initializer {
    /// Its name.
    pub name: &'static str,
    /// Its parameters, with their defaults.
    pub params: &'static [Param],
    /// The initializer its bound arguments (defaults filled in) describe;
    /// `None` only when the signature lacks a default it needs.
    pub build: fn(&Args) -> Option<Init>,
}

const F: ArgKind = ArgKind::Float;

const fn named(name: &'static str, init: fn(&Args) -> Option<Init>) -> Initializer {
    Initializer {
        name,
        params: &[],
        build: init,
    }
}

/// Every initializer, in the order error messages list them.
pub static INITIALIZERS: &[Initializer] = &[
    named("zeros", |_| Some(Init::Zeros)),
    named("ones", |_| Some(Init::Ones)),
    Initializer {
        name: "constant",
        params: &[Param::req("value", F)],
        build: |a| Some(Init::Constant(a.float(0)? as f32)),
    },
    Initializer {
        name: "normal",
        params: &[
            Param::opt("mean", F).or(Lit::Float(0.0)),
            Param::opt("std", F).or(Lit::Float(1.0)),
        ],
        build: |a| {
            Some(Init::Normal {
                mean: a.float(0)? as f32,
                std: a.float(1)? as f32,
            })
        },
    },
    Initializer {
        name: "uniform",
        params: &[
            Param::opt("low", F).or(Lit::Float(0.0)),
            Param::opt("high", F).or(Lit::Float(1.0)),
        ],
        build: |a| {
            Some(Init::Uniform {
                low: a.float(0)? as f32,
                high: a.float(1)? as f32,
            })
        },
    },
    named("glorot_uniform", |_| Some(Init::GlorotUniform)),
    named("glorot_normal", |_| Some(Init::GlorotNormal)),
    named("xavier_uniform", |_| Some(Init::GlorotUniform)),
    named("xavier_normal", |_| Some(Init::GlorotNormal)),
    named("he_uniform", |_| Some(Init::HeUniform)),
    named("he_normal", |_| Some(Init::HeNormal)),
    named("kaiming_uniform", |_| Some(Init::HeUniform)),
    named("kaiming_normal", |_| Some(Init::HeNormal)),
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
                            found(e)
                        ),
                    )
                    .with_label("not an initializer"),
                ))
            }
        };
        let Some(init) = INITIALIZERS.iter().find(|i| i.name == name.name) else {
            let names: Vec<&str> = INITIALIZERS.iter().map(|i| i.name).collect();
            let mut d = Diagnostic::new(
                ErrorKind::BadArgument,
                name.span,
                format!(
                    "unknown initializer `{}`; expected one of: {}",
                    name.name,
                    names.join(", ")
                ),
            )
            .with_label("unknown initializer");
            if let Some(s) = suggest(&name.name, names.iter().copied()) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            return Err(self.report(d));
        };
        let (values, _) = self.args(init.name, span, init.params, None, args)?;
        self.build_init(init, &Args { values }, span)
    }

    /// The initializer a layer's signature names as its default.
    pub(super) fn default_init(&mut self, name: &str, span: Span) -> L<Init> {
        let Some(init) = INITIALIZERS.iter().find(|i| i.name == name) else {
            return Err(self.report(Diagnostic::new(
                ErrorKind::Internal,
                span,
                format!("a layer's default initializer `{name}` is not an initializer"),
            )));
        };
        let values = init
            .params
            .iter()
            .map(|p| p.default.and_then(|d| d.value(p.kind)))
            .collect();
        self.build_init(init, &Args { values }, span)
    }

    fn build_init(&mut self, init: &Initializer, a: &Args, span: Span) -> L<Init> {
        let Some(built) = (init.build)(a) else {
            return Err(self.report(Diagnostic::new(
                ErrorKind::Internal,
                span,
                format!("initializer `{}` lacks an argument", init.name),
            )));
        };
        // Values are the runtime's f32s: one that overflows there (`1e39`)
        // is refused here, where it was written.
        let bad = match &built {
            Init::Normal { std, .. } if *std <= 0.0 => Some("`std` must be positive"),
            Init::Uniform { low, high } if low >= high => Some("`low` must be below `high`"),
            _ => built.validate().err(),
        };
        if let Some(msg) = bad {
            return Err(self.report(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    span,
                    format!("{}: {msg}", init.name),
                )
                .with_label("invalid initializer"),
            ));
        }
        Ok(built)
    }
}
