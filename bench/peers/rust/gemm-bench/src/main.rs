//! The matrix-multiply ceiling as the `gemm` crate reaches it: sustained
//! GFLOP/s of square f32 products, measured with the protocol nnc-bench uses
//! for its own `sgemm` (`--child ceiling` in bench/src/main.rs), so the two
//! are comparable and nnc-bench can take the faster as the ceiling.
//!
//! Per thread count `t`, the sizes are 512 and 1024 (t = 1) or 1024 and 2048
//! (t > 1); each size gets two untimed products, then as many as fit in half
//! of `--seconds` (at least 3); the faster size counts. Prints one JSON line:
//! `{"framework": "gemm", "workload": "ceiling", "threads", "gflops", "n"}`.

use std::time::Instant;

fn main() {
    let mut threads = 1usize;
    let mut seconds = 3.0f64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--threads" => threads = v.parse().expect("--threads N"),
            "--seconds" => seconds = v.parse().expect("--seconds S"),
            // run.sh passes the workload options to every peer; a ceiling has no use for them.
            "--workload" | "--warmup" | "--steps" | "--data" => {}
            other => panic!("unknown argument {other:?}"),
        }
    }
    let sizes: &[usize] = if threads == 1 {
        &[512, 1024]
    } else {
        &[1024, 2048]
    };
    let par = if threads == 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    let mut best = (0.0f64, 0usize);
    for &n in sizes {
        let a = vec![0.5f32; n * n];
        let b = vec![0.25f32; n * n];
        let mut c = vec![0.0f32; n * n];
        let mut product = || {
            // SAFETY: a, b and c are dense row-major n x n buffers (column
            // stride 1, row stride n), c is not aliased.
            unsafe {
                gemm::gemm(
                    n,
                    n,
                    n,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    n as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            }
        };
        product();
        product();
        let t = Instant::now();
        let mut count = 0usize;
        while count < 3 || t.elapsed().as_secs_f64() < seconds / sizes.len() as f64 {
            product();
            count += 1;
        }
        let gflops = 2.0 * (n * n * n) as f64 * count as f64 / t.elapsed().as_secs_f64() / 1e9;
        if gflops > best.0 {
            best = (gflops, n);
        }
    }
    println!(
        "{{\"framework\": \"gemm\", \"version\": \"0.19.0\", \"workload\": \"ceiling\", \"threads\": {threads}, \"gflops\": {:.2}, \"n\": {}}}",
        best.0, best.1
    );
}
