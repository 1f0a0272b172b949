//! RMSprop, plain or centered, with or without momentum.

use super::{Core, OptimError, RmspropConfig, Rule, Slots, SLOTS};

/// RMSprop.
///
/// ```text
/// g = grad + wd*p
/// v = α*v + (1-α)*g²;  ṽ = v
/// centered: ga = α*ga + (1-α)*g;  ṽ = v - ga²
/// μ > 0: b = μ*b + g/(sqrt(ṽ)+eps);  p = p - lr*b
/// else:  p = p - lr*g/(sqrt(ṽ)+eps)
/// ```
/// One deliberate deviation: in the centered form `ṽ` is clamped at 0 before
/// the square root. It is non-negative in exact arithmetic; rounding can make
/// it a hair negative, where PyTorch would produce NaN.
#[derive(Debug, Clone)]
pub struct Rmsprop(Core<RmspropConfig>);

impl Rmsprop {
    /// An RMSprop optimizer for `n` parameters.
    pub fn new(n: usize, cfg: RmspropConfig) -> Result<Self, OptimError> {
        cfg.validate()?;
        Ok(Rmsprop(Core::new(n, cfg)))
    }
}

optimizer_over_core!(Rmsprop);

/// The constants of one RMSprop step.
#[derive(Clone, Copy)]
pub(super) struct RmspropStep {
    cfg: RmspropConfig,
    lr: f32,
}

impl Rule for RmspropConfig {
    type Step = RmspropStep;
    const STREAMS: bool = false;

    fn kind(&self) -> &'static str {
        "rmsprop"
    }

    /// The square average always; the momentum buffer with momentum, the
    /// gradient average when centered.
    fn slots(&self) -> [Option<&'static str>; SLOTS] {
        [
            Some("square_avg"),
            (self.momentum > 0.0).then_some("momentum_buffer"),
            self.centered.then_some("grad_avg"),
        ]
    }

    fn begin(&self, _t: u64, lr: f32) -> RmspropStep {
        RmspropStep { cfg: *self, lr }
    }

    fn update(step: &RmspropStep, params: &mut [f32], grads: &[f32], state: Slots<'_>) {
        let [square_avg, momentum_buffer, grad_avg] = state;
        let lr = step.lr;
        let RmspropConfig {
            alpha,
            eps,
            momentum: mu,
            centered,
            weight_decay: wd,
        } = step.cfg;
        let c = 1.0 - alpha;
        // Four specialised loops instead of per-element branches.
        let pg = params.iter_mut().zip(grads).zip(square_avg.iter_mut());
        match (centered, mu > 0.0) {
            (false, false) => {
                for ((p, &g), v) in pg {
                    let g = g + wd * *p;
                    *v = alpha * *v + c * g * g;
                    *p -= lr * g / (v.sqrt() + eps);
                }
            }
            (false, true) => {
                for (((p, &g), v), b) in pg.zip(momentum_buffer.iter_mut()) {
                    let g = g + wd * *p;
                    *v = alpha * *v + c * g * g;
                    *b = mu * *b + g / (v.sqrt() + eps);
                    *p -= lr * *b;
                }
            }
            (true, false) => {
                for (((p, &g), v), ga) in pg.zip(grad_avg.iter_mut()) {
                    let g = g + wd * *p;
                    *v = alpha * *v + c * g * g;
                    *ga = alpha * *ga + c * g;
                    let avg = (*v - *ga * *ga).max(0.0).sqrt() + eps;
                    *p -= lr * g / avg;
                }
            }
            (true, true) => {
                let extra = grad_avg.iter_mut().zip(momentum_buffer.iter_mut());
                for (((p, &g), v), (ga, b)) in pg.zip(extra) {
                    let g = g + wd * *p;
                    *v = alpha * *v + c * g * g;
                    *ga = alpha * *ga + c * g;
                    let avg = (*v - *ga * *ga).max(0.0).sqrt() + eps;
                    *b = mu * *b + g / avg;
                    *p -= lr * *b;
                }
            }
        }
    }
}
