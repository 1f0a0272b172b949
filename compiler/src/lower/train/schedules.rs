//! The learning-rate schedules a `train` block names: one table of each
//! schedule's hyper-parameters and the contract's [`ScheduleSpec`] its
//! values make; every schedule also takes `warmup`.

use super::{const_call, count, expected, hypers, non_negative, num, unknown, whole, Hyper};
use crate::diagnostic::Diagnostic;
use crate::ir::ScheduleSpec;
use crate::syntax::ast::Expr;

/// A schedule of the language.
pub struct ScheduleDef {
    /// Its name.
    pub name: &'static str,
    /// Its hyper-parameters, positional order; the last is `warmup`.
    pub params: &'static [Hyper],
    /// The schedule the values (in parameter order, defaults filled in)
    /// make; the warmup is read from the last value.
    pub build: fn(&[f64]) -> ScheduleSpec,
}

/// Steps of linear warmup in front of any schedule.
const WARMUP: Hyper = count(
    "warmup",
    Some(0.0),
    |v| v >= 0.0 && v.fract() == 0.0 && v < 1.8e19,
    "a whole number of steps",
);

const GAMMA: &str = "a number in (0, 1]";

fn decay(g: f64) -> bool {
    g > 0.0 && g <= 1.0
}

/// Every schedule, in the order errors list them.
pub static SCHEDULES: &[ScheduleDef] = &[
    ScheduleDef {
        name: "constant",
        params: &[WARMUP],
        build: |_| ScheduleSpec::Constant,
    },
    ScheduleDef {
        name: "step",
        params: &[
            count("every", None, whole, "a positive whole number of steps"),
            num("gamma", 0.1, decay, GAMMA),
            WARMUP,
        ],
        build: |v| ScheduleSpec::Step {
            every: v[0] as u64,
            gamma: v[1] as f32,
        },
    },
    ScheduleDef {
        name: "exponential",
        params: &[num("gamma", 0.99, decay, GAMMA), WARMUP],
        build: |v| ScheduleSpec::Exponential { gamma: v[0] as f32 },
    },
    ScheduleDef {
        name: "cosine",
        params: &[num("min_lr", 0.0, non_negative, "a number ≥ 0"), WARMUP],
        build: |v| ScheduleSpec::Cosine {
            min_lr: v[0] as f32,
        },
    },
];

/// The schedule a `schedule:` value names and its warmup steps.
pub(super) fn schedule(e: &Expr, errors: &mut Vec<Diagnostic>) -> Option<(ScheduleSpec, u64)> {
    let Some(c) = const_call(e) else {
        errors.push(expected(
            e,
            "schedule",
            "a schedule such as `cosine(warmup: 100)`",
        ));
        return None;
    };
    let Some(def) = SCHEDULES.iter().find(|s| s.name == c.name) else {
        let names: Vec<&str> = SCHEDULES.iter().map(|s| s.name).collect();
        errors.push(unknown("schedule", &c, &names));
        return None;
    };
    let v = hypers(&c, def.params, errors)?;
    Some(((def.build)(&v), v.last().copied().unwrap_or(0.0) as u64))
}
