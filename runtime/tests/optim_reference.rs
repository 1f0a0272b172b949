//! Optimizers against an independent f64 transcription of PyTorch's documented
//! pseudo-code (torch.optim.SGD/Adam/AdamW/RMSprop/Adagrad), written per
//! element and per step exactly as the docs read, sharing no code with the
//! crate; plus closed forms and convergence on a quadratic.

use nnc_runtime::optim::*;
use nnc_runtime::rng::Rng;

/// The oracle's state for one parameter vector.
#[derive(Clone)]
enum RefOpt {
    Sgd {
        mu: f64,
        tau: f64,
        nesterov: bool,
        wd: f64,
        b: Vec<f64>,
    },
    Adam {
        b1: f64,
        b2: f64,
        eps: f64,
        wd: f64,
        decoupled: bool,
        m: Vec<f64>,
        v: Vec<f64>,
    },
    Rms {
        alpha: f64,
        eps: f64,
        mu: f64,
        centered: bool,
        wd: f64,
        v: Vec<f64>,
        b: Vec<f64>,
        ga: Vec<f64>,
    },
    Adagrad {
        eta: f64,
        eps: f64,
        wd: f64,
        sum: Vec<f64>,
    },
}

impl RefOpt {
    /// One step at (1-based) time `t`.
    fn step(&mut self, t: u64, p: &mut [f64], grad: &[f64], lr: f64) {
        match self {
            RefOpt::Sgd {
                mu,
                tau,
                nesterov,
                wd,
                b,
            } => {
                for i in 0..p.len() {
                    let mut g = grad[i];
                    if *wd != 0.0 {
                        g += *wd * p[i];
                    }
                    if *mu != 0.0 {
                        if t > 1 {
                            b[i] = *mu * b[i] + (1.0 - *tau) * g;
                        } else {
                            b[i] = g;
                        }
                        if *nesterov {
                            g += *mu * b[i];
                        } else {
                            g = b[i];
                        }
                    }
                    p[i] -= lr * g;
                }
            }
            RefOpt::Adam {
                b1,
                b2,
                eps,
                wd,
                decoupled,
                m,
                v,
            } => {
                for i in 0..p.len() {
                    let mut g = grad[i];
                    if *decoupled {
                        p[i] -= lr * *wd * p[i];
                    } else if *wd != 0.0 {
                        g += *wd * p[i];
                    }
                    m[i] = *b1 * m[i] + (1.0 - *b1) * g;
                    v[i] = *b2 * v[i] + (1.0 - *b2) * g * g;
                    let mhat = m[i] / (1.0 - b1.powi(t as i32));
                    let vhat = v[i] / (1.0 - b2.powi(t as i32));
                    p[i] -= lr * mhat / (vhat.sqrt() + *eps);
                }
            }
            RefOpt::Rms {
                alpha,
                eps,
                mu,
                centered,
                wd,
                v,
                b,
                ga,
            } => {
                for i in 0..p.len() {
                    let mut g = grad[i];
                    if *wd != 0.0 {
                        g += *wd * p[i];
                    }
                    v[i] = *alpha * v[i] + (1.0 - *alpha) * g * g;
                    let mut vt = v[i];
                    if *centered {
                        ga[i] = *alpha * ga[i] + (1.0 - *alpha) * g;
                        vt -= ga[i] * ga[i];
                    }
                    if *mu > 0.0 {
                        b[i] = *mu * b[i] + g / (vt.sqrt() + *eps);
                        p[i] -= lr * b[i];
                    } else {
                        p[i] -= lr * g / (vt.sqrt() + *eps);
                    }
                }
            }
            RefOpt::Adagrad { eta, eps, wd, sum } => {
                let clr = lr / (1.0 + (t - 1) as f64 * *eta);
                for i in 0..p.len() {
                    let mut g = grad[i];
                    if *wd != 0.0 {
                        g += *wd * p[i];
                    }
                    sum[i] += g * g;
                    p[i] -= clr * g / (sum[i].sqrt() + *eps);
                }
            }
        }
    }
}

/// Runs the crate's optimizer and the oracle side by side on the same random
/// gradients (drawn independently of the parameters, so tiny f32/f64
/// differences cannot feed back into the trajectory), and returns the largest
/// relative difference of the parameters.
fn compare(config: OptimizerConfig, mut oracle: RefOpt, lr: f32, steps: usize) -> f64 {
    let n = 64;
    let mut rng = Rng::new(2024);
    // Parameters of magnitude 1..2 with random sign: relative error is
    // meaningful and the trajectories stay away from zero.
    let init: Vec<f32> = (0..n)
        .map(|i| {
            let m = rng.uniform_f32(1.0, 2.0);
            if i % 2 == 0 {
                m
            } else {
                -m
            }
        })
        .collect();
    let mut p32 = init.clone();
    let mut p64: Vec<f64> = init.iter().map(|&x| x as f64).collect();
    let mut opt = config.build(n).unwrap();
    for t in 1..=steps {
        // Gradient scale varies per step and per element, like real training.
        let scale = rng.uniform_f32(0.1, 2.0);
        let g32: Vec<f32> = (0..n).map(|_| scale * rng.normal() as f32).collect();
        let g64: Vec<f64> = g32.iter().map(|&g| g as f64).collect();
        opt.step(&mut p32, &g32, lr).unwrap();
        oracle.step(t as u64, &mut p64, &g64, lr as f64);
    }
    assert_eq!(opt.steps(), steps as u64);
    p32.iter()
        .zip(&p64)
        .map(|(&a, &b)| (a as f64 - b).abs() / b.abs())
        .fold(0.0, f64::max)
}

fn zeros(n: usize) -> Vec<f64> {
    vec![0.0; n]
}

#[test]
fn sgd_matches_reference() {
    let cases = [
        (0.0, 0.0, false, 0.0),
        (0.0, 0.0, false, 1e-2),
        (0.9, 0.0, false, 0.0),
        (0.9, 0.1, false, 1e-3),
        (0.9, 0.0, true, 1e-2),
    ];
    for (mu, tau, nesterov, wd) in cases {
        let cfg = SgdConfig {
            momentum: mu,
            dampening: tau,
            nesterov,
            weight_decay: wd,
        };
        let oracle = RefOpt::Sgd {
            mu: mu as f64,
            tau: tau as f64,
            nesterov,
            wd: wd as f64,
            b: zeros(64),
        };
        let err = compare(OptimizerConfig::Sgd(cfg), oracle, 1e-3, 300);
        assert!(err < 1e-5, "{cfg:?}: rel err {err}");
    }
}

#[test]
fn adam_and_adamw_match_reference() {
    for (decoupled, wd) in [(false, 0.0), (false, 1e-2), (true, 1e-2), (true, 0.1)] {
        let cfg = AdamConfig {
            weight_decay: wd,
            ..Default::default()
        };
        let oracle = RefOpt::Adam {
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            wd: wd as f64,
            decoupled,
            m: zeros(64),
            v: zeros(64),
        };
        let config = if decoupled {
            OptimizerConfig::AdamW(cfg)
        } else {
            OptimizerConfig::Adam(cfg)
        };
        let err = compare(config, oracle, 1e-3, 300);
        assert!(err < 1e-5, "{config:?}: rel err {err}");
    }
}

#[test]
fn rmsprop_matches_reference() {
    for (mu, centered, wd) in [
        (0.0, false, 0.0),
        (0.9, false, 1e-2),
        (0.0, true, 0.0),
        (0.5, true, 1e-3),
    ] {
        let cfg = RmspropConfig {
            momentum: mu,
            centered,
            weight_decay: wd,
            ..Default::default()
        };
        let oracle = RefOpt::Rms {
            alpha: 0.99,
            eps: 1e-8,
            mu: mu as f64,
            centered,
            wd: wd as f64,
            v: zeros(64),
            b: zeros(64),
            ga: zeros(64),
        };
        let err = compare(OptimizerConfig::Rmsprop(cfg), oracle, 1e-4, 300);
        assert!(err < 1e-5, "{cfg:?}: rel err {err}");
    }
}

#[test]
fn adagrad_matches_reference() {
    for (eta, init, wd) in [(0.0, 0.0, 0.0), (1e-2, 0.1, 1e-2)] {
        let cfg = AdagradConfig {
            lr_decay: eta,
            initial_accumulator_value: init,
            weight_decay: wd,
            ..Default::default()
        };
        let oracle = RefOpt::Adagrad {
            eta: eta as f64,
            eps: 1e-10,
            wd: wd as f64,
            sum: vec![init as f64; 64],
        };
        let err = compare(OptimizerConfig::Adagrad(cfg), oracle, 1e-2, 300);
        assert!(err < 1e-5, "{cfg:?}: rel err {err}");
    }
}

#[test]
fn adam_first_step_is_lr_times_sign() {
    // m̂ = g and v̂ = g² after one step, so the move is lr*g/(|g|+eps).
    let mut opt = Adam::new(4, AdamConfig::default()).unwrap();
    let mut p = [0.0f32, 1.0, -1.0, 5.0];
    let g = [3.0f32, -0.01, 100.0, -2.0];
    opt.step(&mut p, &g, 0.1).unwrap();
    let want = [-0.1f32, 1.1, -1.1, 5.1];
    for (a, b) in p.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{p:?}");
    }
}

#[test]
fn sgd_on_half_x_squared_decays_geometrically() {
    // f(x) = x²/2, grad = x: x_t = (1-lr)^t x_0.
    let mut opt = Sgd::new(1, SgdConfig::default()).unwrap();
    let mut x = [1.0f32];
    for _ in 0..50 {
        let g = [x[0]];
        opt.step(&mut x, &g, 0.1).unwrap();
    }
    let want = 0.9f64.powi(50);
    assert!(
        (x[0] as f64 - want).abs() < 1e-6 * want.max(1.0) + 1e-7,
        "{x:?} vs {want}"
    );
}

#[test]
fn all_optimizers_minimise_a_quadratic() {
    // f(p) = ½ Σ c_i (p_i - target_i)², ill-conditioned (c from 0.5 to 5).
    let n = 16;
    let c: Vec<f32> = (0..n)
        .map(|i| 0.5 + 4.5 * i as f32 / (n - 1) as f32)
        .collect();
    let target: Vec<f32> = (0..n).map(|i| (i as f32 - 8.0) / 4.0).collect();
    let loss = |p: &[f32]| -> f32 {
        (0..n)
            .map(|i| 0.5 * c[i] * (p[i] - target[i]).powi(2))
            .sum()
    };
    let configs: [(OptimizerConfig, f32); 6] = [
        (OptimizerConfig::Sgd(SgdConfig::default()), 0.1),
        (
            OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.9,
                nesterov: true,
                ..Default::default()
            }),
            0.05,
        ),
        (OptimizerConfig::Adam(AdamConfig::default()), 0.05),
        (OptimizerConfig::AdamW(AdamConfig::default()), 0.05),
        (OptimizerConfig::Rmsprop(RmspropConfig::default()), 0.01),
        (OptimizerConfig::Adagrad(AdagradConfig::default()), 0.5),
    ];
    for (config, lr) in configs {
        let mut opt = config.build(n).unwrap();
        let mut p = vec![0.0f32; n];
        let start = loss(&p);
        let mut g = vec![0.0f32; n];
        for _ in 0..1000 {
            for i in 0..n {
                g[i] = c[i] * (p[i] - target[i]);
            }
            opt.step(&mut p, &g, lr).unwrap();
        }
        let end = loss(&p);
        assert!(end < 1e-3 * start, "{config:?}: {start} -> {end}");
    }
}

#[test]
fn state_round_trip_resumes_bit_for_bit() {
    let configs = [
        OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            ..Default::default()
        }),
        OptimizerConfig::Adam(AdamConfig::default()),
        OptimizerConfig::AdamW(AdamConfig::adamw_default()),
        OptimizerConfig::Rmsprop(RmspropConfig {
            momentum: 0.5,
            centered: true,
            ..Default::default()
        }),
        OptimizerConfig::Adagrad(AdagradConfig::default()),
    ];
    for config in configs {
        let mut rng = Rng::new(1);
        let grads: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..8).map(|_| rng.normal() as f32).collect())
            .collect();
        let mut a = config.build(8).unwrap();
        let mut pa = vec![0.5f32; 8];
        for g in &grads[..10] {
            a.step(&mut pa, g, 0.01).unwrap();
        }
        let saved = a.state();
        let mut pb = pa.clone();
        let mut b = config.build(8).unwrap();
        b.load_state(&saved).unwrap();
        assert_eq!(b.steps(), 10);
        for g in &grads[10..] {
            a.step(&mut pa, g, 0.01).unwrap();
            b.step(&mut pb, g, 0.01).unwrap();
        }
        assert_eq!(pa, pb, "{config:?}");
    }
}
