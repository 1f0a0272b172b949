//! `train NAME { ... }` → a typed, validated [`TrainConfig`]. Three tables
//! say what a block may contain: [`SETTINGS`] (the keys), and the
//! optimizers and schedules ([`OPTIMIZERS`], [`SCHEDULES`]) with their
//! hyper-parameters, defaults and ranges. Their arguments are bound by the
//! one binder of `lower/args.rs` in its `train` dialect; every mistake in a
//! block is reported.

mod optimizers;
mod schedules;

pub use optimizers::{OptimizerDef, OPTIMIZERS};
pub use schedules::{ScheduleDef, SCHEDULES};

use super::args::{self, found, literal, suggest, Slot, TRAIN};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::ir::{BatchSize, Optimizer, TrainConfig};
use crate::syntax::ast::{Arg, Expr, ExprKind, TrainDef};

/// A hyper-parameter of an optimizer or schedule: its name, its default
/// (`None`: required), the range of valid values and how that range is
/// described, and whether it is a flag (`true`/`false`, read as 1 and 0).
pub struct Hyper {
    /// The name a named argument gives.
    pub name: &'static str,
    /// The value when omitted; `None` makes it required.
    pub default: Option<f64>,
    /// Whether a number is in range (not consulted for flags).
    pub check: fn(f64) -> bool,
    /// The range, as errors describe it ("a number in [0, 1)").
    pub expect: &'static str,
    /// A flag rather than a number.
    pub boolean: bool,
}

impl Slot for Hyper {
    fn name(&self) -> &'static str {
        self.name
    }
    fn required(&self) -> bool {
        self.default.is_none()
    }
    fn describe(&self) -> Option<&'static str> {
        None
    }
}

/// A number with a default.
const fn num(
    name: &'static str,
    default: f64,
    check: fn(f64) -> bool,
    expect: &'static str,
) -> Hyper {
    Hyper {
        name,
        default: Some(default),
        check,
        expect,
        boolean: false,
    }
}

/// A flag, off by default.
const fn flag(name: &'static str) -> Hyper {
    Hyper {
        name,
        default: Some(0.0),
        check: |_| true,
        expect: "true or false",
        boolean: true,
    }
}

fn positive(v: f64) -> bool {
    v > 0.0
}
fn non_negative(v: f64) -> bool {
    v >= 0.0
}
fn unit(v: f64) -> bool {
    (0.0..1.0).contains(&v)
}
fn whole(v: f64) -> bool {
    v >= 1.0 && v.fract() == 0.0
}

/// A constant call like `adam(lr: 1e-3)` or a bare name like `constant`.
struct ConstCall<'a> {
    name: &'a str,
    name_span: Span,
    span: Span,
    args: &'a [Arg],
}

fn const_call(e: &Expr) -> Option<ConstCall<'_>> {
    match &e.kind {
        ExprKind::Name(n) => Some(ConstCall {
            name: &n.name,
            name_span: n.span,
            span: e.span,
            args: &[],
        }),
        ExprKind::Call { func, args } => Some(ConstCall {
            name: &func.name,
            name_span: func.span,
            span: e.span,
            args,
        }),
        _ => None,
    }
}

/// The values of a constant call's hyper-parameters (defaults filled in),
/// or `None` after pushing every mistake: binding errors, values out of
/// range, and for a required one without a valid value, that it is
/// missing.
fn hypers(c: &ConstCall<'_>, table: &[Hyper], errors: &mut Vec<Diagnostic>) -> Option<Vec<f64>> {
    let before = errors.len();
    let bound = args::bind(c.name, c.span, table, None, c.args, &TRAIN, errors);
    let mut values: Vec<Option<f64>> = table.iter().map(|h| h.default).collect();
    for ((h, src), value) in table.iter().zip(&bound).zip(&mut values) {
        let Some(src) = src else { continue };
        let e = match src {
            args::ArgSrc::Expr(e) => *e,
            args::ArgSrc::Lowered(..) => continue,
        };
        let v = if h.boolean {
            match e.kind {
                ExprKind::Bool(b) => Some(f64::from(u8::from(b))),
                _ => None,
            }
        } else {
            literal(e).map(|l| l.0).filter(|&v| (h.check)(v))
        };
        match v {
            Some(v) => *value = Some(v),
            None => {
                errors.push(
                    Diagnostic::new(
                        ErrorKind::BadArgument,
                        e.span,
                        format!(
                            "`{}` of `{}` must be {}, found {}",
                            h.name,
                            c.name,
                            h.expect,
                            found(e)
                        ),
                    )
                    .with_label(format!("expected {}", h.expect)),
                );
                // A required value that is not valid is also missing.
                if h.required() {
                    errors.push(args::missing(c.name, h, c.span));
                }
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    values.into_iter().collect()
}

/// The error for a name no table has.
fn unknown(kind: &str, c: &ConstCall<'_>, names: &[&str]) -> Diagnostic {
    let mut d = Diagnostic::new(
        ErrorKind::BadArgument,
        c.name_span,
        format!(
            "unknown {kind} `{}`; expected one of: {}",
            c.name,
            names.join(", ")
        ),
    )
    .with_label(format!("unknown {kind}"));
    if let Some(s) = suggest(c.name, names.iter().copied()) {
        d = d.with_help(format!("did you mean `{s}`?"));
    }
    d
}

fn expected(e: &Expr, key: &str, what: &str) -> Diagnostic {
    Diagnostic::new(
        ErrorKind::BadArgument,
        e.span,
        format!("`{key}` must be {what}, found {}", found(e)),
    )
    .with_label(format!("expected {what}"))
}

fn number(
    e: &Expr,
    key: &str,
    check: fn(f64) -> bool,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<f64> {
    match literal(e) {
        Some((v, _)) if check(v) => Some(v),
        _ => {
            errors.push(expected(e, key, what));
            None
        }
    }
}

/// A key of a `train` block and how its value sets the configuration.
pub struct Setting {
    /// The key.
    pub key: &'static str,
    /// Checks the value and sets it, or pushes why not.
    apply: fn(&Expr, &mut TrainConfig, &mut Vec<Diagnostic>),
}

/// Every setting of a `train` block, in the order errors list them.
pub static SETTINGS: &[Setting] = &[
    Setting {
        key: "optimizer",
        apply: |v, cfg, errors| {
            if let Some(o) = optimizers::optimizer(v, errors) {
                cfg.optimizer = o;
            }
        },
    },
    Setting {
        key: "batch",
        apply: |v, cfg, errors| match (&v.kind, literal(v)) {
            (ExprKind::Name(n), _) if n.name == "full" => cfg.batch = BatchSize::Full,
            (_, Some((b, true))) if b >= 1.0 => cfg.batch = BatchSize::Size(b as u64),
            _ => errors.push(expected(v, "batch", "a positive integer or `full`")),
        },
    },
    Setting {
        key: "epochs",
        apply: |v, cfg, errors| {
            if let Some(n) = number(v, "epochs", whole, "a positive integer", errors) {
                cfg.epochs = n as u64;
            }
        },
    },
    Setting {
        key: "schedule",
        apply: |v, cfg, errors| {
            if let Some(s) = schedules::schedule(v, errors) {
                cfg.schedule = s;
            }
        },
    },
    Setting {
        key: "l1",
        apply: |v, cfg, errors| {
            if let Some(n) = number(v, "l1", non_negative, "a number ≥ 0", errors) {
                cfg.regularization.l1 = n;
            }
        },
    },
    Setting {
        key: "l2",
        apply: |v, cfg, errors| {
            if let Some(n) = number(v, "l2", non_negative, "a number ≥ 0", errors) {
                cfg.regularization.l2 = n;
            }
        },
    },
    Setting {
        key: "weight_decay",
        apply: |v, cfg, errors| {
            if let Some(n) = number(v, "weight_decay", non_negative, "a number ≥ 0", errors) {
                cfg.weight_decay = n;
            }
        },
    },
    Setting {
        key: "seed",
        apply: |v, cfg, errors| {
            let valid = |v: f64| v >= 0.0 && v.fract() == 0.0 && v < 1.8e19;
            if let Some(n) = number(v, "seed", valid, "a non-negative integer", errors) {
                cfg.seed = n as u64;
            }
        },
    },
];

/// Validates a `train` block.
pub fn lower_train(def: &TrainDef) -> Result<TrainConfig, Vec<Diagnostic>> {
    let mut cfg = TrainConfig::defaults(&def.name.name);
    cfg.span = def.span;
    let mut errors = Vec::new();
    let mut seen: Vec<(&str, Span)> = Vec::new();
    for s in &def.settings {
        let key = s.key.name.as_str();
        if let Some(&(_, first)) = seen.iter().find(|(k, _)| *k == key) {
            errors.push(
                Diagnostic::new(
                    ErrorKind::DuplicateName,
                    s.key.span,
                    format!("setting `{key}` is given twice"),
                )
                .with_label("given again here")
                .with_note(first, "first given here"),
            );
            continue;
        }
        seen.push((key, s.key.span));
        match SETTINGS.iter().find(|setting| setting.key == key) {
            Some(setting) => (setting.apply)(&s.value, &mut cfg, &mut errors),
            None => {
                let keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
                let mut d = Diagnostic::new(
                    ErrorKind::BadArgument,
                    s.key.span,
                    format!(
                        "unknown setting `{key}`; expected one of: {}",
                        keys.join(", ")
                    ),
                )
                .with_label("unknown setting");
                if let Some(sug) = suggest(key, keys.iter().copied()) {
                    d = d.with_help(format!("did you mean `{sug}`?"));
                }
                errors.push(d);
            }
        }
    }
    if let (Optimizer::AdamW { weight_decay, .. }, true) =
        (&mut cfg.optimizer, cfg.weight_decay > 0.0)
    {
        // One decoupled decay: the block-level setting wins over adamw's default.
        *weight_decay = cfg.weight_decay;
        cfg.weight_decay = 0.0;
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}
