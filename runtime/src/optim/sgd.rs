//! Stochastic gradient descent: plain, with momentum, or Nesterov.

use super::{Core, OptimError, Rule, SgdConfig, Slots, SLOTS};

/// Stochastic gradient descent, optionally with (Nesterov) momentum.
///
/// ```text
/// g = grad + wd*p
/// if μ != 0: b = (t == 1) ? g : μ*b + (1-τ)*g
///            g = nesterov ? g + μ*b : b
/// p = p - lr*g
/// ```
#[derive(Debug, Clone)]
pub struct Sgd(Core<SgdConfig>);

impl Sgd {
    /// An SGD optimizer for `n` parameters.
    pub fn new(n: usize, cfg: SgdConfig) -> Result<Self, OptimError> {
        cfg.validate()?;
        Ok(Sgd(Core::new(n, cfg)))
    }
}

optimizer_over_core!(Sgd);

/// The constants of one SGD step.
#[derive(Clone, Copy)]
pub(super) struct SgdStep {
    cfg: SgdConfig,
    /// The momentum buffer starts as the first gradient.
    first: bool,
    lr: f32,
}

impl Rule for SgdConfig {
    type Step = SgdStep;
    const STREAMS: bool = true;

    fn kind(&self) -> &'static str {
        "sgd"
    }

    /// The momentum buffer, kept only with momentum.
    fn slots(&self) -> [Option<&'static str>; SLOTS] {
        [
            (self.momentum != 0.0).then_some("momentum_buffer"),
            None,
            None,
        ]
    }

    fn begin(&self, t: u64, lr: f32) -> SgdStep {
        SgdStep {
            cfg: *self,
            first: t == 1,
            lr,
        }
    }

    /// The update of matching parameters, gradients and momentum buffer
    /// (empty without momentum).
    fn update(step: &SgdStep, params: &mut [f32], grads: &[f32], [bufs, _, _]: Slots<'_>) {
        let SgdConfig {
            momentum: mu,
            dampening,
            nesterov,
            weight_decay: wd,
        } = step.cfg;
        let lr = step.lr;
        if mu == 0.0 {
            for (p, &g) in params.iter_mut().zip(grads) {
                let g = g + wd * *p;
                *p -= lr * g;
            }
            return;
        }
        let keep = 1.0 - dampening;
        for ((p, &g), b) in params.iter_mut().zip(grads).zip(bufs) {
            let g = g + wd * *p;
            *b = if step.first { g } else { mu * *b + keep * g };
            let d = if nesterov { g + mu * *b } else { *b };
            *p -= lr * d;
        }
    }
}
