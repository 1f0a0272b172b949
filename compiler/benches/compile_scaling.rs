//! How compile time and memory grow with a model's size: `nnc compile`'s
//! whole path (parse, check, differentiate, optimise at `-O2`, generate and
//! format Rust) on generated models of about 1k, 10k and 100k nodes, each
//! size in a fresh child process whose peak RSS (`VmHWM`) is its own.
//!
//! ```text
//! cargo bench -p nnc-compiler --bench compile_scaling            # 1k, 10k, 100k
//! cargo bench -p nnc-compiler --bench compile_scaling -- --quick # 1k only
//! ```
//!
//! Prints one table; nothing is asserted. The last column says whether the
//! row meets issue 22's target, under 10 s and 500 MB at 100k nodes (and
//! proportionally less for smaller models); the seconds mean something
//! only on a quiet machine. `--child KIND NODES --stages` prints each
//! stage's seconds and peak memory for one model instead.

use nnc_compiler::codegen::Options;
use nnc_compiler::driver::compile_source;
use nnc_compiler::SourceFile;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

/// The model families, each a function of its forward node count.
const KINDS: &[(&str, &str)] = &[
    ("chain", "one statement `h = y + y + … + y`"),
    ("dense", "a chain of `relu(dense(h, 16))` layers"),
    ("statements", "one small statement per node"),
];

/// A model of about `nodes` forward nodes.
fn model(kind: &str, nodes: usize) -> String {
    let mut s = String::from(
        "network Scale {\n  input x: f32[batch, 16];\n  label y: class[batch] of 16;\n",
    );
    match kind {
        "chain" => {
            s.push_str("  param w: f32[16];\n  v = x * w;\n  h = v");
            for _ in 1..nodes {
                s.push_str(" + v");
            }
            s.push_str(";\n  loss cross_entropy(h, y);\n");
        }
        "dense" => {
            // dense and relu: two parameters, a product, a bias add, a relu.
            s.push_str("  h0 = x;\n");
            let layers = (nodes / 5).max(1);
            for i in 1..=layers {
                let _ = writeln!(s, "  h{i} = relu(dense(h{}, 16));", i - 1);
            }
            let _ = writeln!(s, "  loss cross_entropy(h{layers}, y);");
        }
        _ => {
            s.push_str("  param w: f32[16];\n  h0 = x * w;\n");
            for i in 1..nodes {
                let op = if i % 2 == 0 { "*" } else { "+" };
                let _ = writeln!(s, "  h{i} = h{} {op} x;", i - 1);
            }
            let _ = writeln!(s, "  loss cross_entropy(h{}, y);", nodes - 1);
        }
    }
    s.push_str("}\ntrain Scale { optimizer: adam(lr: 0.001); batch: 32; }\n");
    s
}

/// Peak resident set of this process in MB, from `/proc/self/status`.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak resident set (`VmHWM`) to the current one, so the next
/// reading is one stage's own peak.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `--stages`: the same path run stage by stage, each stage's seconds and
/// peak RSS on standard error, to see where time and memory go.
fn stages(kind: &str, nodes: usize) -> Result<(), String> {
    use nnc_compiler::{codegen, driver, syntax};
    let text = model(kind, nodes);
    let source = SourceFile::new(format!("{kind}-{nodes}.nn"), text);
    let opts = Options::default();
    let err = |e: nnc_compiler::CompileError| source.render(&e.diagnostics, false);
    let mut t = Instant::now();
    let report = |stage: &str, t: &mut Instant| {
        eprintln!(
            "{stage:>12} {:8.3} s {:8.1} MB",
            t.elapsed().as_secs_f64(),
            peak_rss_mb().unwrap_or(f64::NAN)
        );
        reset_peak();
        *t = Instant::now();
    };
    let ast = syntax::parse(&source.text).map_err(|d| err(d.into()))?;
    report("parse", &mut t);
    let module = nnc_compiler::lower::lower(&ast).map_err(err)?;
    drop(ast);
    report("lower", &mut t);
    let net = &module.networks[0];
    let cfg = module.train_config(&net.name);
    let tg = driver::training_graph(&module, net).map_err(|d| err(d.into()))?;
    report("autodiff", &mut t);
    drop(tg);
    let tg = driver::optimize(net, &cfg, &opts).map_err(err)?;
    report("ad+passes", &mut t);
    let rt = codegen::runtime_path(&opts).map_err(err)?;
    let input = codegen::Input {
        net,
        config: &cfg,
        train: &tg,
        inference: None,
        explain: None,
        layout: None,
    };
    // As `nnc compile` does: kernels and calls formatted as they are
    // generated (counted in `codegen`), the rest formatted after.
    let mut emit = codegen::Emit::text();
    let items = codegen::network_with(&source, &input, &rt, &opts, &mut emit).map_err(err)?;
    report("codegen", &mut t);
    let mut code = codegen::header(&source);
    codegen::format_into(&mut code, items, &mut emit).map_err(err)?;
    report("format", &mut t);
    eprintln!("output {} bytes", code.len());
    if let Some(path) = std::env::var_os("NNC_SCALING_OUT") {
        std::fs::write(path, &code).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Issue 22's target: a 100,000-node model compiles in under 10 s and
/// 500 MB. Smaller rows are held to the same budget scaled to their size
/// (linear growth), with 20 MB for the process itself.
const TARGET_NODES: f64 = 100_000.0;
const TARGET_SECONDS: f64 = 10.0;
const TARGET_MB: f64 = 500.0;

/// Whether a row meets the target: `yes`, or `no` with what it misses.
fn verdict(nodes: usize, seconds: f64, mb: f64) -> String {
    let share = nodes as f64 / TARGET_NODES;
    let (s_max, mb_max) = (TARGET_SECONDS * share, 20.0 + (TARGET_MB - 20.0) * share);
    let mut misses = Vec::new();
    if seconds.is_nan() || seconds >= s_max {
        misses.push(format!("time ≥ {s_max:.2} s"));
    }
    if mb.is_nan() || mb >= mb_max {
        misses.push(format!("memory ≥ {mb_max:.0} MB"));
    }
    if misses.is_empty() {
        "yes".to_string()
    } else {
        format!("no ({})", misses.join(", "))
    }
}

/// The child: compiles one model, prints `seconds peak_mb output_bytes`.
fn child(kind: &str, nodes: usize) -> Result<(), String> {
    let text = model(kind, nodes);
    let start = Instant::now();
    let source = SourceFile::new(format!("{kind}-{nodes}.nn"), text);
    let code = compile_source(&source, &Options::default())
        .map_err(|e| source.render(&e.diagnostics, false))?;
    let seconds = start.elapsed().as_secs_f64();
    let mb = peak_rss_mb().unwrap_or(f64::NAN);
    println!("{seconds:.3} {mb:.1} {}", code.len());
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let kind = args.get(i + 1).map_or("", String::as_str);
        let nodes = args.get(i + 2).and_then(|n| n.parse().ok()).unwrap_or(1000);
        if args.iter().any(|a| a == "--stages") {
            if let Err(e) = stages(kind, nodes) {
                eprintln!("{e}");
                std::process::exit(1);
            }
            return;
        }
        if let Err(e) = child(kind, nodes) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let exe = std::env::current_exe().expect("the benchmark's own path");
    println!("nnc compile -O2 (parse, check, autodiff, passes, codegen, formatting), one process per row\n");
    println!("| model | nodes | seconds | peak RSS (MB) | output (MB) | target |");
    println!("|---|---:|---:|---:|---:|---|");
    for &(kind, what) in KINDS {
        for &n in sizes {
            let out = Command::new(&exe)
                .args(["--child", kind, &n.to_string()])
                .output();
            let ok = matches!(&out, Ok(o) if o.status.success());
            let row = match out {
                Ok(o) if o.status.success() => {
                    let text = String::from_utf8_lossy(&o.stdout);
                    let f: Vec<&str> = text.split_whitespace().collect();
                    let num = |i: usize| -> f64 {
                        f.get(i).and_then(|b| b.parse().ok()).unwrap_or(f64::NAN)
                    };
                    format!(
                        "{} | {} | {:.1} | {}",
                        f.first().unwrap_or(&"?"),
                        f.get(1).unwrap_or(&"?"),
                        num(2) / 1e6,
                        verdict(n, num(0), num(1))
                    )
                }
                Ok(o) => format!(
                    "failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .next()
                        .unwrap_or("")
                ),
                Err(e) => format!("failed to start: {e}"),
            };
            let row = if ok { row } else { format!("{row} | | | no") };
            println!("| {kind} | {n} | {row} |");
        }
        let _ = what;
    }
    println!();
    for &(kind, what) in KINDS {
        println!("{kind}: {what}");
    }
}
