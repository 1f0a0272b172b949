//! Adam and AdamW (Adam with decoupled weight decay).

use super::{AdamConfig, Core, OptimError, Rule, Slots, SLOTS};

/// Adam, or AdamW when built with [`Adam::adamw`].
///
/// ```text
/// Adam:  g = grad + wd*p            AdamW: p = p - lr*wd*p; g = grad
/// m = β1*m + (1-β1)*g;  v = β2*v + (1-β2)*g²
/// m̂ = m/(1-β1^t);  v̂ = v/(1-β2^t)
/// p = p - lr*m̂/(sqrt(v̂) + eps)
/// ```
/// Evaluated as `p -= (lr/(1-β1^t)) * m / (sqrt(v)/sqrt(1-β2^t) + eps)`,
/// PyTorch's own arrangement, so the per-element work is one sqrt and a divide.
#[derive(Debug, Clone)]
pub struct Adam(Core<AdamRule>);

impl Adam {
    /// Adam with coupled L2 weight decay, for `n` parameters.
    pub fn new(n: usize, cfg: AdamConfig) -> Result<Self, OptimError> {
        Self::build(n, cfg, false)
    }

    /// AdamW (decoupled weight decay), for `n` parameters.
    pub fn adamw(n: usize, cfg: AdamConfig) -> Result<Self, OptimError> {
        Self::build(n, cfg, true)
    }

    fn build(n: usize, cfg: AdamConfig, decoupled: bool) -> Result<Self, OptimError> {
        let rule = AdamRule { cfg, decoupled };
        cfg.validate(rule.kind())?;
        Ok(Adam(Core::new(n, rule)))
    }
}

optimizer_over_core!(Adam);

/// Adam's settings and whether its weight decay is decoupled (AdamW).
#[derive(Debug, Clone)]
struct AdamRule {
    cfg: AdamConfig,
    decoupled: bool,
}

impl Rule for AdamRule {
    /// The step's constants and the chunk loop this CPU runs.
    type Step = (AdamStep, AdamChunk);
    const STREAMS: bool = true;

    fn kind(&self) -> &'static str {
        if self.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }

    fn slots(&self) -> [Option<&'static str>; SLOTS] {
        [Some("exp_avg"), Some("exp_avg_sq"), None]
    }

    /// Fixes the step's constants (bias corrections, decay) and picks the
    /// chunk loop once for the whole step.
    fn begin(&self, t: u64, lr: f32) -> (AdamStep, AdamChunk) {
        let AdamConfig {
            beta1,
            beta2,
            eps,
            weight_decay: wd,
        } = self.cfg;
        // Bias corrections in f64: β^t for large t underflows gracefully to 0.
        let t = t as f64;
        let bc1 = 1.0 - (beta1 as f64).powf(t);
        let bc2 = 1.0 - (beta2 as f64).powf(t);
        let step_size = (lr as f64 / bc1) as f32;
        let inv_bc2_sqrt = (1.0 / bc2.sqrt()) as f32;
        let (c1, c2) = (1.0 - beta1, 1.0 - beta2);
        // Decoupled decay as `p -= (lr*wd)*p` rather than `p *= 1 - lr*wd`:
        // `1 - lr*wd` rounded to f32 loses most digits of a small `lr*wd` and
        // the error would compound every step.
        let (coupled, decay) = if self.decoupled {
            (0.0, lr * wd)
        } else {
            (wd, 0.0)
        };
        let k = AdamStep {
            beta1,
            beta2,
            c1,
            c2,
            eps,
            coupled,
            decay,
            step_size,
            inv_bc2_sqrt,
        };
        (k, AdamStep::chunk_loop())
    }

    fn update((k, run): &(AdamStep, AdamChunk), p: &mut [f32], g: &[f32], [m, v, _]: Slots<'_>) {
        run(k, p, g, m, v)
    }
}

/// The constants of one Adam step.
#[derive(Clone, Copy)]
pub(super) struct AdamStep {
    beta1: f32,
    beta2: f32,
    c1: f32,
    c2: f32,
    eps: f32,
    coupled: f32,
    decay: f32,
    step_size: f32,
    inv_bc2_sqrt: f32,
}

/// An Adam update of one chunk: `(step, params, grads, m, v)`.
pub(super) type AdamChunk = fn(&AdamStep, &mut [f32], &[f32], &mut [f32], &mut [f32]);

impl AdamStep {
    /// The chunk loop for this CPU, chosen once per step (not per chunk):
    /// 8 lanes at a time where the CPU has AVX2, as the update is bound by
    /// its square root and division, which the baseline x86-64 build
    /// issues 4 lanes wide. The same IEEE operations in the same order (no
    /// FMA contraction), so every result is bit-identical to the baseline
    /// loop.
    fn chunk_loop() -> AdamChunk {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected, and only then is this closure
            // handed out.
            return |k, params, grads, m, v| unsafe { k.run_avx2(params, grads, m, v) };
        }
        |k, params, grads, m, v| k.run_any(params, grads, m, v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.run_any(params, grads, m, v);
    }

    #[inline(always)]
    fn run_any(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        let k = *self;
        let state = m.iter_mut().zip(v.iter_mut());
        for ((p, &g), (m, v)) in params.iter_mut().zip(grads).zip(state) {
            let p0 = *p;
            let g = g + k.coupled * p0;
            *m = k.beta1 * *m + k.c1 * g;
            *v = k.beta2 * *v + k.c2 * g * g;
            let denom = v.sqrt() * k.inv_bc2_sqrt + k.eps;
            // Decay and Adam step in one subtraction: one rounding, not two.
            *p = p0 - (k.decay * p0 + k.step_size * *m / denom);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AdamStep;

    /// The AVX2 Adam loop and the baseline one give the same bits
    /// (coupled and decoupled decay, odd lengths for the vector tail).
    #[test]
    fn adam_vector_loop_equals_baseline_bits() {
        let mut rng = crate::rng::Rng::new(3);
        for (coupled, decay) in [(0.0, 0.0), (0.01, 0.0), (0.0, 1e-4)] {
            let k = AdamStep {
                beta1: 0.9,
                beta2: 0.999,
                c1: 0.1,
                c2: 0.001,
                eps: 1e-8,
                coupled,
                decay,
                step_size: 1e-3 / 0.1,
                inv_bc2_sqrt: 1.0 / 0.001f32.sqrt(),
            };
            let n = 1037;
            let vec = |rng: &mut crate::rng::Rng, lo: f32| -> Vec<f32> {
                (0..n).map(|_| rng.uniform_f32(lo, 1.0)).collect()
            };
            let (p, g, m, v) = (
                vec(&mut rng, -1.0),
                vec(&mut rng, -1.0),
                vec(&mut rng, -1.0),
                vec(&mut rng, 0.0),
            );
            let (mut p1, mut m1, mut v1) = (p.clone(), m.clone(), v.clone());
            let (mut p2, mut m2, mut v2) = (p, m, v);
            k.run_any(&mut p1, &g, &mut m1, &mut v1);
            AdamStep::chunk_loop()(&k, &mut p2, &g, &mut m2, &mut v2);
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p1), bits(&p2));
            assert_eq!(bits(&m1), bits(&m2));
            assert_eq!(bits(&v1), bits(&v2));
        }
    }
}
