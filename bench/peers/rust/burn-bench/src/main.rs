//! burn peer: W1/W2 (MLP) and W3 (LeNet-5) on the Flex CPU backend with autodiff.
//!
//! burn 0.22 has backend-free tensor types (`Tensor<D>`): the backend is chosen
//! by the device (`Device::flex().autodiff()`).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::relu;
use peers_common::{load_train, measure, report, Options, Workload};

const VERSION: &str = "0.22.1";

#[derive(Module, Debug)]
struct Mlp {
    l1: Linear,
    l2: Linear,
    l3: Linear,
}

impl Mlp {
    fn new(hidden: usize, device: &Device) -> Self {
        Self {
            l1: LinearConfig::new(784, hidden).init(device),
            l2: LinearConfig::new(hidden, hidden).init(device),
            l3: LinearConfig::new(hidden, 10).init(device),
        }
    }
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = relu(self.l1.forward(x));
        let x = relu(self.l2.forward(x));
        self.l3.forward(x)
    }
}

#[derive(Module, Debug)]
struct LeNet {
    c1: Conv2d,
    c2: Conv2d,
    pool: MaxPool2d,
    f1: Linear,
    f2: Linear,
    f3: Linear,
}

impl LeNet {
    fn new(device: &Device) -> Self {
        Self {
            c1: Conv2dConfig::new([1, 6], [5, 5])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
                .init(device),
            c2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            f1: LinearConfig::new(16 * 5 * 5, 120).init(device),
            f2: LinearConfig::new(120, 84).init(device),
            f3: LinearConfig::new(84, 10).init(device),
        }
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.c1.forward(x)));
        let x = self.pool.forward(relu(self.c2.forward(x)));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(self.f1.forward(x));
        let x = relu(self.f2.forward(x));
        self.f3.forward(x)
    }
}

fn main() {
    let opts = Options::from_args();
    let data = load_train(&opts.data_dir);
    let device = Device::flex().autodiff();
    let bs = opts.workload.batch();
    let nb = data.num_batches(bs);

    // All batches as tensors up front: the data is "already in memory".
    let xs: Vec<Tensor<2>> = (0..nb)
        .map(|i| Tensor::from_data(TensorData::new(data.batch(bs, i).0.to_vec(), [bs, 784]), &device))
        .collect();
    let ys: Vec<Tensor<1, Int>> = (0..nb)
        .map(|i| {
            let y: Vec<i32> = data.batch(bs, i).1.iter().map(|&l| l as i32).collect();
            Tensor::from_data(TensorData::new(y, [bs]), &device)
        })
        .collect();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let lr = 1e-3;

    let m = match opts.workload {
        Workload::W1 | Workload::W2 => measure(
            &opts,
            nb,
            || (Some(Mlp::new(opts.workload.hidden(), &device)), AdamConfig::new().with_epsilon(1e-8).init()),
            |(model, optim), b| {
                // Take the model out so the optimizer owns the only reference.
                let m = model.take().unwrap();
                let loss = loss_fn.forward(m.forward(xs[b].clone()), ys[b].clone());
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                *model = Some(optim.step(lr, m, grads));
                loss.into_scalar::<f32>()
            },
        ),
        Workload::W3 => {
            let xs4: Vec<Tensor<4>> = xs.iter().map(|x| x.clone().reshape([bs, 1, 28, 28])).collect();
            measure(
                &opts,
                nb,
                || (Some(LeNet::new(&device)), AdamConfig::new().with_epsilon(1e-8).init()),
                |(model, optim), b| {
                    let m = model.take().unwrap();
                    let loss = loss_fn.forward(m.forward(xs4[b].clone()), ys[b].clone());
                    let grads = GradientsParams::from_grads(loss.backward(), &m);
                    *model = Some(optim.step(lr, m, grads));
                    loss.into_scalar::<f32>()
                },
            )
        }
    };

    let x86v4 = cfg!(feature = "x86-v4");
    let avx512 = {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    };
    let backend = if x86v4 { "flex+x86-v4" } else { "flex" };
    let notes = format!(
        "Autodiff<Flex> (simd, rayon); gemm x86-v4 kernels {}; cpu avx512f={avx512}; RAYON_NUM_THREADS={}",
        if x86v4 { "compiled in" } else { "not compiled" },
        std::env::var("RAYON_NUM_THREADS").unwrap_or_default()
    );
    report("burn", VERSION, backend, &notes, &opts, &m);
}
