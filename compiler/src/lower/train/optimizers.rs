//! The optimizers a `train` block names: one table of each optimizer's
//! hyper-parameters (with PyTorch's defaults and the valid ranges) and the
//! contract's [`OptimizerConfig`] its values make, with the learning rate
//! beside it (the runtime's schedules move the rate, not the config).

use super::{
    const_call, expected, flag, hypers, non_negative, num, positive, unit, unknown, Hyper,
};
use crate::diagnostic::{Diagnostic, ErrorKind};
use crate::ir::{AdagradConfig, AdamConfig, OptimizerConfig, RmspropConfig, SgdConfig};
use crate::syntax::ast::Expr;

/// Why a combination of values is invalid: the message and the label.
pub type Invalid = (&'static str, &'static str);

/// An optimizer of the language.
pub struct OptimizerDef {
    /// Its name.
    pub name: &'static str,
    /// Its hyper-parameters, positional order.
    pub params: &'static [Hyper],
    /// The optimizer the values (in parameter order, defaults filled in;
    /// `lr` first) make, or why the combination is invalid.
    pub build: fn(&[f32]) -> Result<OptimizerConfig, Invalid>,
}

const LR: &str = "a positive number";
const BETA: &str = "a number in [0, 1)";
const NN: &str = "a number ≥ 0";

fn sgd(v: &[f32]) -> Result<OptimizerConfig, Invalid> {
    if v[3] != 0.0 && (v[1] == 0.0 || v[2] != 0.0) {
        return Err((
            "Nesterov momentum needs a positive `momentum` and zero `dampening`",
            "invalid combination",
        ));
    }
    Ok(OptimizerConfig::Sgd(SgdConfig {
        momentum: v[1],
        dampening: v[2],
        nesterov: v[3] != 0.0,
        weight_decay: 0.0,
    }))
}

/// Every optimizer, in the order errors list them.
pub static OPTIMIZERS: &[OptimizerDef] = &[
    OptimizerDef {
        name: "sgd",
        params: &[
            num("lr", 1e-3, positive, LR),
            num("momentum", 0.0, non_negative, NN),
            num("dampening", 0.0, non_negative, NN),
            flag("nesterov"),
        ],
        build: sgd,
    },
    OptimizerDef {
        name: "momentum",
        params: &[
            num("lr", 1e-3, positive, LR),
            num("momentum", 0.9, non_negative, NN),
            num("dampening", 0.0, non_negative, NN),
            flag("nesterov"),
        ],
        build: sgd,
    },
    OptimizerDef {
        name: "adam",
        params: &[
            num("lr", 1e-3, positive, LR),
            num("beta1", 0.9, unit, BETA),
            num("beta2", 0.999, unit, BETA),
            num("eps", 1e-8, positive, LR),
        ],
        build: |v| {
            Ok(OptimizerConfig::Adam(AdamConfig {
                beta1: v[1],
                beta2: v[2],
                eps: v[3],
                weight_decay: 0.0,
            }))
        },
    },
    OptimizerDef {
        name: "adamw",
        params: &[
            num("lr", 1e-3, positive, LR),
            num("beta1", 0.9, unit, BETA),
            num("beta2", 0.999, unit, BETA),
            num("eps", 1e-8, positive, LR),
            num("weight_decay", 1e-2, non_negative, NN),
        ],
        build: |v| {
            Ok(OptimizerConfig::AdamW(AdamConfig {
                beta1: v[1],
                beta2: v[2],
                eps: v[3],
                weight_decay: v[4],
            }))
        },
    },
    OptimizerDef {
        name: "rmsprop",
        params: &[
            num("lr", 1e-2, positive, LR),
            num("alpha", 0.99, unit, BETA),
            num("eps", 1e-8, positive, LR),
            num("momentum", 0.0, non_negative, NN),
            flag("centered"),
        ],
        build: |v| {
            Ok(OptimizerConfig::Rmsprop(RmspropConfig {
                alpha: v[1],
                eps: v[2],
                momentum: v[3],
                centered: v[4] != 0.0,
                weight_decay: 0.0,
            }))
        },
    },
    OptimizerDef {
        name: "adagrad",
        params: &[
            num("lr", 1e-2, positive, LR),
            num("lr_decay", 0.0, non_negative, NN),
            num("eps", 1e-10, positive, LR),
            num("initial_accumulator", 0.0, non_negative, NN),
        ],
        build: |v| {
            Ok(OptimizerConfig::Adagrad(AdagradConfig {
                lr_decay: v[1],
                initial_accumulator_value: v[3],
                eps: v[2],
                weight_decay: 0.0,
            }))
        },
    },
];

/// The optimizer an `optimizer:` value names and its learning rate, or
/// `None` after pushing why.
pub(super) fn optimizer(e: &Expr, errors: &mut Vec<Diagnostic>) -> Option<(OptimizerConfig, f32)> {
    let Some(c) = const_call(e) else {
        errors.push(expected(
            e,
            "optimizer",
            "an optimizer such as `adam(lr: 1e-3)`",
        ));
        return None;
    };
    let Some(def) = OPTIMIZERS.iter().find(|o| o.name == c.name) else {
        let names: Vec<&str> = OPTIMIZERS.iter().map(|o| o.name).collect();
        errors.push(unknown("optimizer", &c, &names));
        return None;
    };
    // Every value fits an f32 (`hypers` checked it).
    let v: Vec<f32> = hypers(&c, def.params, errors)?
        .iter()
        .map(|&v| v as f32)
        .collect();
    match (def.build)(&v) {
        Ok(o) => Some((o, v[0])),
        Err((message, label)) => {
            errors.push(Diagnostic::new(ErrorKind::BadArgument, c.span, message).with_label(label));
            None
        }
    }
}
