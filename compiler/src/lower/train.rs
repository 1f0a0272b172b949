//! `train NAME { ... }` → a typed, validated [`TrainConfig`].

use super::args::{found, literal, suggest};
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::ir::{BatchSize, Optimizer, Schedule, ScheduleKind, TrainConfig};
use crate::syntax::ast::{Arg, Expr, ExprKind, TrainDef};

const KEYS: &[&str] = &[
    "optimizer",
    "batch",
    "epochs",
    "schedule",
    "l1",
    "l2",
    "weight_decay",
    "seed",
];

/// A constant call like `adam(lr: 1e-3)` or a bare name like `constant`:
/// its name and its arguments as `(name, value, span)`.
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

/// A parameter of an optimizer or schedule: name, default, valid range check.
struct Hyper {
    name: &'static str,
    default: Option<f64>,
    check: fn(f64) -> bool,
    expect: &'static str,
    boolean: bool,
}

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

/// Binds a constant call's named (or positional) arguments to hyper-parameters.
fn hypers(c: &ConstCall<'_>, table: &[Hyper], errors: &mut Vec<Diagnostic>) -> Option<Vec<f64>> {
    let mut values: Vec<Option<f64>> = table.iter().map(|h| h.default).collect();
    let mut given = vec![false; table.len()];
    let names: Vec<&str> = table.iter().map(|h| h.name).collect();
    let mut ok = true;
    for (pos, arg) in c.args.iter().enumerate() {
        let slot = match &arg.name {
            Some(n) => match names.iter().position(|&k| k == n.name) {
                Some(i) => i,
                None => {
                    let mut d = Diagnostic::new(
                        ErrorKind::BadArgument,
                        n.span,
                        format!(
                            "`{}` has no parameter `{}`; expected one of: {}",
                            c.name,
                            n.name,
                            names.join(", ")
                        ),
                    )
                    .with_label("unknown parameter");
                    let alias = match n.name.as_str() {
                        "learning_rate" => Some("lr"),
                        "epsilon" => Some("eps"),
                        _ => None,
                    }
                    .filter(|a| names.contains(a));
                    if let Some(s) = alias.or_else(|| suggest(&n.name, names.iter().copied())) {
                        d = d.with_help(format!("did you mean `{s}`?"));
                    }
                    errors.push(d);
                    ok = false;
                    continue;
                }
            },
            None if pos < table.len() => pos,
            None => {
                errors.push(
                    Diagnostic::new(
                        ErrorKind::BadArgument,
                        arg.value.span,
                        format!("`{}` takes at most {} arguments", c.name, table.len()),
                    )
                    .with_label("unexpected argument"),
                );
                ok = false;
                continue;
            }
        };
        let h = &table[slot];
        if given[slot] {
            errors.push(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    arg.value.span,
                    format!("argument `{}` of `{}` is given twice", h.name, c.name),
                )
                .with_label("given again here"),
            );
            ok = false;
            continue;
        }
        given[slot] = true;
        let v = if h.boolean {
            match arg.value.kind {
                ExprKind::Bool(b) => Some(f64::from(u8::from(b))),
                _ => None,
            }
        } else {
            literal(&arg.value).map(|l| l.0).filter(|&v| (h.check)(v))
        };
        match v {
            Some(v) => values[slot] = Some(v),
            None => {
                errors.push(
                    Diagnostic::new(
                        ErrorKind::BadArgument,
                        arg.value.span,
                        format!(
                            "`{}` of `{}` must be {}, found {}",
                            h.name,
                            c.name,
                            h.expect,
                            found(&arg.value)
                        ),
                    )
                    .with_label(format!("expected {}", h.expect)),
                );
                ok = false;
            }
        }
    }
    for (h, v) in table.iter().zip(&values) {
        if v.is_none() {
            errors.push(
                Diagnostic::new(
                    ErrorKind::BadArgument,
                    c.span,
                    format!("`{}` is missing its argument `{}`", c.name, h.name),
                )
                .with_label(format!("`{}` missing", h.name)),
            );
            ok = false;
        }
    }
    if ok {
        Some(values.into_iter().map(|v| v.unwrap_or(0.0)).collect())
    } else {
        None
    }
}

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

const OPTIMIZERS: &[&str] = &["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"];

fn optimizer(e: &Expr, errors: &mut Vec<Diagnostic>) -> Option<Optimizer> {
    let Some(c) = const_call(e) else {
        errors.push(expected(
            e,
            "optimizer",
            "an optimizer such as `adam(lr: 1e-3)`",
        ));
        return None;
    };
    const LR: &str = "a positive number";
    const BETA: &str = "a number in [0, 1)";
    const NN: &str = "a number ≥ 0";
    let o = match c.name {
        "sgd" | "momentum" => {
            let m = if c.name == "momentum" { 0.9 } else { 0.0 };
            let v = hypers(
                &c,
                &[
                    num("lr", 1e-3, positive, LR),
                    num("momentum", m, non_negative, NN),
                    num("dampening", 0.0, non_negative, NN),
                    flag("nesterov"),
                ],
                errors,
            )?;
            if v[3] != 0.0 && (v[1] == 0.0 || v[2] != 0.0) {
                errors.push(
                    Diagnostic::new(
                        ErrorKind::BadArgument,
                        c.span,
                        "Nesterov momentum needs a positive `momentum` and zero `dampening`",
                    )
                    .with_label("invalid combination"),
                );
                return None;
            }
            Optimizer::Sgd {
                lr: v[0],
                momentum: v[1],
                dampening: v[2],
                nesterov: v[3] != 0.0,
            }
        }
        "adam" | "adamw" => {
            let mut table = vec![
                num("lr", 1e-3, positive, LR),
                num("beta1", 0.9, unit, BETA),
                num("beta2", 0.999, unit, BETA),
                num("eps", 1e-8, positive, LR),
            ];
            if c.name == "adamw" {
                table.push(num("weight_decay", 1e-2, non_negative, NN));
            }
            let v = hypers(&c, &table, errors)?;
            if c.name == "adam" {
                Optimizer::Adam {
                    lr: v[0],
                    beta1: v[1],
                    beta2: v[2],
                    eps: v[3],
                }
            } else {
                Optimizer::AdamW {
                    lr: v[0],
                    beta1: v[1],
                    beta2: v[2],
                    eps: v[3],
                    weight_decay: v[4],
                }
            }
        }
        "rmsprop" => {
            let v = hypers(
                &c,
                &[
                    num("lr", 1e-2, positive, LR),
                    num("alpha", 0.99, unit, BETA),
                    num("eps", 1e-8, positive, LR),
                    num("momentum", 0.0, non_negative, NN),
                    flag("centered"),
                ],
                errors,
            )?;
            Optimizer::RmsProp {
                lr: v[0],
                alpha: v[1],
                eps: v[2],
                momentum: v[3],
                centered: v[4] != 0.0,
            }
        }
        "adagrad" => {
            let v = hypers(
                &c,
                &[
                    num("lr", 1e-2, positive, LR),
                    num("lr_decay", 0.0, non_negative, NN),
                    num("eps", 1e-10, positive, LR),
                    num("initial_accumulator", 0.0, non_negative, NN),
                ],
                errors,
            )?;
            Optimizer::Adagrad {
                lr: v[0],
                lr_decay: v[1],
                eps: v[2],
                initial_accumulator: v[3],
            }
        }
        _ => {
            errors.push(unknown("optimizer", &c, OPTIMIZERS));
            return None;
        }
    };
    Some(o)
}

const SCHEDULES: &[&str] = &["constant", "step", "exponential", "cosine"];

fn schedule(e: &Expr, errors: &mut Vec<Diagnostic>) -> Option<Schedule> {
    let Some(c) = const_call(e) else {
        errors.push(expected(
            e,
            "schedule",
            "a schedule such as `cosine(warmup: 100)`",
        ));
        return None;
    };
    const W: &str = "a whole number of steps";
    let warmup = || Hyper {
        name: "warmup",
        default: Some(0.0),
        check: |v| v >= 0.0 && v.fract() == 0.0,
        expect: W,
        boolean: false,
    };
    let (kind, warm) = match c.name {
        "constant" => {
            let v = hypers(&c, &[warmup()], errors)?;
            (ScheduleKind::Constant, v[0])
        }
        "step" => {
            let v = hypers(
                &c,
                &[
                    Hyper {
                        name: "every",
                        default: None,
                        check: whole,
                        expect: "a positive whole number of steps",
                        boolean: false,
                    },
                    num("gamma", 0.1, |g| g > 0.0 && g <= 1.0, "a number in (0, 1]"),
                    warmup(),
                ],
                errors,
            )?;
            (
                ScheduleKind::Step {
                    every: v[0] as u64,
                    gamma: v[1],
                },
                v[2],
            )
        }
        "exponential" => {
            let v = hypers(
                &c,
                &[
                    num("gamma", 0.99, |g| g > 0.0 && g <= 1.0, "a number in (0, 1]"),
                    warmup(),
                ],
                errors,
            )?;
            (ScheduleKind::Exponential { gamma: v[0] }, v[1])
        }
        "cosine" => {
            let v = hypers(
                &c,
                &[num("min_lr", 0.0, non_negative, "a number ≥ 0"), warmup()],
                errors,
            )?;
            (ScheduleKind::Cosine { min_lr: v[0] }, v[1])
        }
        _ => {
            errors.push(unknown("schedule", &c, SCHEDULES));
            return None;
        }
    };
    Some(Schedule {
        kind,
        warmup: warm as u64,
    })
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
        let v = &s.value;
        match key {
            "optimizer" => {
                if let Some(o) = optimizer(v, &mut errors) {
                    cfg.optimizer = o;
                }
            }
            "schedule" => {
                if let Some(o) = schedule(v, &mut errors) {
                    cfg.schedule = o;
                }
            }
            "batch" => match (&v.kind, literal(v)) {
                (ExprKind::Name(n), _) if n.name == "full" => cfg.batch = BatchSize::Full,
                (_, Some((b, true))) if b >= 1.0 => cfg.batch = BatchSize::Size(b as u64),
                _ => errors.push(expected(v, "batch", "a positive integer or `full`")),
            },
            "epochs" => {
                if let Some(n) = number(v, key, whole, "a positive integer", &mut errors) {
                    cfg.epochs = n as u64;
                }
            }
            "seed" => {
                if let Some(n) = number(
                    v,
                    key,
                    |v| v >= 0.0 && v.fract() == 0.0 && v < 1.8e19,
                    "a non-negative integer",
                    &mut errors,
                ) {
                    cfg.seed = n as u64;
                }
            }
            "l1" => {
                if let Some(n) = number(v, key, non_negative, "a number ≥ 0", &mut errors) {
                    cfg.regularization.l1 = n;
                }
            }
            "l2" => {
                if let Some(n) = number(v, key, non_negative, "a number ≥ 0", &mut errors) {
                    cfg.regularization.l2 = n;
                }
            }
            "weight_decay" => {
                if let Some(n) = number(v, key, non_negative, "a number ≥ 0", &mut errors) {
                    cfg.weight_decay = n;
                }
            }
            _ => {
                let mut d = Diagnostic::new(
                    ErrorKind::BadArgument,
                    s.key.span,
                    format!(
                        "unknown setting `{key}`; expected one of: {}",
                        KEYS.join(", ")
                    ),
                )
                .with_label("unknown setting");
                if let Some(sug) = suggest(key, KEYS.iter().copied()) {
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
