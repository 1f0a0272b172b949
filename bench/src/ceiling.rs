//! The matrix-multiply ceiling: the fastest f32 product on the machine,
//! measured like a workload, against which each workload's share is given.

use crate::table::Row;
use crate::{child_output, Args};
use nnc::runtime::gemm::{sgemm, MatRef, Parallelism};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

/// The `--child` name of the matrix-multiply ceiling, and its workload name
/// in the peers' results.jsonl (bench/peers/rust/gemm-bench).
pub const CEILING: &str = "ceiling";

/// The fastest f32 matrix multiply measured here, per thread count: its
/// GFLOP/s (median over rounds) and which library reached it.
pub struct Ceiling {
    pub by_threads: BTreeMap<usize, (f64, String)>,
    /// Every library's medians, for the record:
    /// `"gemm 1T 82.0, 2T 110.5 (fastest size: 512³; 1024³)"`.
    pub contenders: Vec<String>,
}

impl Ceiling {
    /// Per thread count, the library with the highest median GFLOP/s among
    /// `rows` (nnc's `sgemm` and any peer library that reported a ceiling).
    pub fn fastest<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Ceiling {
        let mut by_threads: BTreeMap<usize, (f64, String)> = BTreeMap::new();
        let mut contenders = Vec::new();
        for row in rows {
            let mut medians = Vec::new();
            for (&t, g) in row
                .samples
                .keys()
                .filter_map(|t| Some((t, row.samples_at(*t)?)))
            {
                medians.push(format!("{t}T {g:.1}"));
                let best = by_threads.entry(t).or_insert((g, row.framework.clone()));
                if g > best.0 {
                    *best = (g, row.framework.clone());
                }
            }
            contenders.push(format!(
                "{} {} (fastest size: {})",
                row.framework,
                medians.join(", "),
                row.note
            ));
        }
        Ceiling {
            by_threads,
            contenders,
        }
    }
}

/// Runs in the child: the ceiling by the protocol every workload gets (a
/// fresh process, untimed products first, then a sustained rate over
/// `--seconds`), so a workload's share of it compares like with like. A
/// best-of-5 single product would catch a short fast spell the training
/// runs, timed over seconds, cannot have. Square products; the faster size
/// counts. The peers' `gemm-bench` measures the `gemm` crate the same way.
pub fn ceiling_child(threads: usize, args: &Args) -> Value {
    let sizes: &[usize] = if args.quick {
        &[64]
    } else if threads == 1 {
        &[512, 1024]
    } else {
        &[1024, 2048]
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    let par = if threads == 1 {
        Parallelism::Sequential
    } else {
        Parallelism::Rayon(threads)
    };
    let mut best = (0.0f64, 0usize);
    for &n in sizes {
        let a = vec![0.5f32; n * n];
        let b = vec![0.25f32; n * n];
        let mut c = vec![0.0f32; n * n];
        let gflops = pool.install(|| {
            let mut product = || {
                sgemm(
                    par,
                    n,
                    n,
                    n,
                    1.0,
                    MatRef::new(&a, n),
                    MatRef::new(&b, n),
                    0.0,
                    &mut c,
                    n,
                )
                .expect("square product")
            };
            product();
            product();
            let budget = if args.quick {
                0.0
            } else {
                args.seconds / sizes.len() as f64
            };
            let t = Instant::now();
            let mut count = 0usize;
            while count < 3 || t.elapsed().as_secs_f64() < budget {
                product();
                count += 1;
            }
            2.0 * (n * n * n) as f64 * count as f64 / t.elapsed().as_secs_f64() / 1e9
        });
        if gflops > best.0 {
            best = (gflops, n);
        }
    }
    json!({
        "workload": CEILING,
        "threads": threads,
        "gflops": best.0,
        "n": best.1,
    })
}

pub fn run_ceiling_child(threads: usize, args: &Args) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["--child", CEILING, "--threads", &threads.to_string()])
        .args(["--seconds", &args.seconds.to_string()]);
    if args.quick {
        cmd.arg("--quick");
    }
    child_output(cmd, &format!("the ceiling at {threads} threads"))
}
