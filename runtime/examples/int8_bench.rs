//! The int8 GEMM (`nnc_runtime::quant::qgemm`) against the f32 one
//! (`nnc_runtime::gemm::sgemm_then`) on the layers of the 784-128-128-10
//! MNIST MLP, at batch 256 and batch 1, one thread.
//!
//! ```text
//! cargo run --release -p nnc-runtime --example int8_bench
//! ```
//!
//! Both sides do what inference needs of a layer: the f32 product with the
//! bias + ReLU epilogue generated code fuses into it, against the int8
//! product whose epilogue adds the bias, applies ReLU and requantizes to the
//! next layer's u8 input (the last layer: to f32 logits). The int8 side's
//! input quantization (once per batch, for the first layer) is its own row,
//! and the whole MLP is timed end to end as well, also on all threads.
//!
//! Prints microseconds per call, the median of 9 rounds (f32 and int8
//! alternating within each round, so both see the same machine load), by
//! the calling thread's on-CPU time (robust against other processes on a
//! shared machine) and by wall-clock time.

use std::time::Instant;

use nnc_runtime::gemm::{sgemm_then, MatRef, Parallelism};
use nnc_runtime::quant::{
    kernel_family, qgemm, quantize_u8, ActQuant, Epilogue, MinMax, Output, PackedWeights, QMatRef,
};
use nnc_runtime::rng::Rng;

/// The MLP's layers: (inputs, outputs, ReLU after).
const LAYERS: [(usize, usize, bool); 3] = [(784, 128, true), (128, 128, true), (128, 10, false)];
const ROUNDS: usize = 9;

/// On-CPU nanoseconds of the calling thread (Linux), if reported.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// (on-CPU, wall) seconds per call of `f` over `reps` calls; on-CPU falls
/// back to wall where unavailable.
fn time(reps: usize, f: &mut dyn FnMut()) -> (f64, f64) {
    let cpu = thread_cpu_ns();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let wall = t.elapsed().as_secs_f64();
    let cpu = match (cpu, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 * 1e-9,
        _ => wall,
    };
    (cpu / reps as f64, wall / reps as f64)
}

/// Calls per timed round so that one round takes about 20 ms.
fn reps_for(f: &mut dyn FnMut()) -> usize {
    let t = Instant::now();
    f();
    let once = t.elapsed().as_secs_f64().max(1e-7);
    (0.02 / once).clamp(1.0, 100_000.0) as usize
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median (on-CPU, wall) seconds per call of each function, rounds
/// interleaved.
fn compare(fs: &mut [&mut dyn FnMut()]) -> Vec<(f64, f64)> {
    let reps: Vec<usize> = fs.iter_mut().map(|f| reps_for(*f)).collect();
    let mut samples = vec![(Vec::new(), Vec::new()); fs.len()];
    for _ in 0..ROUNDS {
        for ((f, &r), s) in fs.iter_mut().zip(&reps).zip(&mut samples) {
            let (cpu, wall) = time(r, *f);
            s.0.push(cpu);
            s.1.push(wall);
        }
    }
    samples
        .into_iter()
        .map(|(c, w)| (median(c), median(w)))
        .collect()
}

/// One line of the table; `cpu`: whether the calling thread's on-CPU time
/// means anything (not when other threads do part of the work).
fn row(label: &str, batch: usize, f32_t: (f64, f64), i8_t: (f64, f64), cpu: bool) {
    let us = |s: f64| format!("{:.2}", s * 1e6);
    let ratio = |a: f64, b: f64| format!("{:.2}x", a / b);
    let [fc, ic, rc] = if cpu {
        [us(f32_t.0), us(i8_t.0), ratio(f32_t.0, i8_t.0)]
    } else {
        ["-".into(), "-".into(), "-".into()]
    };
    println!(
        "{label:24} {batch:>5}  {fc:>9} {:>9}  {ic:>9} {:>9}  {rc:>7} {:>7}",
        us(f32_t.1),
        us(i8_t.1),
        ratio(f32_t.1, i8_t.1),
    );
}

/// One layer in both formats, built from the same f32 weights.
struct Layer {
    k: usize,
    n: usize,
    relu: bool,
    w: Vec<f32>,
    bias: Vec<f32>,
    packed: PackedWeights,
    /// The quantization of this layer's input.
    input: ActQuant,
}

fn main() {
    let mut rng = Rng::new(0);
    // He-initialised weights and an input in [0, 1], like MNIST pixels;
    // activation scales calibrated on a forward pass of the f32 model.
    let mut layers: Vec<Layer> = LAYERS
        .iter()
        .map(|&(k, n, relu)| {
            let mut w = vec![0.0; k * n];
            rng.fill_normal(&mut w, 0.0, (2.0 / k as f32).sqrt());
            let bias = (0..n).map(|_| rng.uniform_f32(-0.1, 0.1)).collect();
            let packed = PackedWeights::from_dense_f32(&w, k, n).expect("finite weights");
            let input = ActQuant::new(1.0, 0).expect("valid");
            Layer {
                k,
                n,
                relu,
                w,
                bias,
                packed,
                input,
            }
        })
        .collect();
    let max_batch = 256;
    let x: Vec<f32> = (0..max_batch * 784).map(|_| rng.next_f32()).collect();
    // f32 activations of every layer (inputs and outputs), for calibration
    // and as the f32 side's buffers.
    let mut acts: Vec<Vec<f32>> = vec![x.clone()];
    for l in &layers {
        let mut y = vec![0.0; max_batch * l.n];
        f32_layer(
            l,
            max_batch,
            acts.last().expect("input"),
            &mut y,
            Parallelism::Sequential,
        );
        acts.push(y);
    }
    for (l, a) in layers.iter_mut().zip(&acts) {
        let mut s = MinMax::new();
        s.observe(a);
        l.input = s.act_quant().expect("finite activations");
    }
    let mut q_acts: Vec<Vec<u8>> = acts[..3].iter().map(|a| vec![0u8; a.len()]).collect();
    quantize_u8(layers[0].input, &x, &mut q_acts[0]);
    let mut logits = vec![0.0f32; max_batch * 10];

    println!(
        "int8 kernel family: {}; microseconds per call, median of {ROUNDS} rounds; \
         on-CPU time of the calling thread, then wall clock",
        kernel_family()
    );
    println!(
        "{:24} {:>5}  {:>19}  {:>19}  {:>15}",
        "", "", "f32 (sgemm_then)", "int8 (qgemm)", "f32 / int8"
    );
    println!(
        "{:24} {:>5}  {:>9} {:>9}  {:>9} {:>9}  {:>7} {:>7}",
        "layer", "batch", "cpu", "wall", "cpu", "wall", "cpu", "wall"
    );
    for batch in [256, 1] {
        for li in 0..layers.len() {
            let l = &layers[li];
            let (a_f, rest) = acts.split_at_mut(li + 1);
            let (a_f, y_f) = (&a_f[li], &mut rest[0]);
            let (a_q, y_q) = q_acts.split_at_mut(li + 1);
            let a_q = &a_q[li];
            let next = layers.get(li + 1).map(|n| n.input);
            let mut f32_call = || f32_layer(l, batch, a_f, y_f, Parallelism::Sequential);
            let mut i8_call = || match (next, y_q.first_mut()) {
                (Some(next), Some(y)) => {
                    int8_layer(l, batch, a_q, Out::U8(y, next), Parallelism::Sequential)
                }
                _ => int8_layer(
                    l,
                    batch,
                    a_q,
                    Out::F32(&mut logits),
                    Parallelism::Sequential,
                ),
            };
            let t = compare(&mut [&mut f32_call, &mut i8_call]);
            let act = if l.relu { " relu" } else { "" };
            row(&format!("{}x{}{act}", l.k, l.n), batch, t[0], t[1], true);
        }
        // The int8 side's extra step: quantizing the f32 input.
        let mut nothing = || {};
        let mut quant = || {
            quantize_u8(
                layers[0].input,
                &x[..batch * 784],
                &mut q_acts[0][..batch * 784],
            )
        };
        let t = compare(&mut [&mut nothing, &mut quant]);
        println!(
            "{:24} {batch:>5}  {:>9} {:>9}  {:>9.2} {:>9.2}",
            "quantize input (int8)",
            "-",
            "-",
            t[1].0 * 1e6,
            t[1].1 * 1e6
        );
        for (label, par, cpu) in [
            ("whole MLP, 1 thread", Parallelism::Sequential, true),
            ("whole MLP, all threads", Parallelism::Rayon(0), false),
        ] {
            let mut f32_mlp = || {
                for li in 0..layers.len() {
                    let (a, rest) = acts.split_at_mut(li + 1);
                    f32_layer(&layers[li], batch, &a[li], &mut rest[0], par);
                }
            };
            let mut h1 = vec![0u8; max_batch * 128];
            let mut h2 = vec![0u8; max_batch * 128];
            let mut xq = vec![0u8; max_batch * 784];
            let mut i8_mlp = || {
                quantize_u8(layers[0].input, &x[..batch * 784], &mut xq[..batch * 784]);
                int8_layer(
                    &layers[0],
                    batch,
                    &xq,
                    Out::U8(&mut h1, layers[1].input),
                    par,
                );
                int8_layer(
                    &layers[1],
                    batch,
                    &h1,
                    Out::U8(&mut h2, layers[2].input),
                    par,
                );
                int8_layer(&layers[2], batch, &h2, Out::F32(&mut logits), par);
            };
            let t = compare(&mut [&mut f32_mlp, &mut i8_mlp]);
            row(label, batch, t[0], t[1], cpu);
        }
    }
    // How far the int8 logits are from the f32 ones (a sanity check, not
    // an accuracy measurement: the weights are random).
    let f32_logits = &acts[3][..10];
    let diff = f32_logits
        .iter()
        .zip(&logits[..10])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let top = f32_logits.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!("batch-1 logits: max |f32 − int8| = {diff:.4} (largest |logit| {top:.3})");
}

/// The f32 layer: `y = x @ w` with the bias (+ ReLU) epilogue.
fn f32_layer(l: &Layer, batch: usize, x: &[f32], y: &mut [f32], par: Parallelism) {
    let (k, n, relu, bias) = (l.k, l.n, l.relu, &l.bias);
    let ep = |_row: usize, col: usize, seg: &mut [f32]| {
        for (v, b) in seg.iter_mut().zip(&bias[col..]) {
            let s = *v + b;
            *v = if relu { s.max(0.0) } else { s };
        }
    };
    sgemm_then(
        par,
        batch,
        n,
        k,
        1.0,
        MatRef::new(&x[..batch * k], k),
        MatRef::new(&l.w, n),
        0.0,
        &mut y[..batch * n],
        n,
        &ep,
    )
    .expect("shapes agree");
}

/// Where an int8 layer's output goes.
enum Out<'a> {
    U8(&'a mut [u8], ActQuant),
    F32(&'a mut [f32]),
}

/// The int8 layer: u8 input × packed weights, bias (+ ReLU) and
/// requantization in the epilogue.
fn int8_layer(l: &Layer, batch: usize, x: &[u8], out: Out<'_>, par: Parallelism) {
    let ep = Epilogue {
        bias: Some(&l.bias),
        relu: l.relu,
    };
    let n = l.n;
    let out = match out {
        Out::U8(y, next) => Output::U8(&mut y[..batch * n], ep, next),
        Out::F32(y) => Output::F32(&mut y[..batch * n], ep),
    };
    let a = QMatRef::new(&x[..batch * l.k], l.k, l.input);
    qgemm(par, batch, a, &l.packed, out, n).expect("shapes agree");
}
