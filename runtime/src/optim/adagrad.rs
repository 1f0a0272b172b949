//! Adagrad.

use super::{AdagradConfig, Core, OptimError, Rule, Slots, SLOTS};

/// Adagrad.
///
/// ```text
/// clr = lr / (1 + (t-1)*η)
/// g = grad + wd*p
/// s = s + g²
/// p = p - clr*g/(sqrt(s) + eps)
/// ```
#[derive(Debug, Clone)]
pub struct Adagrad(Core<AdagradConfig>);

impl Adagrad {
    /// An Adagrad optimizer for `n` parameters.
    pub fn new(n: usize, cfg: AdagradConfig) -> Result<Self, OptimError> {
        cfg.validate()?;
        Ok(Adagrad(Core::new(n, cfg)))
    }
}

optimizer_over_core!(Adagrad);

/// The constants of one Adagrad step.
#[derive(Clone, Copy)]
pub(super) struct AdagradStep {
    /// This step's decayed learning rate.
    clr: f32,
    eps: f32,
    wd: f32,
}

impl Rule for AdagradConfig {
    type Step = AdagradStep;
    const STREAMS: bool = false;

    fn kind(&self) -> &'static str {
        "adagrad"
    }

    fn slots(&self) -> [Option<&'static str>; SLOTS] {
        [Some("sum"), None, None]
    }

    fn initial(&self) -> f32 {
        self.initial_accumulator_value
    }

    fn begin(&self, t: u64, lr: f32) -> AdagradStep {
        let AdagradConfig {
            lr_decay,
            eps,
            weight_decay: wd,
            ..
        } = *self;
        let clr = (lr as f64 / (1.0 + (t - 1) as f64 * lr_decay as f64)) as f32;
        AdagradStep { clr, eps, wd }
    }

    fn update(step: &AdagradStep, params: &mut [f32], grads: &[f32], [sum, _, _]: Slots<'_>) {
        let AdagradStep { clr, eps, wd } = *step;
        for ((p, &g), s) in params.iter_mut().zip(grads).zip(sum.iter_mut()) {
            let g = g + wd * *p;
            *s += g * g;
            *p -= clr * g / (s.sqrt() + eps);
        }
    }
}
