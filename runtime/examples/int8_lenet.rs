//! LeNet-5's int8 inference plan (the one `nnc compile --quantize int8`
//! derives for `examples/models/lenet.nn`) on random He-initialised
//! weights, without training: for profiling the int8 convolution path.
//! With `--mlp`, the MNIST MLP's (784-128-128-10) instead, for the dense
//! path.
//!
//! ```text
//! cargo run --release -p nnc-runtime --example int8_lenet          # time it
//! cargo run --release -p nnc-runtime --example int8_lenet -- 3     # run 3 batches, untimed
//! valgrind --tool=callgrind target/release/examples/int8_lenet 3   # where the time goes
//! valgrind --tool=callgrind target/release/examples/int8_lenet --mlp 3
//! ```
//!
//! Timed, it prints the on-CPU microseconds of one batch of 256 on one
//! thread (the median of 7 rounds of at least 0.2 s).

use std::time::Instant;

use nnc_runtime::conv::{Conv2d, Pool2d};
use nnc_runtime::params::ParamSpec;
use nnc_runtime::quant::{kernel_family, Int8Model, Plan, Step};
use nnc_runtime::rng::Rng;

const BATCH: usize = 256;

/// On-CPU nanoseconds of the calling thread (Linux), if reported.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn conv(c: usize, hw: usize, o: usize, pad: usize) -> Conv2d {
    Conv2d {
        c,
        h: hw,
        w: hw,
        o,
        kh: 5,
        kw: 5,
        stride: [1, 1],
        padding: [pad, pad],
        dilation: [1, 1],
        groups: 1,
    }
}

fn pool(c: usize, hw: usize) -> Pool2d {
    Pool2d {
        c,
        h: hw,
        w: hw,
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0, 0],
    }
}

/// The parameters' specs and a plan: LeNet-5's, or with `mlp` the MNIST
/// MLP's.
fn model(mlp: bool) -> (Vec<ParamSpec>, Plan) {
    let mut specs = Vec::new();
    let mut offset = 0;
    let mut add = |name: &str, shape: Vec<usize>| {
        let s = ParamSpec::new(name.to_string(), shape, offset);
        offset += s.len;
        specs.push(s);
    };
    let dense_step = |input, out, l: &str, relu| Step::Dense {
        input,
        out,
        weight: format!("{l}.weight"),
        bias: Some(format!("{l}.bias")),
        relu,
    };
    if mlp {
        let dense = [(784, 128), (128, 128), (128, 10)];
        for (name, &(k, n)) in ["h1", "h2", "logits"].iter().zip(&dense) {
            add(&format!("{name}.weight"), vec![k, n]);
            add(&format!("{name}.bias"), vec![n]);
        }
        let plan = Plan {
            values: vec![784, 128, 128, 10, 10],
            input: 0,
            output: 4,
            steps: vec![
                dense_step(0, 1, "h1", true),
                dense_step(1, 2, "h2", true),
                dense_step(2, 3, "logits", false),
                Step::Softmax {
                    input: 3,
                    out: 4,
                    n: 10,
                },
            ],
        };
        return (specs, plan);
    }
    let (g1, g2) = (conv(1, 28, 6, 2), conv(6, 14, 16, 0));
    let dense = [(400, 120), (120, 84), (84, 10)];
    add("c1.weight", vec![6, 1, 5, 5]);
    add("c1.bias", vec![6]);
    add("c2.weight", vec![16, 6, 5, 5]);
    add("c2.bias", vec![16]);
    for (name, &(k, n)) in ["h1", "h2", "logits"].iter().zip(&dense) {
        add(&format!("{name}.weight"), vec![k, n]);
        add(&format!("{name}.bias"), vec![n]);
    }
    let conv_step = |input, out, l: &str, geometry| Step::Conv {
        input,
        out,
        weight: format!("{l}.weight"),
        bias: Some(format!("{l}.bias")),
        relu: true,
        geometry,
    };
    let plan = Plan {
        values: vec![784, 6 * 784, 6 * 196, 1600, 400, 120, 84, 10, 10],
        input: 0,
        output: 8,
        steps: vec![
            conv_step(0, 1, "c1", g1),
            Step::MaxPool {
                input: 1,
                out: 2,
                pool: pool(6, 28),
            },
            conv_step(2, 3, "c2", g2),
            Step::MaxPool {
                input: 3,
                out: 4,
                pool: pool(16, 10),
            },
            dense_step(4, 5, "h1", true),
            dense_step(5, 6, "h2", true),
            dense_step(6, 7, "logits", false),
            Step::Softmax {
                input: 7,
                out: 8,
                n: 10,
            },
        ],
    };
    (specs, plan)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mlp = args.first().is_some_and(|a| a == "--mlp");
    if mlp {
        args.remove(0);
    }
    let (specs, plan) = model(mlp);
    let offset = specs.last().map_or(0, |s| s.offset + s.len);
    let mut rng = Rng::new(7);
    let mut params = vec![0.0f32; offset];
    for s in &specs {
        // Dense weights are `[in, out]`, convolutions `[O, C, KH, KW]`.
        let fan_in = match s.shape.len() {
            1 => 0,
            2 => s.shape[0],
            _ => s.len / s.shape[0],
        };
        let p = &mut params[s.offset..s.offset + s.len];
        if fan_in > 0 {
            rng.fill_normal(p, 0.0, (2.0 / fan_in as f32).sqrt());
        } else {
            p.iter_mut().for_each(|v| *v = rng.uniform_f32(0.0, 0.1));
        }
    }
    // MNIST-like inputs: mostly 0, some strokes in (0, 1].
    let x: Vec<f32> = (0..BATCH * 784)
        .map(|_| {
            if rng.below(5) == 0 {
                rng.next_f32()
            } else {
                0.0
            }
        })
        .collect();
    let mut model =
        Int8Model::calibrate(plan, &specs, &params, &x, BATCH).expect("a consistent plan");
    let mut out = vec![0.0f32; BATCH * 10];
    if let Some(batches) = args.first() {
        let batches: usize = batches.parse().expect("a number of batches");
        for _ in 0..batches {
            model.predict(&x, &mut out, BATCH).expect("fits");
        }
        return;
    }
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a thread pool");
    let secs = one.install(|| {
        let t = Instant::now();
        model.predict(&x, &mut out, BATCH).expect("fits");
        let reps = (0.2 / t.elapsed().as_secs_f64().max(1e-6)).ceil() as usize;
        let mut rounds: Vec<f64> = (0..7)
            .map(|_| {
                let (c, t) = (thread_cpu_ns(), Instant::now());
                for _ in 0..reps {
                    model.predict(&x, &mut out, BATCH).expect("fits");
                }
                match (c, thread_cpu_ns()) {
                    (Some(a), Some(b)) if b > a => (b - a) as f64 * 1e-9 / reps as f64,
                    _ => t.elapsed().as_secs_f64() / reps as f64,
                }
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        rounds[3]
    });
    println!(
        "{} int8 plan ({}), batch {BATCH}, 1 thread: {:.0} µs on-CPU per batch",
        if mlp { "MLP 784-128-128-10" } else { "LeNet-5" },
        kernel_family(),
        secs * 1e6
    );
}
