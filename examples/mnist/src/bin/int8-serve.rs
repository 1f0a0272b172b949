//! nnc's side of the same-run int8 comparison with ONNX Runtime
//! (`bench/peers/int8_same_run.py`, which starts it): trains the MNIST MLP
//! and LeNet (their `train` blocks' settings), calibrates their int8 plans
//! on 300 training digits spread evenly over the set, and writes into DIR
//! the f32 weights (`mlp.safetensors`, `lenet.safetensors`, nnc's layout:
//! dense weights `[in, out]`), the test images (`test_x.f32`, raw
//! little-endian) and labels (`test_y.u8`); prints one JSON line with the
//! test accuracies and then serves timing requests on standard input, one
//! per line, so that the driver can interleave nnc's rounds with its own:
//!
//! ```text
//! > mlp f32 0.2        (model, f32|int8, least seconds of the round)
//! < 612.3 640.1        (on-CPU and wall µs per batch of 256)
//! ```
//!
//! A round runs whole batches of 256 test digits on one thread (a rayon
//! pool of one), passes over them until it lasts the given seconds; the
//! on-CPU time is the thread's (Linux schedstat), as `int8` measures it.
//!
//! ```sh
//! cargo build --release -p nnc-example-mnist --bin int8-serve
//! bench/peers/int8_same_run.sh
//! ```

#![deny(warnings)]

use anyhow::{bail, Context};
use nnc::runtime::checkpoint::save_weights;
use nnc::runtime::data::{load_mnist, Dataset};
use nnc::runtime::quant::Int8Model;
use nnc::runtime::train::fit;
use nnc::runtime::{evaluate, FitOptions, Model, TrainData};
use nnc_example_mnist::int8::{accuracy, calibration_set, timed, BATCH, CLASSES};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod mlp {
    nnc::include_model!("mnist_mlp");
}
mod lenet {
    nnc::include_model!("lenet");
}

/// One model, f32 and int8.
struct Pair<M> {
    f32: M,
    int8: Int8Model,
}

/// Trains `model`, calibrates its int8 plan, saves the f32 weights as
/// `DIR/NAME.safetensors`; returns both forms and their test accuracies.
fn prepare<M: Model>(
    mut model: M,
    quantize: impl FnOnce(&M, &[f32]) -> anyhow::Result<Int8Model>,
    train: &Dataset,
    test: &Dataset,
    dir: &Path,
    name: &str,
) -> anyhow::Result<(Pair<M>, f64, f64)> {
    let opts = FitOptions {
        progress: false,
        verbose: false,
        ..FitOptions::default()
    };
    fit(&mut model, &TrainData::new(train), &opts)?;
    let f32_acc = evaluate(&mut model, test)?.accuracy().unwrap_or(f64::NAN);
    let calibration = calibration_set(train)?;
    let mut int8 = quantize(&model, &calibration)?;
    save_weights(&model, dir.join(format!("{name}.safetensors")))?;
    let x = test.f32_values("image").context("no image column")?;
    let labels = test.class_values("label").context("no label column")?;
    let per = x.len() / test.len();
    let mut y = vec![0.0; test.len() * CLASSES];
    for (i, chunk) in x.chunks(BATCH * per).enumerate() {
        let b = chunk.len() / per;
        int8.predict(
            chunk,
            &mut y[i * BATCH * CLASSES..(i * BATCH + b) * CLASSES],
            b,
        )?;
    }
    let int8_acc = accuracy(&y, labels);
    Ok((Pair { f32: model, int8 }, f32_acc, int8_acc))
}

/// One timed round of `which` (`f32` or `int8`) over the whole test
/// batches, at least `secs` long: on-CPU and wall µs per batch.
fn round<M: Model>(
    pair: &mut Pair<M>,
    which: &str,
    whole: &[f32],
    per: usize,
    secs: f64,
) -> anyhow::Result<(f64, f64)> {
    let mut out = vec![0.0; BATCH * CLASSES];
    let batches = whole.len() / (BATCH * per);
    let mut pass = |pair: &mut Pair<M>| -> anyhow::Result<()> {
        for chunk in whole.chunks(BATCH * per) {
            match which {
                "f32" => {
                    Model::predict(&mut pair.f32, &[chunk], &mut [&mut out[..]])?;
                }
                "int8" => pair.int8.predict(chunk, &mut out, BATCH)?,
                _ => bail!("unknown form `{which}` (f32 or int8)"),
            }
        }
        Ok(())
    };
    // One untimed pass sizes the round (and warms the caches).
    let t = Instant::now();
    pass(pair)?;
    let passes = (secs / t.elapsed().as_secs_f64().max(1e-6)).ceil().max(1.0) as usize;
    let (cpu, wall) = timed(&mut || {
        for _ in 0..passes {
            pass(pair)?;
        }
        Ok(())
    })?;
    let n = (passes * batches) as f64;
    Ok((cpu / n * 1e6, wall / n * 1e6))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().context("usage: int8-serve DIR [MNIST_DIR]")?);
    let data = args.next().map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir)?;
    let mnist = load_mnist(&data).with_context(|| format!("loading {}", data.display()))?;
    let (train, test) = (&mnist.train, &mnist.test);
    let (mut mlp, mlp_f32, mlp_int8) = prepare(
        mlp::MnistMlp::try_new(BATCH)?,
        |m, c| Ok(m.quantize_int8(c, BATCH)?),
        train,
        test,
        &dir,
        "mlp",
    )?;
    let (mut lenet, lenet_f32, lenet_int8) = prepare(
        lenet::LeNet::try_new(BATCH)?,
        |m, c| Ok(m.quantize_int8(c, BATCH)?),
        train,
        test,
        &dir,
        "lenet",
    )?;
    let x = test.f32_values("image").context("no image column")?;
    let labels = test.class_values("label").context("no label column")?;
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("test_x.f32"), bytes)?;
    let ys: Vec<u8> = labels.iter().map(|&l| l as u8).collect();
    std::fs::write(dir.join("test_y.u8"), ys)?;
    let per = x.len() / test.len();
    let whole = &x[..x.len() / (BATCH * per) * BATCH * per];
    println!(
        "{{\"test\": {}, \"kernels\": \"{}\", \"mlp\": {{\"f32_acc\": {mlp_f32}, \"int8_acc\": {mlp_int8}}}, \"lenet\": {{\"f32_acc\": {lenet_f32}, \"int8_acc\": {lenet_int8}}}}}",
        test.len(),
        nnc::runtime::quant::kernel_family()
    );
    std::io::stdout().flush()?;
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let [model, which, secs] = words[..] else {
            bail!("expected `MODEL f32|int8 SECONDS`, got `{line}`");
        };
        let secs: f64 = secs.parse().context("SECONDS")?;
        let (cpu, wall) = one.install(|| match model {
            "mlp" => round(&mut mlp, which, whole, per, secs),
            "lenet" => round(&mut lenet, which, whole, per, secs),
            _ => bail!("unknown model `{model}` (mlp or lenet)"),
        })?;
        println!("{cpu:.1} {wall:.1}");
        std::io::stdout().flush()?;
    }
    Ok(())
}
