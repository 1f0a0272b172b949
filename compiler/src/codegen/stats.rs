//! What one training step costs (`nnc compile --stats`) and why nodes were
//! or were not fused (`--explain-fusion`), measured on the graphs the
//! driver hands over with codegen's own fusion and layout decisions.

use super::fuse::Fusion;
use super::layout::Layout;
use super::{ancestors, Options};
use crate::diagnostic::{CompileError, SourceFile};
use crate::graph::NodeId;
use crate::ir::{BatchSpec, OptLevel, TrainConfig, TrainingGraph};
use crate::ops::Op;
use std::collections::BTreeSet;

/// What `nnc compile --stats` reports for one network's training step.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// The batch size the byte and FLOP figures are for.
    pub batch: usize,
    /// Nodes of the training graph before and after the graph passes.
    pub nodes: (usize, usize),
    /// Kernels one `train_step` runs at `-O0` and at the chosen level.
    pub kernels: (usize, usize),
    /// Workspace bytes with every value in its own buffer.
    pub naive_bytes: usize,
    /// Workspace bytes of the plan.
    pub planned_bytes: usize,
    /// The most bytes live at any one step: no plan can use less.
    pub lower_bound_bytes: usize,
    /// FLOPs of one training step at `batch`.
    pub flops: u64,
}

/// The training-step statistics of a network at its `train` block's batch
/// size (128 for `batch: full`): `base` is its training graph at `-O0`,
/// `tg` after the passes of `opts`.
pub fn stats(
    base: &TrainingGraph,
    tg: &TrainingGraph,
    cfg: &TrainConfig,
    opts: &Options,
) -> Result<Stats, CompileError> {
    let batch = match cfg.spec.batch {
        BatchSpec::Size(n) => n,
        BatchSpec::Full => 128,
    };
    let count = |tg: &TrainingGraph| -> (Vec<NodeId>, Vec<NodeId>, usize) {
        let mut out: Vec<NodeId> = tg.params.iter().map(|p| p.2).collect();
        out.push(tg.loss);
        let schedule = ancestors(tg, &out);
        let kernels = schedule
            .iter()
            .filter(|&&n| !matches!(tg.graph.node(n).op, Op::Leaf(_)))
            .count();
        (schedule, out, kernels)
    };
    let (_, _, k0) = count(base);
    let (schedule, live_out, k) = count(tg);
    let fusion = fusion_for(tg, opts);
    let fused = schedule.iter().filter(|&&n| fusion.is_member(n)).count();
    let k = k - fused;
    let (_, plan) = Layout::new(
        tg,
        &schedule,
        &live_out,
        opts.opt_level >= OptLevel::O2,
        &fusion,
        true,
    )?;
    // "Naive" is every value of the unoptimised step in its own buffer.
    let (base_schedule, base_out, _) = count(base);
    let (_, base_plan) = Layout::new(
        base,
        &base_schedule,
        &base_out,
        false,
        &Fusion::default(),
        true,
    )?;
    let flops = tg.graph.flops(0..usize::MAX);
    Ok(Stats {
        batch,
        nodes: (base.graph.len(), tg.graph.len()),
        kernels: (k0, k),
        naive_bytes: 4 * base_plan.naive_elements(batch),
        planned_bytes: 4 * plan.elements(batch),
        lower_bound_bytes: 4 * plan.bound(batch),
        flops: flops.saturating_mul(batch as u64),
    })
}

/// The fusion decisions of `opts` (none below `-O2`). Everything read after
/// the step (loss, gradients, outputs) stays materialised.
pub(super) fn fusion_for(tg: &TrainingGraph, opts: &Options) -> Fusion {
    if opts.opt_level < OptLevel::O2 {
        return Fusion::default();
    }
    let mut roots: Vec<NodeId> = tg.params.iter().map(|p| p.2).collect();
    roots.push(tg.loss);
    roots.extend(tg.outputs.iter().map(|o| o.1));
    roots.extend(tg.state_updates.iter().map(|u| u.1));
    Fusion::new(tg, &roots)
}

/// Which nodes of a network's optimised training graph `tg` are fused and
/// why each other elementwise node stays its own kernel, for `nnc compile
/// --explain-fusion`.
pub fn explain_fusion(
    source: &SourceFile,
    name: &str,
    tg: &TrainingGraph,
    opts: &Options,
) -> Result<String, CompileError> {
    let fusion = fusion_for(tg, opts);
    let mut out = format!(
        "{}: {} nodes fused into {} loops, {} matrix products with an epilogue\n",
        name,
        fusion.into.len(),
        fusion.into.values().collect::<BTreeSet<_>>().len(),
        fusion.epilogues.len()
    );
    let listed = fusion
        .groups
        .iter()
        .filter(|(r, _)| fusion.into.values().any(|v| v == *r) || fusion.epilogues.contains_key(r));
    for (root, inputs) in listed {
        let members: Vec<String> = fusion
            .into
            .iter()
            .filter(|(_, r)| *r == root)
            .map(|(m, _)| format!("{}", m))
            .collect();
        let loop_text = if members.is_empty() {
            "its loop".to_string()
        } else {
            format!("nodes {} in one loop", members.join(", "))
        };
        let epilogue = fusion.epilogues.get(root).map_or(String::new(), |m| {
            format!(
                ", run as the epilogue of node {} ({})",
                m.index(),
                tg.graph.node(*m).op
            )
        });
        out.push_str(&format!(
            "  fused: node {root} ({}) computes {loop_text} over {} inputs{epilogue}\n",
            tg.graph.node(NodeId::new(*root)).op,
            inputs.len()
        ));
    }
    for (root, input) in &fusion.in_place {
        out.push_str(&format!(
            "  in place: node {root} ({}) writes over node {} ({}), which nothing else reads\n",
            tg.graph.node(NodeId::new(*root)).op,
            input.index(),
            tg.graph.node(*input).op
        ));
    }
    for (id, reason) in fusion.explain() {
        let node = tg.graph.node(NodeId::new(*id));
        let (line, col) = source.line_col(node.span.start);
        out.push_str(&format!(
            "  not fused: node {id} ({}, {}:{line}:{col}): {reason}\n",
            node.op, source.name
        ));
    }
    Ok(out)
}
