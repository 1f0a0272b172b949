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

/// What one training step holds in memory, in bytes (`f32` everywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepMemory {
    /// The batch the estimate is for (the `train` block's; 1 for `full`).
    pub batch: usize,
    /// Parameters.
    pub params: u128,
    /// Their gradients.
    pub grads: u128,
    /// The optimizer's per-parameter state (Adam's two moments, SGD's
    /// momentum, …).
    pub optimizer: u128,
    /// Every intermediate value of the training graph at `batch`, each in
    /// its own buffer: an upper bound of the planned workspace (`nnc
    /// compile --stats` shows the plan).
    pub activations: u128,
}

impl StepMemory {
    /// All of it.
    pub fn total(&self) -> u128 {
        self.params + self.grads + self.optimizer + self.activations
    }
}

/// The memory a training step of `net` needs at its `train` block's batch,
/// counted in `u128` so that no model overflows the count.
pub fn step_memory(net: &Network, tg: &TrainingGraph, cfg: &crate::ir::TrainConfig) -> StepMemory {
    use crate::ir::{BatchSpec, OptimizerConfig};
    let batch = match cfg.spec.batch {
        BatchSpec::Size(n) => n.max(1),
        BatchSpec::Full => 1,
    };
    let params: u128 = net
        .params
        .iter()
        .map(|p| p.shape.numel(1) as u128 * 4)
        .sum();
    let slots: u128 = match &cfg.spec.optimizer {
        OptimizerConfig::Adam(_) | OptimizerConfig::AdamW(_) => 2,
        OptimizerConfig::Sgd(c) if c.momentum == 0.0 => 0,
        _ => 1,
    };
    let activations = tg
        .graph
        .ids()
        .filter(|&id| !matches!(tg.graph.node(id).op, crate::ops::Op::Leaf(_)))
        .map(|id| {
            let shape = &tg.graph.ty(id).shape;
            let per = shape.fixed_numel().unwrap_or(usize::MAX) as u128;
            per * (batch as u128).pow(shape.batch_power().max(0) as u32) * 4
        })
        .sum();
    StepMemory {
        batch,
        params,
        grads: params,
        optimizer: params * slots,
        activations,
    }
}

/// Bytes for people: "1.5 GB", "12.0 TB".
pub fn bytes(b: u128) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The `nnc check` line on a step's memory.
pub fn memory_line(m: &StepMemory) -> String {
    format!(
        "  memory per training step at batch {}: {} (parameters {}, gradients {}, optimizer state {}, activations at most {})\n",
        m.batch,
        bytes(m.total()),
        bytes(m.params),
        bytes(m.grads),
        bytes(m.optimizer),
        bytes(m.activations)
    )
}
