//! dfdx peer: W1/W2 (MLP) on the stable toolchain; W3 (LeNet-5) only when
//! built with the `conv` feature, which turns on dfdx's `nightly` feature
//! (Conv2D / MaxPool2D / Flatten2D need `generic_const_exprs`) and so needs a
//! nightly rustc. Without it W3 is reported as unsupported. (As of dfdx 0.13.0
//! that feature no longer builds at all: it also enables gemm-common 0.15's
//! `nightly` feature, which uses the removed `stdsimd` feature, E0635.)
//!
//! dfdx has no sparse cross-entropy: the labels are one-hot encoded up front
//! and fed to `cross_entropy_with_logits_loss` (the same loss value).
#![cfg_attr(feature = "conv", allow(incomplete_features))]
#![cfg_attr(feature = "conv", feature(generic_const_exprs))]

use dfdx::optim::{Adam, Optimizer};
use dfdx::prelude::*;
use peers_common::{load_train, measure, report, report_unsupported, Options, Workload};

const VERSION: &str = "0.13.0";

type Mlp<const H: usize> = ((Linear<784, H>, ReLU), (Linear<H, H>, ReLU), Linear<H, 10>);

#[cfg(feature = "conv")]
type LeNet = (
    (Conv2D<1, 6, 5, 1, 2>, ReLU, MaxPool2D<2, 2>),
    (Conv2D<6, 16, 5>, ReLU, MaxPool2D<2, 2>),
    Flatten2D,
    (Linear<400, 120>, ReLU),
    (Linear<120, 84>, ReLU),
    Linear<84, 10>,
);

type X2 = Tensor<(usize, Const<784>), f32, Cpu>;
type Y = Tensor<(usize, Const<10>), f32, Cpu>;

fn adam_config() -> AdamConfig {
    AdamConfig { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weight_decay: None }
}

/// Trains any module mapping `Input` (traced) to `(batch, 10)` logits.
macro_rules! run {
    ($opts:expr, $dev:expr, $ModelTy:ty, $xs:expr, $ys:expr) => {{
        let dev = $dev.clone();
        let (xs, ys) = (&$xs, &$ys);
        measure(
            $opts,
            xs.len(),
            || {
                let model = dev.build_module::<$ModelTy, f32>();
                let grads = model.alloc_grads();
                let opt = Adam::new(&model, adam_config());
                (model, Some(grads), opt)
            },
            |(model, grads, opt), b| {
                let g = grads.take().unwrap();
                let logits = model.forward_mut(xs[b].clone().traced(g));
                let loss = cross_entropy_with_logits_loss(logits, ys[b].clone());
                let l = loss.array();
                let mut g = loss.backward();
                opt.update(model, &g).expect("adam update");
                model.zero_grads(&mut g);
                *grads = Some(g);
                l
            },
        )
    }};
}

fn main() {
    let opts = Options::from_args();
    let data = load_train(&opts.data_dir);
    let dev: Cpu = Default::default();
    let bs = opts.workload.batch();
    let nb = data.num_batches(bs);

    let xs: Vec<X2> = (0..nb)
        .map(|i| dev.tensor_from_vec(data.batch(bs, i).0.to_vec(), (bs, Const::<784>)))
        .collect();
    let ys: Vec<Y> = (0..nb)
        .map(|i| {
            let mut onehot = vec![0f32; bs * 10];
            for (r, &l) in data.batch(bs, i).1.iter().enumerate() {
                onehot[r * 10 + l as usize] = 1.0;
            }
            dev.tensor_from_vec(onehot, (bs, Const::<10>))
        })
        .collect();

    let toolchain = if cfg!(feature = "conv") { "nightly rustc, dfdx/nightly" } else { "stable rustc" };
    let notes = format!(
        "Cpu device (gemm + rayon), one-hot targets + cross_entropy_with_logits_loss; {toolchain}; RAYON_NUM_THREADS={}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_default()
    );

    let m = match opts.workload {
        Workload::W1 => run!(&opts, dev, Mlp<128>, xs, ys),
        Workload::W2 => run!(&opts, dev, Mlp<2048>, xs, ys),
        Workload::W3 => {
            #[cfg(feature = "conv")]
            {
                type X4 = Tensor<(usize, Const<1>, Const<28>, Const<28>), f32, Cpu>;
                let xs4: Vec<X4> = xs.iter().map(|x| x.clone().reshape_like(&(bs, Const, Const, Const))).collect();
                run!(&opts, dev, LeNet, xs4, ys)
            }
            #[cfg(not(feature = "conv"))]
            {
                report_unsupported(
                    "dfdx",
                    VERSION,
                    &opts,
                    "dfdx 0.13 gates Conv2D/MaxPool2D/Flatten2D behind its `nightly` feature \
                     (generic_const_exprs), which also enables gemm-common 0.15's `nightly` \
                     feature; that uses the long-removed `stdsimd` library feature and does not \
                     compile on current nightly rustc (error E0635), so LeNet cannot be built",
                );
                return;
            }
        }
    };
    report("dfdx", VERSION, "cpu", &notes, &opts, &m);
}
