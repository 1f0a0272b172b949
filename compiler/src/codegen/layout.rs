//! Where every value of a training graph lives while the generated code runs:
//! parameters in the flat parameter buffer, inputs and labels in the caller's
//! slices, constants inline, and every computed value in its own region of
//! one workspace allocated once for the largest batch.

use super::fuse::Fusion;
use super::memory::{self, Buffer, Plan};
use super::{batch_power_ok, codegen_error, usize_lit};
use crate::diagnostic::CompileError;
use crate::graph::{Dim, NodeId};
use crate::ir::TrainingGraph;
use crate::ops::{LeafOp, Op};
use proc_macro2::TokenStream;
use quote::quote;
use std::collections::HashMap;

/// The location of one node's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Loc {
    /// In the workspace at `fixed + per_sample · max_batch`.
    Ws {
        /// The part of the offset that does not scale with the batch.
        fixed: usize,
        /// The part that scales with the maximum batch.
        per_sample: usize,
    },
    /// In the gradient buffer `g` (a parameter's gradient, written there
    /// directly by the kernel that computes it).
    Grad {
        /// First element.
        offset: usize,
        /// Element count.
        len: usize,
    },
    /// In the parameter buffer.
    Param {
        /// First element.
        offset: usize,
        /// Element count.
        len: usize,
    },
    /// In the model's flat state buffer (running statistics), read as `st`.
    State {
        /// First element.
        offset: usize,
        /// Element count.
        len: usize,
    },
    /// In the teacher's read-only buffer (`teacher:` in the train block),
    /// read as `tw`.
    Frozen {
        /// First element.
        offset: usize,
        /// Element count.
        len: usize,
    },
    /// The caller's feature slice of this name.
    Input(String),
    /// The caller's label slice of this name.
    Label(String),
    /// An inline constant `value · batch^batch_pow`.
    Const {
        /// The fixed factor.
        value: f64,
        /// Power of the batch size.
        batch_pow: i32,
    },
}

/// The locations of all nodes an entry point uses.
pub struct Layout {
    /// Location by node index.
    pub loc: HashMap<usize, Loc>,
    /// Each parameter's offset in the flat buffers, in declaration order.
    pub param_offset: Vec<usize>,
    /// Each parameter's length.
    pub param_len: Vec<usize>,
    /// Workspace elements that do not scale with the batch.
    pub ws_fixed: usize,
    /// Workspace elements per sample of the maximum batch.
    pub ws_per_sample: usize,
    /// Scratch regions (`Op::scratch`) by node index: `(offset, len)` in
    /// the fixed part of the workspace.
    pub scratch: HashMap<usize, (usize, usize)>,
}

/// The names of a graph's teacher tensors in the order [`Layout::new`]
/// lays them out.
pub fn frozen_names(tg: &TrainingGraph) -> Vec<&str> {
    tg.graph
        .ids()
        .filter_map(|id| match &tg.graph.node(id).op {
            Op::Leaf(LeafOp::Frozen { name, .. }) => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

/// Where scratch buffers' ids start in the memory plan: the scratch of node
/// `i` is buffer `SCRATCH_ID + i`, apart from every node's own buffer.
const SCRATCH_ID: usize = 1 << 48;

impl Layout {
    /// Lays out one entry point: its `schedule` (in execution order), of
    /// which `live_out` are read after the last kernel (gradients, loss,
    /// outputs). With `planned`, workspace regions are shared between values
    /// whose lifetimes do not overlap ([`memory::plan`]); without, every value
    /// gets its own region (the naive layout of `-O0`). With `grads`, each
    /// parameter's gradient that no kernel reads is computed straight into
    /// the gradient buffer instead of the workspace (`train_step`).
    pub fn new(
        tg: &TrainingGraph,
        schedule: &[NodeId],
        live_out: &[NodeId],
        planned: bool,
        fusion: &Fusion,
        grads: bool,
    ) -> Result<(Layout, Plan), CompileError> {
        let mut layout = Layout {
            loc: HashMap::new(),
            param_offset: Vec::new(),
            param_len: Vec::new(),
            ws_fixed: 0,
            ws_per_sample: 0,
            scratch: HashMap::new(),
        };
        let mut offset = 0;
        // The training graph's parameter nodes (passes may have renumbered
        // them), in declaration order.
        for (_, node, _) in &tg.params {
            let len = tg.graph.ty(*node).shape.numel(1);
            layout.param_offset.push(offset);
            layout.param_len.push(len);
            layout.loc.insert(node.index(), Loc::Param { offset, len });
            offset += len;
        }
        // A spliced teacher's tensors, in graph order over the whole graph
        // (the order of `Network::frozen`, checked by `frozen_names`), so
        // every entry point agrees on the buffer whatever it reads.
        let mut frozen_offset = 0;
        for id in tg.graph.ids() {
            if let Op::Leaf(LeafOp::Frozen { shape, .. }) = &tg.graph.node(id).op {
                let len = shape.numel(1);
                let loc = Loc::Frozen {
                    offset: frozen_offset,
                    len,
                };
                layout.loc.insert(id.index(), loc);
                frozen_offset += len;
            }
        }
        // Gradients computed in place in `g`: not read by any kernel, not a
        // loop running over another value's buffer, one slot per node.
        let mut in_g: HashMap<usize, (usize, usize)> = HashMap::new();
        if grads {
            for (i, (_, _, g)) in tg.params.iter().enumerate() {
                let computed = !matches!(tg.graph.node(*g).op, Op::Leaf(_));
                let alone =
                    tg.graph.users(*g).is_empty() && !fusion.in_place.contains_key(&g.index());
                if computed && alone && !fusion.is_member(*g) && !in_g.contains_key(&g.index()) {
                    in_g.insert(g.index(), (layout.param_offset[i], layout.param_len[i]));
                }
            }
        }
        // Kernel steps, in order; leaves are operands, not kernels.
        let mut step: HashMap<usize, usize> = HashMap::new();
        for &id in schedule {
            let node = tg.graph.node(id);
            match &node.op {
                Op::Leaf(LeafOp::Input { name, .. } | LeafOp::Tokens { name, .. }) => {
                    layout.loc.insert(id.index(), Loc::Input(name.clone()));
                }
                Op::Leaf(LeafOp::Label { name, .. }) => {
                    layout.loc.insert(id.index(), Loc::Label(name.clone()));
                }
                Op::Leaf(LeafOp::Param { name, .. }) => {
                    if !layout.loc.contains_key(&id.index()) {
                        return Err(codegen_error(
                            node.span,
                            format!("parameter `{name}` is not laid out"),
                        ));
                    }
                }
                Op::Leaf(LeafOp::State { name, .. }) => {
                    let mut offset = 0;
                    let mut found = None;
                    for (n, len) in &tg.states {
                        if n == name {
                            found = Some(Loc::State { offset, len: *len });
                        }
                        offset += len;
                    }
                    let Some(loc) = found else {
                        return Err(codegen_error(
                            node.span,
                            format!("state `{name}` is not laid out"),
                        ));
                    };
                    layout.loc.insert(id.index(), loc);
                }
                Op::Leaf(LeafOp::Frozen { .. }) => {}
                Op::Leaf(LeafOp::Constant { value, batch_pow }) => {
                    let loc = Loc::Const {
                        value: *value,
                        batch_pow: *batch_pow,
                    };
                    layout.loc.insert(id.index(), loc);
                }
                _ if fusion.is_member(id) => {}
                _ => {
                    if !batch_power_ok(node.ty.shape.dims()) {
                        return Err(codegen_error(
                            node.span,
                            format!(
                                "{} mentions `batch` twice; generated code supports one batch dimension per tensor",
                                node.ty
                            ),
                        ));
                    }
                    step.insert(id.index(), step.len());
                }
            }
        }
        let end_of_step = step.len();
        // A set: `live_out` holds every parameter's gradient, and a search
        // of it per node was quadratic in a deep model.
        let live_out: std::collections::HashSet<NodeId> = live_out.iter().copied().collect();
        let mut buffers: Vec<Buffer> = Vec::new();
        for &id in schedule {
            let Some(&start) = step.get(&id.index()) else {
                continue;
            };
            if let Some(&(offset, len)) = in_g.get(&id.index()) {
                layout.loc.insert(id.index(), Loc::Grad { offset, len });
                continue;
            }
            let ty = tg.graph.ty(id);
            let last_read = tg
                .graph
                .users(id)
                .iter()
                .flat_map(|&u| fusion.readers(tg, u))
                .filter_map(|r| step.get(&r.index()).copied())
                .max()
                .unwrap_or(start);
            let end = if live_out.contains(&id) {
                end_of_step
            } else {
                last_read
            };
            buffers.push(Buffer {
                id: id.index(),
                size: ty.shape.fixed_numel().unwrap_or(0),
                batched: ty.shape.dims().contains(&Dim::Batch),
                start,
                end,
            });
        }
        // Scratch space a kernel asks for: live only during its own step, so
        // the planner overlays it on values that are dead by then.
        for &id in schedule {
            let Some(&at) = step.get(&id.index()) else {
                continue;
            };
            // A loop running as a convolution's epilogue has its scratch.
            let size = fusion.scratch(tg, id);
            if size > 0 {
                buffers.push(Buffer {
                    id: SCRATCH_ID + id.index(),
                    size,
                    batched: false,
                    start: at,
                    end: at,
                });
            }
        }
        // An in-place loop's result shares its input's buffer: one buffer
        // live from the input's write to the result's last read.
        // Indexed by id (a search per alias was quadratic in big graphs).
        let mut aliases: Vec<(usize, usize)> = Vec::new();
        let mut holder_of: std::collections::HashMap<usize, usize> = Default::default();
        let index: std::collections::HashMap<usize, usize> =
            buffers.iter().enumerate().map(|(i, b)| (b.id, i)).collect();
        let mut removed = vec![false; buffers.len()];
        for (&root, &input) in &fusion.in_place {
            let Some(&r) = index.get(&root) else {
                continue;
            };
            let holder = holder_of
                .get(&input.index())
                .copied()
                .unwrap_or(input.index());
            let Some(&x) = index.get(&holder).filter(|&&x| !removed[x]) else {
                continue;
            };
            removed[r] = true;
            buffers[x].end = buffers[x].end.max(buffers[r].end);
            holder_of.insert(root, holder);
            aliases.push((root, holder));
        }
        let mut keep = removed.iter().map(|r| !r);
        buffers.retain(|_| keep.next().unwrap_or(true));
        let plan = if planned {
            memory::plan(&buffers)
        } else {
            naive(&buffers)
        };
        if let Err(e) = memory::verify(&buffers, &plan) {
            return Err(codegen_error(
                tg.graph.node(tg.loss).span,
                format!("memory plan is invalid: {e}"),
            ));
        }
        for b in &buffers {
            let off = plan.offsets[&b.id];
            if b.id >= SCRATCH_ID {
                layout.scratch.insert(b.id - SCRATCH_ID, (off, b.size));
                continue;
            }
            let loc = if b.batched {
                Loc::Ws {
                    fixed: plan.fixed,
                    per_sample: off,
                }
            } else {
                Loc::Ws {
                    fixed: off,
                    per_sample: 0,
                }
            };
            layout.loc.insert(b.id, loc);
        }
        for (root, holder) in aliases {
            let loc = layout.loc[&holder].clone();
            layout.loc.insert(root, loc);
        }
        layout.ws_fixed = plan.fixed;
        layout.ws_per_sample = plan.per_sample;
        Ok((layout, plan))
    }

    /// The workspace start (using `mb`, the maximum batch) and length (using
    /// `b`, the batch size) of a node's value, as tokens.
    pub fn start_len(&self, tg: &TrainingGraph, id: NodeId) -> (TokenStream, TokenStream) {
        let Some(Loc::Ws { fixed, per_sample }) = self.loc.get(&id.index()) else {
            return (quote!(0usize), quote!(0usize));
        };
        let ty = &tg.graph.node(id).ty;
        let start = offset_tokens(*fixed, *per_sample);
        let n = ty.shape.fixed_numel().unwrap_or(0);
        let len = match (ty.shape.dims().contains(&Dim::Batch), n) {
            (true, 1) => quote!(b),
            (true, n) => {
                let n = usize_lit(n);
                quote!(#n * b)
            }
            (false, n) => {
                let n = usize_lit(n);
                quote!(#n)
            }
        };
        (start, len)
    }

    /// `(start, len)` of a node's value, the form `kernels::io` takes.
    pub fn pair(&self, tg: &TrainingGraph, id: NodeId) -> TokenStream {
        let (s, l) = self.start_len(tg, id);
        quote!((#s, #l))
    }

    /// `ws[start..][..len]`: a node's value as a slice expression of `ws`.
    pub fn slice(&self, tg: &TrainingGraph, id: NodeId) -> TokenStream {
        let (s, l) = self.start_len(tg, id);
        if s.to_string() == "0usize" {
            quote!(ws[..#l])
        } else {
            quote!(ws[#s..][..#l])
        }
    }

    /// The workspace size as `(fixed, per_sample)`.
    pub fn ws_size(&self) -> (usize, usize) {
        (self.ws_fixed, self.ws_per_sample)
    }
}

/// `fixed + per_sample · mb` as tokens, without terms that do nothing
/// (`0 +`, `1 *`): generated code passes clippy in a user's crate.
pub(super) fn offset_tokens(fixed: usize, per_sample: usize) -> TokenStream {
    let f = usize_lit(fixed);
    let p = match per_sample {
        1 => quote!(mb),
        n => {
            let n = usize_lit(n);
            quote!(#n * mb)
        }
    };
    match (fixed, per_sample) {
        (_, 0) => quote!(#f),
        (0, _) => p,
        _ => quote!(#f + #p),
    }
}

/// `fixed + per_sample · mb` with saturating arithmetic, as tokens: the
/// workspace length, where `mb` is the caller's maximum batch.
pub(super) fn saturating_len_tokens(fixed: usize, per_sample: usize) -> TokenStream {
    let f = usize_lit(fixed);
    let p = match per_sample {
        1 => quote!(mb),
        n => {
            let n = usize_lit(n);
            quote!(mb.saturating_mul(#n))
        }
    };
    match (fixed, per_sample) {
        (_, 0) => quote!(#f),
        (0, _) => p,
        _ => quote!(#p.saturating_add(#f)),
    }
}

/// Every buffer in its own region, in schedule order (the `-O0` layout).
pub fn naive(buffers: &[Buffer]) -> Plan {
    let mut plan = Plan::default();
    for b in buffers {
        let region = if b.batched {
            &mut plan.per_sample
        } else {
            &mut plan.fixed
        };
        plan.offsets.insert(b.id, *region);
        *region += b.size;
    }
    plan.naive = (plan.fixed, plan.per_sample);
    let planned = memory::plan(buffers);
    plan.fixed_bound = planned.fixed_bound;
    plan.per_sample_bound = planned.per_sample_bound;
    plan
}
