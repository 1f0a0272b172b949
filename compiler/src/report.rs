//! Human-readable summaries: what `nnc check` prints.

use crate::ir::TrainingGraph;
use crate::ir::{InputKind, Network};
use std::fmt::Write;

/// Per-sample FLOPs of the forward and backward parts of a training graph.
pub fn flops_per_sample(tg: &TrainingGraph) -> (u64, u64) {
    tg.flops_per_sample()
}

/// Groups digits by thousands: 101770 → "101,770".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The `nnc check` summary of one network.
pub fn summary(net: &Network, tg: &TrainingGraph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "network {}", net.name);
    for i in &net.inputs {
        let kind = match i.kind {
            InputKind::Features => "input",
            InputKind::Labels => "label",
        };
        let _ = writeln!(out, "  {kind:<6} {:<16} {}", i.name, i.ty);
    }
    let name_w = net
        .params
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0)
        .max(12);
    let _ = writeln!(out, "  params:");
    for p in &net.params {
        let _ = writeln!(
            out,
            "    {:<name_w$}  {:<16} {:>12}",
            p.name,
            format!("f32{}", p.shape),
            thousands(p.shape.numel(1) as u64)
        );
    }
    let _ = writeln!(
        out,
        "  total params: {}",
        thousands(net.param_count() as u64)
    );
    let (f, b) = flops_per_sample(tg);
    let _ = writeln!(
        out,
        "  FLOPs per sample: forward {}, backward {}",
        thousands(f),
        thousands(b)
    );
    let _ = writeln!(
        out,
        "  graph: {} forward nodes, {} training nodes",
        tg.forward_len,
        tg.graph.len()
    );
    out
}

/// The `nnc compile --stats` table of one network.
pub fn stats(name: &str, s: &crate::codegen::Stats) -> String {
    let mb = |b: usize| format!("{:.2} MB", b as f64 / 1e6);
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(out, "{name}: one training step at batch {}", s.batch);
    let _ = writeln!(
        out,
        "  graph nodes        {:>10} -> {}",
        s.nodes.0, s.nodes.1
    );
    let _ = writeln!(
        out,
        "  kernels per step   {:>10} -> {} ({:.0}% of -O0)",
        s.kernels.0,
        s.kernels.1,
        pct(s.kernels.1, s.kernels.0)
    );
    let _ = writeln!(out, "  workspace, naive   {:>10}", mb(s.naive_bytes));
    let _ = writeln!(
        out,
        "  workspace, planned {:>10} ({:.1}% of naive)",
        mb(s.planned_bytes),
        pct(s.planned_bytes, s.naive_bytes)
    );
    let _ = writeln!(
        out,
        "  lower bound        {:>10} (plan is {:.1}% above)",
        mb(s.lower_bound_bytes),
        pct(s.planned_bytes, s.lower_bound_bytes) - 100.0
    );
    let _ = writeln!(out, "  FLOPs per step     {:>10}", thousands(s.flops));
    out
}
