//! Learning-rate schedules: the learning rate as a pure function of the step.
//!
//! A schedule is a value, not a stateful object (unlike PyTorch's
//! `LRScheduler`), so resuming from a checkpoint needs nothing but the step
//! counter, and the lr of any step can be computed out of order (for logging
//! or plotting).
//!
//! Steps are 0-based: `lr_at(base, 0)` is the learning rate of the first
//! optimizer update. Computation is in f64, rounded once to f32.

use thiserror::Error;

use crate::model::{ScheduleSpec, TrainSpec};

/// A learning-rate schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Always `base_lr`.
    Constant,
    /// `base_lr * gamma^(floor(t / step_size))`, like `torch StepLR`.
    Step {
        /// Steps between decays; must be >= 1.
        step_size: u64,
        /// Multiplicative decay.
        gamma: f32,
    },
    /// `base_lr * gamma^t`, like `torch ExponentialLR` (stepped per update).
    Exponential {
        /// Decay per step.
        gamma: f32,
    },
    /// Cosine annealing from `base_lr` to `min_lr` over `total_steps`, the
    /// closed form of `torch CosineAnnealingLR` (`T_max = total_steps`,
    /// `eta_min = min_lr`):
    /// `min_lr + (base_lr - min_lr) * (1 + cos(pi * t / total_steps)) / 2`.
    /// Unlike PyTorch's, which is periodic, it stays at `min_lr` for
    /// `t >= total_steps`: running past the planned end should not restart
    /// a high learning rate.
    Cosine {
        /// Length of the annealing; 0 means "already annealed".
        total_steps: u64,
        /// Absolute floor of the learning rate (not a fraction of base).
        min_lr: f32,
    },
    /// Linear warmup in front of another schedule: `base_lr * (t+1) / steps`
    /// for `t < steps`, so the first update already moves (lr never 0) and
    /// step `steps - 1` reaches `base_lr`; from then on `inner` runs on
    /// `t - steps`, i.e. it starts at its own step 0. For warmup followed by
    /// cosine over a run of N steps, give the cosine `N - steps` total steps.
    Warmup {
        /// Warmup length; 0 means no warmup.
        steps: u64,
        /// The schedule that follows.
        inner: Box<Schedule>,
    },
}

/// A schedule whose parameters make no sense.
#[derive(Debug, Error, PartialEq)]
pub enum ScheduleError {
    /// Step decay every 0 steps.
    #[error("step schedule needs step_size >= 1")]
    ZeroStepSize,
    /// A decay factor that is negative or not finite.
    #[error("decay factor gamma = {0} must be finite and >= 0")]
    BadGamma(f32),
    /// A floor that is negative or not finite.
    #[error("min_lr = {0} must be finite and >= 0")]
    BadMinLr(f32),
}

impl Schedule {
    /// Linear warmup of `steps` steps followed by `self`.
    pub fn with_warmup(self, steps: u64) -> Schedule {
        Schedule::Warmup {
            steps,
            inner: Box::new(self),
        }
    }

    /// Checks the parameters, recursively. [`Schedule::lr_at`] never fails,
    /// so run this once where the schedule is built.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        match self {
            Schedule::Constant => Ok(()),
            Schedule::Step { step_size, gamma } => {
                if *step_size == 0 {
                    return Err(ScheduleError::ZeroStepSize);
                }
                check_gamma(*gamma)
            }
            Schedule::Exponential { gamma } => check_gamma(*gamma),
            Schedule::Cosine { min_lr, .. } => {
                if min_lr.is_finite() && *min_lr >= 0.0 {
                    Ok(())
                } else {
                    Err(ScheduleError::BadMinLr(*min_lr))
                }
            }
            Schedule::Warmup { inner, .. } => inner.validate(),
        }
    }

    /// The learning rate for 0-based update `step`.
    ///
    /// Total for all inputs: a `Step` schedule with `step_size == 0` (which
    /// `validate` rejects) behaves as `Constant`.
    pub fn lr_at(&self, base_lr: f32, step: u64) -> f32 {
        self.lr_f64(base_lr as f64, step) as f32
    }

    fn lr_f64(&self, base: f64, t: u64) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Step { step_size, gamma } => {
                if *step_size == 0 {
                    return base;
                }
                base * (*gamma as f64).powf((t / step_size) as f64)
            }
            Schedule::Exponential { gamma } => base * (*gamma as f64).powf(t as f64),
            Schedule::Cosine {
                total_steps,
                min_lr,
            } => {
                let min = *min_lr as f64;
                if t >= *total_steps {
                    return min;
                }
                let frac = t as f64 / *total_steps as f64;
                min + (base - min) * (1.0 + (std::f64::consts::PI * frac).cos()) / 2.0
            }
            Schedule::Warmup { steps, inner } => {
                if t < *steps {
                    base * (t + 1) as f64 / *steps as f64
                } else {
                    inner.lr_f64(base, t - steps)
                }
            }
        }
    }
}

fn check_gamma(gamma: f32) -> Result<(), ScheduleError> {
    if gamma.is_finite() && gamma >= 0.0 {
        Ok(())
    } else {
        Err(ScheduleError::BadGamma(gamma))
    }
}

/// The concrete schedule for a run of `total_steps` optimizer steps.
pub fn schedule_of(train: &TrainSpec, total_steps: u64) -> Schedule {
    let after_warmup = total_steps.saturating_sub(train.warmup).max(1);
    let inner = match train.schedule {
        ScheduleSpec::Constant => Schedule::Constant,
        ScheduleSpec::Step { every, gamma } => Schedule::Step {
            step_size: every,
            gamma,
        },
        ScheduleSpec::Exponential { gamma } => Schedule::Exponential { gamma },
        ScheduleSpec::Cosine { min_lr } => Schedule::Cosine {
            total_steps: after_warmup,
            min_lr,
        },
    };
    if train.warmup > 0 {
        inner.with_warmup(train.warmup)
    } else {
        inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() <= 1e-6 * b.abs().max(1e-12)
    }

    #[test]
    fn constant_step_and_exponential() {
        assert_eq!(Schedule::Constant.lr_at(0.1, 12345), 0.1);
        let s = Schedule::Step {
            step_size: 10,
            gamma: 0.5,
        };
        assert!(close(s.lr_at(0.1, 0), 0.1));
        assert!(close(s.lr_at(0.1, 9), 0.1));
        assert!(close(s.lr_at(0.1, 10), 0.05));
        assert!(close(s.lr_at(0.1, 35), 0.0125));
        let e = Schedule::Exponential { gamma: 0.75 };
        for t in [0u64, 1, 7, 100] {
            assert!(close(e.lr_at(2.0, t), 2.0 * 0.75f64.powi(t as i32)));
        }
    }

    #[test]
    fn cosine_closed_form() {
        let s = Schedule::Cosine {
            total_steps: 100,
            min_lr: 0.001,
        };
        assert!(close(s.lr_at(0.1, 0), 0.1));
        // Halfway: exactly the midpoint of base and min.
        assert!(close(s.lr_at(0.1, 50), (0.1 + 0.001) / 2.0));
        // A quarter: min + (base-min)(1+cos(pi/4))/2.
        let q = 0.001 + 0.099 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0;
        assert!(close(s.lr_at(0.1, 25), q));
        assert!(close(s.lr_at(0.1, 100), 0.001));
        assert!(close(s.lr_at(0.1, 1000), 0.001));
        // Monotone non-increasing.
        let lrs: Vec<f32> = (0..=100).map(|t| s.lr_at(0.1, t)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn warmup_ramps_then_hands_over() {
        let s = Schedule::Cosine {
            total_steps: 90,
            min_lr: 0.0,
        }
        .with_warmup(10);
        assert!(close(s.lr_at(1.0, 0), 0.1));
        assert!(close(s.lr_at(1.0, 4), 0.5));
        assert!(close(s.lr_at(1.0, 9), 1.0));
        assert!(close(s.lr_at(1.0, 10), 1.0)); // cosine step 0
        assert!(close(s.lr_at(1.0, 55), 0.5)); // cosine step 45 of 90
        assert_eq!(s.lr_at(1.0, 100), 0.0);
        let none = Schedule::Constant.with_warmup(0);
        assert_eq!(none.lr_at(0.3, 0), 0.3);
    }

    #[test]
    fn validation() {
        assert_eq!(
            Schedule::Step {
                step_size: 0,
                gamma: 0.5
            }
            .validate(),
            Err(ScheduleError::ZeroStepSize)
        );
        assert!(Schedule::Exponential { gamma: -1.0 }.validate().is_err());
        let nested = Schedule::Cosine {
            total_steps: 10,
            min_lr: f32::NAN,
        }
        .with_warmup(3);
        assert!(nested.validate().is_err());
        assert!(Schedule::Constant.with_warmup(5).validate().is_ok());
        // Invalid but still total.
        let s = Schedule::Step {
            step_size: 0,
            gamma: 0.5,
        };
        assert_eq!(s.lr_at(0.1, 50), 0.1);
    }
}
