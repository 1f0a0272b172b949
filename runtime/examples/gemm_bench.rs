//! Measures `sgemm` throughput on the shapes an MNIST MLP trains with.
//!
//! `cargo run --release -p nnc-runtime --example gemm_bench`
//! Prints GFLOP/s (best of 5 timed rounds) for 1 thread and for all threads.

use std::time::Instant;

use nnc_runtime::gemm::{sgemm, MatRef, Parallelism, Trans};
use nnc_runtime::rng::Rng;

fn main() {
    // (m, k, n, A transposed, label); C[m,n] = op(A)[m,k] @ B[k,n].
    let shapes = [
        (128, 784, 128, false, "128x784x128  X@W1 forward"),
        (128, 128, 128, false, "128x128x128"),
        (784, 128, 128, true, "784x128x128  X^T@dY weight grad"),
        (512, 2048, 2048, false, "512x2048x2048"),
    ];
    let mut rng = Rng::new(0);
    for (m, k, n, ta, label) in shapes {
        let a: Vec<f32> = (0..m * k).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
        let mut c = vec![0f32; m * n];
        let a_ref = if ta {
            MatRef {
                data: &a,
                ld: m,
                trans: Trans::Yes,
            }
        } else {
            MatRef::new(&a, k)
        };
        let flops = 2.0 * (m * k * n) as f64;
        let reps = (2e9 / flops).max(1.0) as usize;
        let mut line = format!("{label:34}");
        for par in [Parallelism::Sequential, Parallelism::Rayon(0)] {
            let mut run = || {
                sgemm(par, m, n, k, 1.0, a_ref, MatRef::new(&b, n), 0.0, &mut c, n)
                    .expect("shapes are consistent")
            };
            run();
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..reps {
                    run();
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            line += &format!("  {par:?}: {:6.1} GFLOP/s", flops / best / 1e9);
        }
        println!("{line}");
    }
}
