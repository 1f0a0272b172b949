//! candle peer: W1/W2 (MLP) and W3 (LeNet-5) on candle's CPU device.
//!
//! Adam is candle-nn's AdamW with weight_decay = 0 (identical update rule).
//! candle's CPU kernels use rayon; its thread count follows RAYON_NUM_THREADS.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{conv2d, linear, loss, AdamW, Conv2d, Conv2dConfig, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use peers_common::{load_train, measure, report, Options, Workload};

const VERSION: &str = "0.11.1";

enum Model {
    Mlp(Linear, Linear, Linear),
    LeNet { c1: Conv2d, c2: Conv2d, f1: Linear, f2: Linear, f3: Linear },
}

impl Model {
    fn new(w: Workload, vb: VarBuilder) -> candle_core::Result<Model> {
        Ok(match w {
            Workload::W1 | Workload::W2 => {
                let h = w.hidden();
                Model::Mlp(linear(784, h, vb.pp("l1"))?, linear(h, h, vb.pp("l2"))?, linear(h, 10, vb.pp("l3"))?)
            }
            Workload::W3 => Model::LeNet {
                c1: conv2d(1, 6, 5, Conv2dConfig { padding: 2, ..Default::default() }, vb.pp("c1"))?,
                c2: conv2d(6, 16, 5, Default::default(), vb.pp("c2"))?,
                f1: linear(16 * 5 * 5, 120, vb.pp("f1"))?,
                f2: linear(120, 84, vb.pp("f2"))?,
                f3: linear(84, 10, vb.pp("f3"))?,
            },
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Model::Mlp(l1, l2, l3) => {
                let x = l1.forward(x)?.relu()?;
                let x = l2.forward(&x)?.relu()?;
                l3.forward(&x)
            }
            Model::LeNet { c1, c2, f1, f2, f3 } => {
                let x = c1.forward(x)?.relu()?.max_pool2d(2)?;
                let x = c2.forward(&x)?.relu()?.max_pool2d(2)?;
                let x = x.flatten_from(1)?;
                let x = f1.forward(&x)?.relu()?;
                let x = f2.forward(&x)?.relu()?;
                f3.forward(&x)
            }
        }
    }
}

fn main() -> candle_core::Result<()> {
    let opts = Options::from_args();
    let data = load_train(&opts.data_dir);
    let dev = Device::Cpu;
    let bs = opts.workload.batch();
    let nb = data.num_batches(bs);
    let conv = opts.workload == Workload::W3;

    let mut xs = Vec::with_capacity(nb);
    let mut ys = Vec::with_capacity(nb);
    for i in 0..nb {
        let (x, y) = data.batch(bs, i);
        let x = Tensor::from_slice(x, (bs, 784), &dev)?;
        xs.push(if conv { x.reshape((bs, 1, 28, 28))? } else { x });
        let y: Vec<u32> = y.iter().map(|&l| l as u32).collect();
        ys.push(Tensor::from_vec(y, bs, &dev)?);
    }

    let m = measure(
        &opts,
        nb,
        || {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let model = Model::new(opts.workload, vb).expect("model");
            let params = ParamsAdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
            let opt = AdamW::new(varmap.all_vars(), params).expect("optimizer");
            (varmap, model, opt)
        },
        |(_varmap, model, opt), b| {
            let logits = model.forward(&xs[b]).expect("forward");
            let l = loss::cross_entropy(&logits, &ys[b]).expect("loss");
            opt.backward_step(&l).expect("backward_step");
            l.to_scalar::<f32>().expect("loss scalar")
        },
    );

    let notes = format!(
        "candle-core+candle-nn CPU device, AdamW(weight_decay=0); RAYON_NUM_THREADS={}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_default()
    );
    report("candle", VERSION, "cpu", &notes, &opts, &m);
    Ok(())
}
