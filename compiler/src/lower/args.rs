//! Binding a call's positional and named arguments to a parameter list, and
//! converting each argument to the kind its parameter takes. The one binder
//! ([`bind`]) serves op functions, layers, initializers, optimizers and
//! schedules, so every call reports argument errors the same way; the two
//! families differ only in what [`Dialect`] states.

use super::{Lowerer, Reported, L, MAX_ELEMENTS};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::graph::{Dim, NodeId, Shape};
use crate::ops::{ArgKind, ArgValue, Param};
use crate::syntax::ast::{Arg, Expr, ExprKind};

/// Where an argument's value comes from: source text, or a value already
/// lowered (the left side of `|>`).
#[derive(Clone, Copy, Debug)]
pub enum ArgSrc<'a> {
    /// An expression still to be converted.
    Expr(&'a Expr),
    /// A tensor already lowered, with the span it came from.
    Lowered(NodeId, Span),
}

impl ArgSrc<'_> {
    /// Where the argument is.
    pub fn span(&self) -> Span {
        match self {
            ArgSrc::Expr(e) => e.span,
            ArgSrc::Lowered(_, s) => *s,
        }
    }
}

/// Converted arguments per parameter, with the span each came from.
pub type Converted = (Vec<Option<ArgValue>>, Vec<Option<Span>>);

/// Arguments bound to parameters: for each parameter, its source if given.
pub type Bound<'a> = Vec<Option<ArgSrc<'a>>>;

/// Edit distance, for "did you mean" hints.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a small edit distance.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(name, c), c))
        .filter(|&(d, c)| d <= 2.max(name.len() / 3) && d < c.len().max(name.len()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// A parameter as the binder sees it: ops' and layers' [`Param`]s, and the
/// hyper-parameters of optimizers and schedules.
pub trait Slot {
    /// The name a named argument gives.
    fn name(&self) -> &'static str;
    /// Whether a call must give it.
    fn required(&self) -> bool;
    /// What it takes, as the "missing argument" error says it (`None`: the
    /// error names the parameter only).
    fn describe(&self) -> Option<&'static str>;
}

impl Slot for Param {
    fn name(&self) -> &'static str {
        self.name
    }
    fn required(&self) -> bool {
        self.required
    }
    fn describe(&self) -> Option<&'static str> {
        Some(self.kind.describe())
    }
}

/// Where two families of calls differ in binding: the language's calls
/// (functions, layers, initializers) and the constant calls of `train`
/// blocks (optimizers, schedules). The binding itself is the same.
pub struct Dialect {
    /// Whether a positional argument may follow named ones; it then binds
    /// by its position among all the arguments (`adam(lr: 1e-3, 0.8)` sets
    /// `beta1`).
    pub positional_after_named: bool,
    /// The error for more positional arguments than parameters (the
    /// function and the parameter count).
    pub too_many: fn(&str, usize) -> String,
    /// Names people write for a parameter, suggested before the nearest
    /// spelling: (written, meant).
    pub aliases: &'static [(&'static str, &'static str)],
}

/// The dialect of the language's calls.
pub const CALLS: Dialect = Dialect {
    positional_after_named: false,
    too_many: |func, n| {
        format!(
            "`{func}` takes at most {n} positional argument{}",
            if n == 1 { "" } else { "s" }
        )
    },
    aliases: &[],
};

/// The dialect of a `train` block's optimizers and schedules.
pub const TRAIN: Dialect = Dialect {
    positional_after_named: true,
    too_many: |func, n| format!("`{func}` takes at most {n} arguments"),
    aliases: &[("learning_rate", "lr"), ("epsilon", "eps")],
};

/// Binds `args` (after any `first` value piped in) to `slots`: each
/// argument to the slot its name or its position picks. Every mistake is
/// pushed to `errors`, in the order of the arguments, then each missing
/// argument; the slots bound despite them are returned, so that a caller
/// reporting every mistake can still check their values.
pub fn bind<'a, S: Slot>(
    func: &str,
    call_span: Span,
    slots: &[S],
    first: Option<ArgSrc<'a>>,
    args: &'a [Arg],
    dialect: &Dialect,
    errors: &mut Vec<Diagnostic>,
) -> Bound<'a> {
    let mut bound: Bound<'a> = vec![None; slots.len()];
    let mut seen_named = false;
    let all = first.map(|f| (None, f)).into_iter().chain(
        args.iter()
            .map(|a| (a.name.as_ref(), ArgSrc::Expr(&a.value))),
    );
    for (index, (name, src)) in all.enumerate() {
        let slot = match name {
            Some(n) => {
                seen_named = true;
                match slots.iter().position(|p| p.name() == n.name) {
                    Some(i) => i,
                    None => {
                        errors.push(unknown_parameter(func, n, slots, dialect));
                        continue;
                    }
                }
            }
            None => {
                if seen_named && !dialect.positional_after_named {
                    errors.push(
                        Diagnostic::new(
                            ErrorKind::BadArgument,
                            src.span(),
                            format!("positional argument after named arguments in `{func}`"),
                        )
                        .with_label("move it before the named arguments"),
                    );
                    continue;
                }
                if index >= slots.len() {
                    errors.push(
                        Diagnostic::new(
                            ErrorKind::BadArgument,
                            src.span(),
                            (dialect.too_many)(func, slots.len()),
                        )
                        .with_label("unexpected argument"),
                    );
                    continue;
                }
                index
            }
        };
        if bound[slot].is_some() {
            errors.push(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    src.span(),
                    format!(
                        "argument `{}` of `{func}` is given twice",
                        slots[slot].name()
                    ),
                )
                .with_label("given again here"),
            );
            continue;
        }
        bound[slot] = Some(src);
    }
    for (p, b) in slots.iter().zip(&bound) {
        if p.required() && b.is_none() {
            errors.push(missing(func, p, call_span));
        }
    }
    bound
}

/// The error for a required argument a call does not give.
pub fn missing<S: Slot>(func: &str, slot: &S, call_span: Span) -> Diagnostic {
    let what = slot.describe().map_or(String::new(), |d| format!(" ({d})"));
    Diagnostic::new(
        ErrorKind::BadArgument,
        call_span,
        format!("`{func}` is missing its argument `{}`{what}", slot.name()),
    )
    .with_label(format!("`{}` missing", slot.name()))
}

fn unknown_parameter<S: Slot>(
    func: &str,
    n: &crate::syntax::ast::Ident,
    slots: &[S],
    dialect: &Dialect,
) -> Diagnostic {
    let names: Vec<&str> = slots.iter().map(|p| p.name()).collect();
    let mut d = Diagnostic::new(
        ErrorKind::BadArgument,
        n.span,
        format!(
            "`{func}` has no parameter `{}`; expected one of: {}",
            n.name,
            names.join(", ")
        ),
    )
    .with_label("unknown parameter");
    let alias = dialect
        .aliases
        .iter()
        .find(|(written, meant)| *written == n.name && names.contains(meant))
        .map(|(_, meant)| *meant);
    if let Some(s) = alias.or_else(|| suggest(&n.name, names.iter().copied())) {
        d = d.with_help(format!("did you mean `{s}`?"));
    }
    d
}

impl Lowerer {
    /// Binds `args` (after any `first` value piped in) to `params`.
    /// Lowering reports a call's first mistake only: one statement, one
    /// error.
    pub(super) fn bind<'a>(
        &mut self,
        func: &str,
        call_span: Span,
        params: &[Param],
        first: Option<ArgSrc<'a>>,
        args: &'a [Arg],
    ) -> L<Bound<'a>> {
        let mut errors = Vec::new();
        let bound = bind(func, call_span, params, first, args, &CALLS, &mut errors);
        match errors.into_iter().next() {
            None => Ok(bound),
            Some(d) => Err(self.report(d)),
        }
    }

    /// Converts one bound argument to the kind its parameter takes.
    pub(super) fn convert(&mut self, func: &str, param: &Param, src: ArgSrc<'_>) -> L<ArgValue> {
        let expr = match src {
            ArgSrc::Lowered(id, _) => {
                if param.kind == ArgKind::Tensor {
                    return Ok(ArgValue::Tensor(id, self.graph.ty(id).clone()));
                }
                return Err(self.wrong_kind(func, param, src.span(), "a tensor"));
            }
            ArgSrc::Expr(e) => e,
        };
        match param.kind {
            ArgKind::Tensor => {
                let id = self.expr(expr)?;
                Ok(ArgValue::Tensor(id, self.graph.ty(id).clone()))
            }
            ArgKind::Int => match literal(expr) {
                Some((v, true)) => Ok(ArgValue::Int(v as i64)),
                _ => Err(self.wrong_kind(func, param, expr.span, &found(expr))),
            },
            ArgKind::Float => match literal(expr) {
                Some((v, _)) => Ok(ArgValue::Float(v)),
                _ => Err(self.wrong_kind(func, param, expr.span, &found(expr))),
            },
            ArgKind::Bool => match expr.kind {
                ExprKind::Bool(b) => Ok(ArgValue::Bool(b)),
                _ => Err(self.wrong_kind(func, param, expr.span, &found(expr))),
            },
            ArgKind::Name => match &expr.kind {
                ExprKind::Name(n) => Ok(ArgValue::Name(n.name.clone())),
                _ => Err(self.wrong_kind(func, param, expr.span, &found(expr))),
            },
            ArgKind::Init => self.init(expr).map(ArgValue::Init),
            ArgKind::Axes | ArgKind::Ints => {
                let items: Vec<&Expr> = match &expr.kind {
                    ExprKind::List(items) => items.iter().collect(),
                    _ => vec![expr],
                };
                let mut axes = Vec::new();
                for item in items {
                    match literal(item) {
                        Some((v, true)) => axes.push(v as i64),
                        _ => return Err(self.wrong_kind(func, param, item.span, &found(item))),
                    }
                }
                Ok(if param.kind == ArgKind::Ints {
                    ArgValue::Ints(axes)
                } else {
                    ArgValue::Axes(axes)
                })
            }
            ArgKind::Shape => {
                let ExprKind::List(items) = &expr.kind else {
                    return Err(self.wrong_kind(func, param, expr.span, &found(expr)));
                };
                let mut dims = Vec::new();
                for item in items {
                    match (&item.kind, literal(item)) {
                        (ExprKind::Name(n), _) if n.name == "batch" => dims.push(Dim::Batch),
                        (_, Some((v, true))) if v >= 1.0 && v <= MAX_ELEMENTS as f64 => {
                            dims.push(Dim::Fixed(v as usize))
                        }
                        (_, Some((v, true))) if v > MAX_ELEMENTS as f64 => {
                            return Err(self.report(
                                Diagnostic::new(
                                    ErrorKind::Invalid,
                                    item.span,
                                    format!("a dimension of `{func}`'s shape is too large"),
                                )
                                .with_label("more than 2^40"),
                            ))
                        }
                        _ => {
                            return Err(self.report(
                                Diagnostic::new(
                                    ErrorKind::BadArgument,
                                    item.span,
                                    format!(
                                        "a dimension of `{func}`'s shape must be a positive integer or `batch`, found {}",
                                        found(item)
                                    ),
                                )
                                .with_label("not a dimension"),
                            ))
                        }
                    }
                }
                Ok(ArgValue::Shape(Shape(dims)))
            }
        }
    }

    fn wrong_kind(&mut self, func: &str, param: &Param, span: Span, found: &str) -> Reported {
        self.report(
            Diagnostic::new(
                ErrorKind::BadArgument,
                span,
                format!(
                    "argument `{}` of `{func}` must be {}, found {found}",
                    param.name,
                    param.kind.describe()
                ),
            )
            .with_label(format!("expected {}", param.kind.describe())),
        )
    }

    /// Binds and converts all arguments, filling in the defaults the
    /// signature states; also returns each one's span (`None` where the
    /// argument was not written).
    pub(super) fn args<'a>(
        &mut self,
        func: &str,
        call_span: Span,
        params: &[Param],
        first: Option<ArgSrc<'a>>,
        args: &'a [Arg],
    ) -> L<Converted> {
        let bound = self.bind(func, call_span, params, first, args)?;
        let mut out = Vec::with_capacity(params.len());
        let spans = bound.iter().map(|b| b.map(|s| s.span())).collect();
        for (p, b) in params.iter().zip(bound) {
            out.push(match b {
                Some(src) => Some(self.convert(func, p, src)?),
                None => default(p),
            });
        }
        Ok((out, spans))
    }
}

/// The value of an omitted argument: its parameter's default, if any.
pub fn default(param: &Param) -> Option<ArgValue> {
    param.default.and_then(|d| d.value(param.kind))
}

/// A numeric literal, possibly negated: its value and whether it is an integer.
pub fn literal(e: &Expr) -> Option<(f64, bool)> {
    match &e.kind {
        ExprKind::Number { value, is_int, .. } => Some((*value, *is_int)),
        ExprKind::Neg(inner) => literal(inner).map(|(v, i)| (-v, i)),
        _ => None,
    }
}

/// A numeric literal, possibly negated, as written (`-1e-3`); for other
/// expressions, "the expression".
pub fn written(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number { text, .. } => text.clone(),
        ExprKind::Neg(inner) => format!("-{}", written(inner)),
        _ => "the expression".to_string(),
    }
}

/// The exact value of a whole-number literal: an integer as written (any
/// `u64`), or a real literal without fraction below 2^53 (`1e3`); `None`
/// for anything else, a negative number included.
pub fn whole_literal(e: &Expr) -> Option<u64> {
    match &e.kind {
        ExprKind::Number {
            is_int: true, text, ..
        } => text.parse().ok(),
        ExprKind::Number { value, .. }
            if value.fract() == 0.0 && *value <= 9.007_199_254_740_992e15 =>
        {
            Some(*value as u64)
        }
        _ => None,
    }
}

/// How an expression is described in "found ..." messages.
pub fn found(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number {
            is_int: true, text, ..
        } => format!("the integer {text}"),
        ExprKind::Number { .. } | ExprKind::Neg(_) if literal(e).is_some() => {
            format!("the number {}", written(e))
        }
        ExprKind::Bool(b) => format!("`{b}`"),
        ExprKind::Str(s) => format!("the string {s:?}"),
        ExprKind::Name(n) => format!("the name `{}`", n.name),
        ExprKind::List(_) => "a list".to_string(),
        ExprKind::Call { func, .. } => format!("a call to `{}`", func.name),
        _ => "an expression".to_string(),
    }
}
