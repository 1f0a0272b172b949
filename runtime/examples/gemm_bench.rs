//! Measures `sgemm` throughput on the shapes an MNIST MLP trains with, plus
//! two large products (one of them on 2 threads).
//!
//! ```text
//! cargo run --release -p nnc-runtime --example gemm_bench [LABEL-FILTER]
//! # side by side with the `gemm` crate (an optional dependency, off by default):
//! cargo run --release -p nnc-runtime --example gemm_bench --features compare-gemm
//! ```
//!
//! Prints GFLOP/s (best of 5 timed rounds of ~0.25 s each) for every shape at
//! the thread count listed, by wall-clock time and, for one thread, by on-CPU
//! time (robust against other processes sharing the cores).

use std::time::Instant;

use nnc_runtime::gemm::{sgemm, MatRef, Parallelism, Trans};
use nnc_runtime::rng::Rng;

/// One benchmarked product: `C[m,n] = op(A)[m,k] @ op(B)[k,n]`.
struct Shape {
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    threads: usize,
    label: &'static str,
}

const SHAPES: &[Shape] = &[
    Shape {
        m: 128,
        k: 128,
        n: 10,
        ta: false,
        tb: false,
        threads: 1,
        label: "128x128x10    logits forward",
    },
    Shape {
        m: 128,
        k: 10,
        n: 128,
        ta: false,
        tb: false,
        threads: 1,
        label: "128x10x128    logits input grad",
    },
    Shape {
        m: 784,
        k: 128,
        n: 128,
        ta: false,
        tb: false,
        threads: 1,
        label: "784x128x128   plain weight grad",
    },
    Shape {
        m: 64,
        k: 784,
        n: 128,
        ta: false,
        tb: false,
        threads: 1,
        label: "W1 shard 64x784x128 X@W1 forward",
    },
    Shape {
        m: 64,
        k: 128,
        n: 128,
        ta: false,
        tb: false,
        threads: 1,
        label: "W1 shard 64x128x128 forward",
    },
    Shape {
        m: 64,
        k: 128,
        n: 128,
        ta: false,
        tb: true,
        threads: 1,
        label: "W1 shard 64x128x128 A@B^T input grad",
    },
    Shape {
        m: 784,
        k: 64,
        n: 128,
        ta: true,
        tb: false,
        threads: 1,
        label: "W1 shard 784x64x128 A^T@B weight grad",
    },
    Shape {
        m: 128,
        k: 64,
        n: 128,
        ta: true,
        tb: false,
        threads: 1,
        label: "W1 shard 128x64x128 A^T@B weight grad",
    },
    Shape {
        m: 128,
        k: 784,
        n: 128,
        ta: false,
        tb: false,
        threads: 1,
        label: "128x784x128   X@W1 forward",
    },
    Shape {
        m: 128,
        k: 128,
        n: 128,
        ta: false,
        tb: false,
        threads: 1,
        label: "128x128x128",
    },
    Shape {
        m: 784,
        k: 128,
        n: 128,
        ta: true,
        tb: false,
        threads: 1,
        label: "784x128x128   A^T@B weight grad",
    },
    Shape {
        m: 128,
        k: 128,
        n: 784,
        ta: false,
        tb: true,
        threads: 1,
        label: "128x128x784   A@B^T input grad",
    },
    Shape {
        m: 512,
        k: 2048,
        n: 2048,
        ta: false,
        tb: false,
        threads: 1,
        label: "512x2048x2048",
    },
    Shape {
        m: 2048,
        k: 512,
        n: 2048,
        ta: true,
        tb: false,
        threads: 1,
        label: "W2 2048x512x2048 A^T@B weight grad",
    },
    Shape {
        m: 512,
        k: 2048,
        n: 2048,
        ta: false,
        tb: true,
        threads: 1,
        label: "W2 512x2048x2048 A@B^T input grad",
    },
    Shape {
        m: 784,
        k: 512,
        n: 2048,
        ta: true,
        tb: false,
        threads: 1,
        label: "W2 784x512x2048 A^T@B first weight grad",
    },
    Shape {
        m: 2048,
        k: 2048,
        n: 2048,
        ta: false,
        tb: false,
        threads: 2,
        label: "2048x2048x2048",
    },
];

/// On-CPU nanoseconds of the calling thread (Linux), if the kernel reports
/// them: unlike wall time, this ignores time the thread waited for a core
/// while other processes ran, which matters on a shared 2-core machine.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// (wall, on-CPU) seconds per call of `run`, over enough calls for ~0.25 s;
/// on-CPU time falls back to wall time where unavailable.
fn time(flops: f64, mut run: impl FnMut()) -> (f64, f64) {
    let reps = (20e9 / flops).clamp(1.0, 10_000.0) as usize;
    let cpu = thread_cpu_ns();
    let t = Instant::now();
    for _ in 0..reps {
        run();
    }
    let wall = t.elapsed().as_secs_f64();
    let cpu = match (cpu, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 * 1e-9,
        _ => wall,
    };
    (wall / reps as f64, cpu / reps as f64)
}

/// Element-wise minimum of two (wall, cpu) pairs.
fn min2(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    (a.0.min(b.0), a.1.min(b.1))
}

fn main() {
    let mut rng = Rng::new(0);
    println!(
        "GFLOP/s, best of 5 rounds, by wall-clock time and by the calling thread's on-CPU time"
    );
    println!(
        "{:34} {:>7}  {:>13}{}",
        "m x k x n",
        "threads",
        "nnc wall/cpu",
        if cfg!(feature = "compare-gemm") {
            "  gemm-0.19 wall/cpu"
        } else {
            ""
        }
    );
    // An optional argument keeps only the shapes whose label contains it.
    let filter = std::env::args().nth(1).unwrap_or_default();
    for s in SHAPES.iter().filter(|s| s.label.contains(filter.as_str())) {
        let (m, k, n) = (s.m, s.k, s.n);
        let a: Vec<f32> = (0..m * k).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
        let mut c = vec![0f32; m * n];
        // Stored A is k x m when transposed, so its leading dimension is m.
        let a_ref = MatRef {
            data: &a,
            ld: if s.ta { m } else { k },
            trans: if s.ta { Trans::Yes } else { Trans::No },
        };
        let b_ref = MatRef {
            data: &b,
            ld: if s.tb { k } else { n },
            trans: if s.tb { Trans::Yes } else { Trans::No },
        };
        let par = if s.threads == 1 {
            Parallelism::Sequential
        } else {
            Parallelism::Rayon(s.threads)
        };
        let flops = 2.0 * (m * k * n) as f64;
        let mut ours = || {
            sgemm(par, m, n, k, 1.0, a_ref, b_ref, 0.0, &mut c, n).expect("shapes are consistent")
        };
        ours();
        #[cfg(feature = "compare-gemm")]
        let mut c2 = vec![0f32; m * n];
        #[cfg(feature = "compare-gemm")]
        let mut theirs = || reference::run(s, &a_ref, &b_ref, &mut c2);
        #[cfg(feature = "compare-gemm")]
        theirs();
        // Best of 5 rounds; with the comparison on, the two alternate within
        // each round so that both see the same machine load.
        let mut best = (f64::MAX, f64::MAX);
        #[cfg(feature = "compare-gemm")]
        let mut best_ref = best;
        for _ in 0..5 {
            best = min2(best, time(flops, &mut ours));
            #[cfg(feature = "compare-gemm")]
            {
                best_ref = min2(best_ref, time(flops, &mut theirs));
            }
        }
        let gflops = |(wall, cpu): (f64, f64)| {
            if s.threads == 1 {
                format!("{:>6.1} {:>6.1}", flops / wall / 1e9, flops / cpu / 1e9)
            } else {
                // Other threads' CPU time is not measured: wall only.
                format!("{:>6.1} {:>6}", flops / wall / 1e9, "-")
            }
        };
        #[allow(unused_mut)]
        let mut line = format!("{:34} {:>7}  {}", s.label, s.threads, gflops(best));
        #[cfg(feature = "compare-gemm")]
        {
            line += &format!("  {}", gflops(best_ref));
        }
        println!("{line}");
        #[cfg(feature = "compare-gemm")]
        {
            let worst = c
                .iter()
                .zip(&c2)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-3 * k as f32, "results differ by {worst}");
        }
    }
}

/// The `gemm` crate on the same operands, for comparison only.
#[cfg(feature = "compare-gemm")]
mod reference {
    use super::{MatRef, Shape, Trans};

    pub fn run(s: &Shape, a: &MatRef<'_>, b: &MatRef<'_>, c: &mut [f32]) {
        let strides = |x: &MatRef<'_>| match x.trans {
            Trans::No => (x.ld as isize, 1),
            Trans::Yes => (1, x.ld as isize),
        };
        let (a_rs, a_cs) = strides(a);
        let (b_rs, b_cs) = strides(b);
        let par = if s.threads == 1 {
            gemm::Parallelism::None
        } else {
            gemm::Parallelism::Rayon(s.threads)
        };
        assert!(a.data.len() >= s.m * s.k && b.data.len() >= s.k * s.n);
        assert!(c.len() >= s.m * s.n);
        // SAFETY: the operands are dense m x k, k x n and m x n buffers (checked
        // just above) addressed with their own strides.
        unsafe {
            gemm::gemm(
                s.m,
                s.n,
                s.k,
                c.as_mut_ptr(),
                1,
                s.n as isize,
                false,
                a.data.as_ptr(),
                a_cs,
                a_rs,
                b.data.as_ptr(),
                b_cs,
                b_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }
}
