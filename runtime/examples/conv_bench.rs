//! Measures the convolution kernels (implicit GEMM for these stride-1
//! layers on AVX2 CPUs, else im2col + GEMM) on LeNet-sized layers,
//! forward and both gradients, next to the direct nested-loop oracle
//! (`conv::reference`, f64, all three at once).
//!
//! ```text
//! cargo run --release -p nnc-runtime --example conv_bench
//! ```
//!
//! Prints the best wall-clock time of 5 rounds per call and GFLOP/s
//! (2 · multiply-adds of the convolution), at batch 64, on one thread.

use std::hint::black_box;
use std::time::{Duration, Instant};

use nnc_runtime::conv::{self, Conv2d, Pool2d};

fn best_of<F: FnMut()>(mut f: F) -> Duration {
    f();
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0u32;
        while t.elapsed() < Duration::from_millis(200) {
            f();
            n += 1;
        }
        best = best.min(t.elapsed() / n);
    }
    best
}

fn main() {
    let b = 64;
    let layers = [
        (
            "conv1 1->6, 5x5 pad 2, 28x28",
            Conv2d {
                c: 1,
                h: 28,
                w: 28,
                o: 6,
                kh: 5,
                kw: 5,
                stride: [1, 1],
                padding: [2, 2],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "conv2 6->16, 5x5, 14x14",
            Conv2d {
                c: 6,
                h: 14,
                w: 14,
                o: 16,
                kh: 5,
                kw: 5,
                stride: [1, 1],
                padding: [0, 0],
                dilation: [1, 1],
                groups: 1,
            },
        ),
        (
            "conv 32->64, 3x3 pad 1, 16x16",
            Conv2d {
                c: 32,
                h: 16,
                w: 16,
                o: 64,
                kh: 3,
                kw: 3,
                stride: [1, 1],
                padding: [1, 1],
                dilation: [1, 1],
                groups: 1,
            },
        ),
    ];
    println!("batch {b}, one thread; time per call, GFLOP/s");
    for (label, g) in layers {
        let (oh, ow) = g.out_hw();
        let x: Vec<f32> = (0..b * g.c * g.h * g.w)
            .map(|i| (i % 17) as f32 * 0.1)
            .collect();
        let w: Vec<f32> = (0..g.o * g.c * g.kh * g.kw)
            .map(|i| (i % 7) as f32 * 0.1)
            .collect();
        let mut y = vec![0.0; b * g.o * oh * ow];
        let dy = y.clone();
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        let mut scratch = vec![0.0; g.scratch_len()];
        let flops = 2.0 * (b * g.o * oh * ow * g.c * g.kh * g.kw) as f64;
        let report = |what: &str, t: Duration| {
            println!(
                "{label:32} {what:12} {:9.1} µs {:6.1} GFLOP/s",
                t.as_secs_f64() * 1e6,
                flops / t.as_secs_f64() / 1e9
            );
        };
        report(
            "forward",
            best_of(|| conv::conv2d(&g, b, &mut y, black_box(&x), &w, &mut scratch)),
        );
        report(
            "grad input",
            best_of(|| conv::conv2d_grad_input(&g, b, &mut dx, black_box(&dy), &w, &mut scratch)),
        );
        report(
            "grad weight",
            best_of(|| conv::conv2d_grad_weight(&g, b, &mut dw, black_box(&x), &dy, &mut scratch)),
        );
        // The test oracle: direct loops in f64, forward and both gradients
        // at once, so compare it with the sum of the three rows above.
        report(
            "direct (all 3)",
            best_of(|| {
                black_box(conv::reference::conv2d(&g, b, black_box(&x), &w, &dy));
            }),
        );
    }
    let p = Pool2d {
        c: 6,
        h: 28,
        w: 28,
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0, 0],
    };
    let x: Vec<f32> = (0..b * 6 * 28 * 28).map(|i| (i % 13) as f32).collect();
    let mut y = vec![0.0; b * 6 * 14 * 14];
    let mut dx = vec![0.0; x.len()];
    let t = best_of(|| conv::max_pool2d(&p, b, &mut y, black_box(&x)));
    println!("max_pool2d 6x28x28 k2: {:.1} µs", t.as_secs_f64() * 1e6);
    let dy = y.clone();
    let t = best_of(|| conv::max_pool2d_grad(&p, b, &mut dx, black_box(&x), &dy));
    println!("max_pool2d_grad:       {:.1} µs", t.as_secs_f64() * 1e6);
}
