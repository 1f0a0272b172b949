//! `train NAME { ... }` → a typed, validated [`TrainConfig`]. Three tables
//! say what a block may contain: [`SETTINGS`] (the keys), and the
//! optimizers and schedules ([`OPTIMIZERS`], [`SCHEDULES`]) with their
//! hyper-parameters, defaults and ranges. Their arguments are bound by the
//! one binder of `lower/args.rs` in its `train` dialect; every mistake in a
//! block is reported.

mod augment;
mod data;
mod optimizers;
mod schedules;

pub use augment::{AugmentDef, AUGMENTS};
pub use optimizers::{OptimizerDef, OPTIMIZERS};
pub use schedules::{ScheduleDef, SCHEDULES};

use super::args::{self, found, literal, suggest, whole_literal, written, Slot, TRAIN};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::ir::{BatchSpec, OptimizerConfig, SplitKind, SplitLayer, TrainConfig};
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
    /// Whether the value is an `f32` in the runtime (so it must be finite
    /// and keep its range there), rather than a count of steps.
    pub real: bool,
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
        real: true,
    }
}

/// A whole number (a count of steps), with a default.
const fn count(
    name: &'static str,
    default: Option<f64>,
    check: fn(f64) -> bool,
    expect: &'static str,
) -> Hyper {
    Hyper {
        name,
        default,
        check,
        expect,
        boolean: false,
        real: false,
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
        real: false,
    }
}

/// Why `v`, valid as a real number, is not valid as the `f32` the runtime
/// keeps: it overflows, or rounds to a value outside the range (`1e-50`
/// becomes 0, which is not positive).
fn f32_problem(e: &Expr, v: f64, check: fn(f64) -> bool, expect: &str) -> Option<String> {
    let r = v as f32;
    let v = written(e);
    if !r.is_finite() {
        Some(format!("{v} does not fit in f32 (at most about ±3.4e38)"))
    } else if !check(f64::from(r)) {
        Some(format!("{v} rounds to {r} in f32, which is not {expect}"))
    } else {
        None
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
    // Below 2^64, so the `u64` it becomes is the value, never clamped.
    (1.0..18_446_744_073_709_551_616.0).contains(&v) && v.fract() == 0.0
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
        if let Some(problem) = v
            .filter(|_| h.real)
            .and_then(|v| f32_problem(e, v, h.check, h.expect))
        {
            errors.push(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    e.span,
                    format!("`{}` of `{}` = {problem}", h.name, c.name),
                )
                .with_label("not representable in f32"),
            );
            continue;
        }
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

/// A whole-number setting of at least `min`, read exactly (a seed may be
/// any `u64`; nothing is rounded or clamped).
fn integer(e: &Expr, key: &str, min: u64, what: &str, errors: &mut Vec<Diagnostic>) -> Option<u64> {
    match whole_literal(e) {
        Some(n) if n >= min => Some(n),
        _ => {
            errors.push(expected(e, key, what));
            None
        }
    }
}

/// [`number`] for a setting the runtime keeps as an `f32`.
fn real(
    e: &Expr,
    key: &str,
    check: fn(f64) -> bool,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<f32> {
    let v = number(e, key, check, what, errors)?;
    match f32_problem(e, v, check, what) {
        None => Some(v as f32),
        Some(problem) => {
            errors.push(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    e.span,
                    format!("`{key}` = {problem}"),
                )
                .with_label("not representable in f32"),
            );
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
            if let Some((o, lr)) = optimizers::optimizer(v, errors) {
                cfg.spec.optimizer = o;
                cfg.spec.lr = lr;
            }
        },
    },
    Setting {
        key: "batch",
        apply: |v, cfg, errors| match (&v.kind, literal(v)) {
            (ExprKind::Name(n), _) if n.name == "full" => cfg.spec.batch = BatchSpec::Full,
            (_, Some((b, true))) if (1.0..=MAX_BATCH).contains(&b) => {
                cfg.spec.batch = BatchSpec::Size(b as usize)
            }
            _ => errors.push(expected(v, "batch", "a positive integer or `full`")),
        },
    },
    Setting {
        key: "epochs",
        apply: |v, cfg, errors| {
            if let Some(n) = integer(v, "epochs", 1, "a positive integer", errors) {
                cfg.spec.epochs = n;
            }
        },
    },
    Setting {
        key: "schedule",
        apply: |v, cfg, errors| {
            if let Some((s, warmup)) = schedules::schedule(v, errors) {
                cfg.spec.schedule = s;
                cfg.spec.warmup = warmup;
            }
        },
    },
    Setting {
        key: "l1",
        apply: |v, cfg, errors| {
            if let Some(n) = real(v, "l1", non_negative, "a number ≥ 0", errors) {
                cfg.regularization.l1 = f64::from(n);
            }
        },
    },
    Setting {
        key: "l2",
        apply: |v, cfg, errors| {
            if let Some(n) = real(v, "l2", non_negative, "a number ≥ 0", errors) {
                cfg.regularization.l2 = f64::from(n);
            }
        },
    },
    Setting {
        key: "weight_decay",
        apply: |v, cfg, errors| {
            if let Some(n) = real(v, "weight_decay", non_negative, "a number ≥ 0", errors) {
                cfg.spec.weight_decay = n;
            }
        },
    },
    Setting {
        key: "seed",
        apply: |v, cfg, errors| {
            if let Some(n) = integer(v, "seed", 0, "a non-negative integer", errors) {
                cfg.spec.seed = n;
            }
        },
    },
    Setting {
        key: "clip_norm",
        apply: |v, cfg, errors| {
            if let Some(n) = real(v, "clip_norm", positive, "a positive number", errors) {
                cfg.spec.clip_norm = Some(n);
            }
        },
    },
    Setting {
        key: "early_stop",
        apply: |v, cfg, errors| {
            let what = "a positive whole number of epochs";
            if let Some(n) = integer(v, "early_stop", 1, what, errors) {
                cfg.spec.early_stop = Some(n);
            }
        },
    },
    Setting {
        key: "augment",
        apply: |v, cfg, errors| {
            if let Some(a) = augment::augment(v, errors) {
                cfg.spec.augment = a;
            }
        },
    },
    Setting {
        key: "data",
        apply: |v, cfg, errors| {
            if let Some(d) = data::source(v, "data", errors) {
                cfg.data = Some(d);
            }
        },
    },
    Setting {
        key: "validation",
        apply: |v, cfg, errors| {
            if let Some(d) = data::validation(v, errors) {
                cfg.validation = Some(d);
            }
        },
    },
    Setting {
        key: "test",
        apply: |v, cfg, errors| {
            if let Some(d) = data::source(v, "test", errors) {
                cfg.test = Some(d);
            }
        },
    },
    Setting {
        key: "teacher",
        apply: |v, cfg, errors| {
            if let Some(t) = data::teacher(v, errors) {
                cfg.teacher = Some(t);
            }
        },
    },
    Setting {
        key: "stages",
        apply: |v, cfg, errors| {
            // `stages: h1;` or `stages: [h1, h2];`: names only, checked
            // against the network's graph once it is lowered.
            let items: Vec<&Expr> = match &v.kind {
                ExprKind::List(items) => items.iter().collect(),
                _ => vec![v],
            };
            let what = "a binding name or a list of them (`[h1, h2]`)";
            if items.is_empty() {
                errors.push(expected(v, "stages", what));
            }
            for e in items {
                match &e.kind {
                    ExprKind::Name(n) => cfg.stages.push((n.name.clone(), n.span)),
                    _ => errors.push(expected(e, "stages", what)),
                }
            }
        },
    },
    Setting {
        key: "split",
        apply: |v, cfg, errors| {
            // `split: [columns(h1), rows(h2)];`: names only, checked
            // against the network's graph once it is lowered.
            let items: Vec<&Expr> = match &v.kind {
                ExprKind::List(items) => items.iter().collect(),
                _ => vec![v],
            };
            let what =
                "a list of `columns(BINDING)` and `rows(BINDING)` (`[columns(h1), rows(h2)]`)";
            if items.is_empty() {
                errors.push(expected(v, "split", what));
            }
            for e in items {
                let layer = match &e.kind {
                    ExprKind::Call { func, args } => {
                        let kind = match func.name.as_str() {
                            "columns" => Some(SplitKind::Columns),
                            "rows" => Some(SplitKind::Rows),
                            _ => None,
                        };
                        match (kind, args.as_slice()) {
                            (Some(kind), [Arg { name: None, value }]) => match &value.kind {
                                ExprKind::Name(n) => Some(SplitLayer {
                                    binding: n.name.clone(),
                                    kind,
                                    span: e.span,
                                }),
                                _ => None,
                            },
                            _ => None,
                        }
                    }
                    _ => None,
                };
                match layer {
                    Some(l) => cfg.split.push(l),
                    None => errors.push(expected(e, "split", what)),
                }
            }
        },
    },
    Setting {
        key: "split_ranks",
        apply: |v, cfg, errors| {
            let what = "a whole number of ranks, at least 2";
            if let Some(n) = integer(v, "split_ranks", 2, what, errors) {
                match usize::try_from(n) {
                    Ok(n) if n <= 1 << 20 => cfg.split_ranks = n,
                    _ => errors.push(expected(v, "split_ranks", "at most 1048576 ranks")),
                }
            }
        },
    },
];

/// The largest `batch:` (2^40 samples): larger is no batch any machine
/// holds, and the workspace size would overflow.
const MAX_BATCH: f64 = 1_099_511_627_776.0;

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
    if let (OptimizerConfig::AdamW(c), true) =
        (&mut cfg.spec.optimizer, cfg.spec.weight_decay > 0.0)
    {
        // One decoupled decay: the block-level setting wins over adamw's default.
        c.weight_decay = cfg.spec.weight_decay;
        cfg.spec.weight_decay = 0.0;
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}
