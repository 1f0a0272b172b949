//! Behaviour shared by every optimizer: streamed and split steps equal the
//! plain one bit for bit, invalid settings and buffers are errors, foreign
//! state is rejected; and gradient clipping.

use super::*;

/// A streamed Adam, AdamW or SGD (plain, momentum, Nesterov) step equals
/// a step on the whole gradient bit for bit, serial and split over a
/// pool, on lengths that end mid-block and mid-chunk; optimizers that
/// need the whole gradient decline and change nothing.
#[test]
fn streamed_step_equals_whole_gradient_step() {
    let mut rng = crate::rng::Rng::new(5);
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for n in [1037, PARALLEL_MIN + 4099] {
            let p0: Vec<f32> = (0..n).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
            let grads: Vec<Vec<f32>> = (0..3)
                .map(|_| (0..n).map(|_| rng.uniform_f32(-1.0, 1.0)).collect())
                .collect();
            let adam = AdamConfig {
                weight_decay: 0.01,
                ..Default::default()
            };
            let sgd = |momentum, nesterov| SgdConfig {
                momentum,
                nesterov,
                weight_decay: 0.01,
                dampening: if nesterov { 0.0 } else { 0.1 },
            };
            let configs = [
                OptimizerConfig::Adam(adam),
                OptimizerConfig::AdamW(adam),
                OptimizerConfig::Sgd(sgd(0.0, false)),
                OptimizerConfig::Sgd(sgd(0.9, false)),
                OptimizerConfig::Sgd(sgd(0.9, true)),
            ];
            for config in configs {
                let build = || config.build(n).unwrap();
                let (mut whole, mut streamed) = (build(), build());
                let (mut p1, mut p2) = (p0.clone(), p0.clone());
                pool.install(|| {
                    for g in &grads {
                        whole.step(&mut p1, g, 1e-2).unwrap();
                        let fill = |start: usize, out: &mut [f32]| {
                            out.copy_from_slice(&g[start..start + out.len()]);
                        };
                        streamed
                            .step_streamed(&mut p2, &fill, 1e-2)
                            .unwrap()
                            .unwrap();
                    }
                });
                let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                let what = format!("{config:?}, {n} params on {threads} threads");
                assert_eq!(bits(&p1), bits(&p2), "{what}");
                assert_eq!(whole.state(), streamed.state());
                assert_ne!(bits(&p1), bits(&p0));
            }
        }
    }
    let mut p = [1.0f32; 4];
    let mut adam = Adam::new(3, AdamConfig::default()).unwrap();
    let fill = |_: usize, out: &mut [f32]| out.fill(1.0);
    assert!(matches!(
        adam.step_streamed(&mut p, &fill, 0.1),
        Some(Err(OptimError::LengthMismatch { .. }))
    ));
    let mut rmsprop = Rmsprop::new(4, RmspropConfig::default()).unwrap();
    assert!(rmsprop.step_streamed(&mut p, &fill, 0.1).is_none());
    assert_eq!((rmsprop.steps(), p), (0, [1.0; 4]));
}

/// A whole-gradient step is the same bits on one thread (one chunk) and
/// split over a pool, for every optimizer and every setting that changes
/// its state buffers or loops, on a length that ends mid-chunk.
#[test]
fn whole_gradient_step_does_not_depend_on_the_thread_count() {
    let mut rng = crate::rng::Rng::new(9);
    let n = PARALLEL_MIN + 4099;
    let p0: Vec<f32> = (0..n).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
    let grads: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..n).map(|_| rng.uniform_f32(-1.0, 1.0)).collect())
        .collect();
    let rmsprop = |momentum, centered| RmspropConfig {
        momentum,
        centered,
        weight_decay: 0.01,
        ..Default::default()
    };
    let sgd = |momentum, nesterov| SgdConfig {
        momentum,
        nesterov,
        weight_decay: 0.01,
        dampening: if nesterov { 0.0 } else { 0.1 },
    };
    let configs = [
        OptimizerConfig::Sgd(sgd(0.0, false)),
        OptimizerConfig::Sgd(sgd(0.9, false)),
        OptimizerConfig::Sgd(sgd(0.9, true)),
        OptimizerConfig::Adam(AdamConfig::default()),
        OptimizerConfig::AdamW(AdamConfig::adamw_default()),
        OptimizerConfig::Rmsprop(rmsprop(0.0, false)),
        OptimizerConfig::Rmsprop(rmsprop(0.9, false)),
        OptimizerConfig::Rmsprop(rmsprop(0.0, true)),
        OptimizerConfig::Rmsprop(rmsprop(0.9, true)),
        OptimizerConfig::Adagrad(AdagradConfig {
            lr_decay: 0.01,
            initial_accumulator_value: 0.1,
            weight_decay: 0.01,
            ..Default::default()
        }),
    ];
    for config in configs {
        let runs = [1, 3].map(|threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut opt = config.build(n).unwrap();
            let mut p = p0.clone();
            pool.install(|| {
                for g in &grads {
                    opt.step(&mut p, g, 1e-2).unwrap();
                }
            });
            let bits = p.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            (bits, opt.state())
        });
        assert_eq!(runs[0].0, runs[1].0, "{config:?}");
        assert_eq!(runs[0].1, runs[1].1, "{config:?}");
    }
}

#[test]
fn invalid_configs_are_rejected() {
    let nesterov = SgdConfig {
        nesterov: true,
        ..Default::default()
    };
    assert!(matches!(
        Sgd::new(3, nesterov),
        Err(OptimError::InvalidConfig { .. })
    ));
    let bad_beta = AdamConfig {
        beta1: 1.0,
        ..Default::default()
    };
    assert!(Adam::new(3, bad_beta).is_err());
    assert!(Rmsprop::new(
        3,
        RmspropConfig {
            alpha: -0.1,
            ..Default::default()
        }
    )
    .is_err());
    assert!(Adagrad::new(
        3,
        AdagradConfig {
            eps: f32::NAN,
            ..Default::default()
        }
    )
    .is_err());
}

#[test]
fn wrong_lengths_are_errors() {
    let mut opt = Adam::new(3, AdamConfig::default()).unwrap();
    let mut p = [0.0; 2];
    assert_eq!(
        opt.step(&mut p, &[0.0; 3], 0.1),
        Err(OptimError::LengthMismatch {
            what: "params",
            expected: 3,
            actual: 2
        })
    );
    assert_eq!(opt.steps(), 0);
}

#[test]
fn state_from_another_optimizer_is_rejected_and_changes_nothing() {
    let mut adam = Adam::new(2, AdamConfig::default()).unwrap();
    let mut p = [1.0, 2.0];
    adam.step(&mut p, &[0.5, -0.5], 0.1).unwrap();
    let before = adam.state();
    let sgd_state = Sgd::new(2, SgdConfig::default()).unwrap().state();
    assert!(adam.load_state(&sgd_state).is_err());
    let mut short = before.clone();
    short.tensors[1].1.pop();
    assert!(adam.load_state(&short).is_err());
    assert_eq!(adam.state(), before);
    let mut adamw = Adam::adamw(2, AdamConfig::default()).unwrap();
    assert!(adamw.load_state(&before).is_err());
}

#[test]
fn clip_grad_norm_scales_to_max() {
    let mut g = [3.0, 4.0];
    let n = clip_grad_norm(&mut g, 1.0);
    assert_eq!(n, 5.0);
    assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
    let mut small = [0.1, 0.1];
    clip_grad_norm(&mut small, 1.0);
    assert_eq!(small, [0.1, 0.1]);
}
