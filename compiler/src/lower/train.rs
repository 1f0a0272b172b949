//! `train NAME { ... }` → a typed, validated [`TrainConfig`].

use super::args::{found, literal, suggest};
use crate::autodiff::Regularization;
use crate::diagnostic::{Diagnostic, ErrorKind, Span};
use crate::syntax::ast::{Arg, Expr, ExprKind, TrainDef};

/// An optimizer with its hyper-parameters. Update rules and defaults follow
/// PyTorch's documentation of `torch.optim`.
#[derive(Clone, Debug, PartialEq)]
pub enum Optimizer {
    /// Stochastic gradient descent, optionally with (Nesterov) momentum.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum factor (0 disables momentum).
        momentum: f64,
        /// Dampening of the momentum.
        dampening: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam.
    Adam {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator term.
        eps: f64,
    },
    /// Adam with decoupled weight decay.
    AdamW {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator term.
        eps: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
    },
    /// RMSprop.
    RmsProp {
        /// Learning rate.
        lr: f64,
        /// Smoothing constant.
        alpha: f64,
        /// Denominator term.
        eps: f64,
        /// Momentum factor.
        momentum: f64,
        /// Normalise by the centred second moment.
        centered: bool,
    },
    /// Adagrad.
    Adagrad {
        /// Learning rate.
        lr: f64,
        /// Learning-rate decay.
        lr_decay: f64,
        /// Denominator term.
        eps: f64,
        /// Starting value of the accumulator.
        initial_accumulator: f64,
    },
}

impl Optimizer {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Sgd { lr, .. }
            | Optimizer::Adam { lr, .. }
            | Optimizer::AdamW { lr, .. }
            | Optimizer::RmsProp { lr, .. }
            | Optimizer::Adagrad { lr, .. } => *lr,
        }
    }
}

/// How many samples one optimizer step sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSize {
    /// The whole training set: full-batch gradient descent.
    Full,
    /// Mini-batches of this size (1 is stochastic gradient descent).
    Size(u64),
}

/// The shape of a learning-rate schedule, counted in optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScheduleKind {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        /// Steps between decays.
        every: u64,
        /// Decay factor.
        gamma: f64,
    },
    /// Multiply by `gamma` every step.
    Exponential {
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine annealing from the base rate to `min_lr` over the whole run.
    Cosine {
        /// The final rate.
        min_lr: f64,
    },
}

/// A schedule with optional linear warmup in front.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// The schedule after warmup.
    pub kind: ScheduleKind,
    /// Steps of linear warmup from 0 to the base rate (0 for none).
    pub warmup: u64,
}

/// A validated `train` block.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// The network it trains.
    pub network: String,
    /// The block (or the network, for defaults).
    pub span: Span,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// Samples per step.
    pub batch: BatchSize,
    /// Passes over the training set.
    pub epochs: u64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// L1/L2 penalties added to the loss.
    pub regularization: Regularization,
    /// Decoupled weight decay applied by the optimizer step.
    pub weight_decay: f64,
    /// Seed for initialisation and shuffling.
    pub seed: u64,
}

impl TrainConfig {
    /// The configuration of a network without a `train` block: Adam 1e-3,
    /// batch 32, one epoch, seed 0 (Keras' `fit` defaults).
    pub fn defaults(network: &str) -> Self {
        TrainConfig {
            network: network.to_string(),
            span: Span::default(),
            optimizer: Optimizer::Adam {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            batch: BatchSize::Size(32),
            epochs: 1,
            schedule: Schedule {
                kind: ScheduleKind::Constant,
                warmup: 0,
            },
            regularization: Regularization::default(),
            weight_decay: 0.0,
            seed: 0,
        }
    }
}

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
