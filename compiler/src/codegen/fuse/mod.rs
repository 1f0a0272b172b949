//! Fusion: a producer → consumer chain of elementwise ops becomes one loop.
//! An elementwise node is folded into its consumer when that is its only
//! use, the consumer is elementwise, it has the consumer's shape, and
//! nothing outside the step reads it. A matrix product whose only reader is
//! such a loop runs the loop as its epilogue (bias add and activation in
//! the forward pass, the activation-gradient mask in the backward pass),
//! on each block of the product while it is in cache; the product's value
//! is never stored on its own. A forward convolution does the same, on
//! each sample's output (its per-channel bias add and activation). A loop whose same-shaped input is read by
//! nothing else runs in place: it writes its result over that input
//! (the memory planner gives both one buffer). Every refusal carries a reason
//! (`nnc compile --explain-fusion`), as XLA's `FusionDecision` does.

use super::target::{Product, Target};
use crate::graph::{Dim, NodeId, Shape};
use crate::ir::TrainingGraph;
use crate::ops::{ConvOp, Kernel, Op};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use std::collections::{BTreeMap, BTreeSet, HashSet};

mod code;

/// How deep a fused loop's element expression may nest: a chain of
/// elementwise ops longer than this is cut into loops of at most this many
/// levels. The expression is one nested Rust expression, and the compiler
/// walking it, `syn`, `prettyplease` and rustc all recurse on its depth;
/// the example models' chains are far shorter.
pub const MAX_FUSED_DEPTH: usize = 32;

/// How a fused loop reads one of its inputs at output index `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Same shape as the output: `x[i]`.
    Same,
    /// One value: `x[0]`.
    Scalar,
    /// A trailing block of the output's shape (a bias row): `x[i % n]`.
    Suffix(usize),
    /// A block of the output's middle dimensions, constant over its last
    /// `inner` elements (a per-channel bias `[C, 1, 1]` over
    /// `[batch, C, H, W]`): `x[(i / inner) % n]`. Without it, a
    /// convolution's bias add ran the general broadcasting kernel and its
    /// activation a second pass over the output.
    Block {
        /// Elements of the input.
        n: usize,
        /// Output elements per input element (the trailing dimensions the
        /// input has as 1).
        inner: usize,
    },
}

fn access(input: &Shape, out: &Shape) -> Option<Access> {
    if input == out {
        return Some(Access::Same);
    }
    if Kernel::is_scalar(input) {
        return Some(Access::Scalar);
    }
    let (i, o) = (input.dims(), out.dims());
    if i.len() > o.len() || input.has_batch() {
        return None;
    }
    let n = input.fixed_numel()?;
    let o = &o[o.len() - i.len()..];
    if o == i {
        return Some(Access::Suffix(n));
    }
    // Trailing 1s of the input broadcast over the output's last dimensions;
    // the rest must match the output's dimensions there.
    let ones = i.iter().rev().take_while(|&&d| d == Dim::Fixed(1)).count();
    let core = i.len() - ones;
    if ones == 0 || i[..core] != o[..core] {
        return None;
    }
    let inner = o[core..].iter().try_fold(1usize, |acc, d| match d {
        Dim::Fixed(k) => acc.checked_mul(*k),
        Dim::Batch => None,
    })?;
    Some(Access::Block { n, inner })
}

/// A node's operands, each once, in order.
fn distinct_operands(tg: &TrainingGraph, id: NodeId) -> Vec<NodeId> {
    let mut inputs = Vec::new();
    for o in tg.graph.operands(id) {
        if !inputs.contains(&o) {
            inputs.push(o);
        }
    }
    inputs
}

fn elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_))
}

/// A forward convolution: like a matrix product, it can run its reading
/// loop as an epilogue (on each sample's output while it is in cache).
fn conv(op: &Op) -> bool {
    matches!(op, Op::Conv(ConvOp::Conv2d(_)))
}

/// The fusion decisions for a training graph.
#[derive(Clone, Debug, Default)]
pub struct Fusion {
    /// Member node → the root of the loop it was folded into.
    pub into: BTreeMap<usize, usize>,
    /// Root node → its group's inputs (nodes outside the group), in order.
    pub groups: BTreeMap<usize, Vec<NodeId>>,
    /// Why each elementwise node that was not fused stayed a kernel.
    pub refusals: Vec<(usize, String)>,
    /// Rank-2 transposes read only by matrix products, which read the
    /// transpose's operand instead (transpose node → its operand).
    pub folded_transposes: BTreeMap<usize, NodeId>,
    /// Loop root → the matrix product computed first in its kernel, the
    /// loop running as the product's epilogue.
    pub epilogues: BTreeMap<usize, NodeId>,
    /// Why each matrix product that was not fused stayed on its own.
    pub matmul_refusals: Vec<(usize, String)>,
    /// Loop root → the input whose buffer it overwrites (in-place loops).
    pub in_place: BTreeMap<usize, NodeId>,
    /// Product → the loop root running as its epilogue (the inverse of
    /// `epilogues`, so a lookup does not scan it).
    epilogue_of: BTreeMap<usize, usize>,
    /// Loop root → the nodes folded into it, in index order.
    members_of: BTreeMap<usize, Vec<usize>>,
}

impl Fusion {
    /// Decides fusion for every elementwise node; `roots` are read after
    /// the last kernel (loss, gradients, outputs) and must stay materialised.
    pub fn new(tg: &TrainingGraph, roots: &[NodeId]) -> Fusion {
        let g = &tg.graph;
        let mut f = Fusion::default();
        let root_set: HashSet<NodeId> = roots.iter().copied().collect();
        let roots = &root_set;
        // Nesting of each node's element expression within its loop so far:
        // one more than its deepest operand fused into it.
        let mut depth: BTreeMap<usize, usize> = BTreeMap::new();
        // Which elementwise nodes a flat loop can compute (all operands indexable).
        let loopable = |id: NodeId| {
            let node = g.node(id);
            elementwise(&node.op)
                && g.operands(id)
                    .iter()
                    .all(|&o| access(&g.ty(o).shape, &node.ty.shape).is_some())
        };
        for id in g.ids() {
            let node = g.node(id);
            if !elementwise(&node.op) {
                continue;
            }
            let users = g.users(id);
            let own_depth = 1 + g
                .operands(id)
                .iter()
                .filter(|o| f.into.get(&o.index()) == Some(&id.index()))
                .map(|o| depth.get(&o.index()).copied().unwrap_or(1))
                .max()
                .unwrap_or(0);
            depth.insert(id.index(), own_depth);
            let reason = if roots.contains(&id) {
                Some("its value is read after the step (loss, gradient or output)".to_string())
            } else if own_depth >= MAX_FUSED_DEPTH {
                Some(format!(
                    "its loop's expression is {own_depth} levels deep already (at most {MAX_FUSED_DEPTH})"
                ))
            } else if users.len() != 1 {
                Some(format!(
                    "it has {} uses; fusing would recompute it",
                    users.len()
                ))
            } else if !elementwise(&g.node(users[0]).op) {
                Some(format!(
                    "its consumer `{}` is not elementwise",
                    g.node(users[0]).op
                ))
            } else if g.ty(users[0]).shape != node.ty.shape {
                Some(format!(
                    "its consumer broadcasts it from {} to {}",
                    node.ty.shape,
                    g.ty(users[0]).shape
                ))
            } else if !loopable(id) || !loopable(users[0]) {
                Some("an operand broadcasts in a way a flat loop cannot index".to_string())
            } else {
                None
            };
            match reason {
                Some(r) => f.refusals.push((id.index(), r)),
                None => {
                    f.into.insert(id.index(), users[0].index());
                }
            }
        }
        // Transposes of matrices that only feed matrix products: GEMM reads
        // the operand transposed, nothing is copied.
        for id in g.ids() {
            let node = g.node(id);
            let Op::Shape(crate::ops::ShapeOp::Transpose { perm }) = &node.op else {
                continue;
            };
            let users = g.users(id);
            let only_matmuls = !users.is_empty()
                && users.iter().all(|&u| matches!(g.node(u).op, Op::Matmul(_)))
                && users.iter().all(|&u| {
                    g.ty(u).shape.rank() == 2
                        && g.operands(u).iter().all(|&o| g.ty(o).shape.rank() == 2)
                });
            if perm == &[1, 0] && only_matmuls && !roots.contains(&id) {
                f.folded_transposes.insert(id.index(), g.operands(id)[0]);
            }
        }
        // Resolve chains to their final root.
        let keys: Vec<usize> = f.into.keys().copied().collect();
        for k in keys {
            let mut r = f.into[&k];
            while let Some(&next) = f.into.get(&r) {
                r = next;
            }
            f.into.insert(k, r);
        }
        for (&m, &r) in &f.into {
            f.members_of.entry(r).or_default().push(m);
        }
        let roots_with_members: BTreeSet<usize> = f.into.values().copied().collect();
        for &r in &roots_with_members {
            let mut inputs = Vec::new();
            f.collect_inputs(tg, NodeId::new(r), &mut inputs);
            f.groups.insert(r, inputs);
        }
        f.epilogues(tg, roots, &loopable);
        // Every other elementwise kernel a flat loop can index becomes a
        // loop of its own (cheaper than the general broadcasting kernel,
        // and a loop can run in place).
        for id in g.ids() {
            if elementwise(&g.node(id).op) && !f.is_member(id) && loopable(id) {
                f.groups
                    .entry(id.index())
                    .or_insert_with(|| distinct_operands(tg, id));
            }
        }
        f.in_place(tg, roots);
        f
    }

    /// Picks, for each loop without an epilogue, an input it may overwrite:
    /// one with the loop's exact type, computed by a kernel of its own,
    /// not read after the step, and read by no kernel but this loop (so it
    /// is dead once the loop has read each element, which it does right
    /// before writing that element).
    fn in_place(&mut self, tg: &TrainingGraph, roots: &HashSet<NodeId>) {
        let g = &tg.graph;
        let mut chosen = BTreeMap::new();
        for (&root, inputs) in &self.groups {
            let root = NodeId::new(root);
            if self.epilogues.contains_key(&root.index()) {
                continue;
            }
            let victim = inputs.iter().copied().find(|&x| {
                g.ty(x) == g.ty(root)
                    && !matches!(g.node(x).op, Op::Leaf(_))
                    && !self.is_member(x)
                    && !roots.contains(&x)
                    && g.users(x).iter().all(|&u| {
                        !self.folded_transposes.contains_key(&u.index()) && self.owner(u) == root
                    })
            });
            if let Some(x) = victim {
                chosen.insert(root.index(), x);
            }
        }
        self.in_place = chosen;
    }

    /// The input a loop overwrites, if it runs in place.
    pub fn in_place_input(&self, root: NodeId) -> Option<NodeId> {
        self.in_place.get(&root.index()).copied()
    }

    /// Decides which matrix products run with their reading loop as the
    /// epilogue. A product qualifies when it is one rank-2 matrix product,
    /// its only reader is an elementwise kernel's loop, that loop has the
    /// product's shape, and nothing after the step reads the product.
    fn epilogues(
        &mut self,
        tg: &TrainingGraph,
        roots: &HashSet<NodeId>,
        loopable: &dyn Fn(NodeId) -> bool,
    ) {
        let g = &tg.graph;
        for id in g.ids() {
            let is_conv = conv(&g.node(id).op);
            if !matches!(g.node(id).op, Op::Matmul(_)) && !is_conv {
                continue;
            }
            let users = g.users(id);
            let reader = users.first().map(|&u| self.owner(u));
            let reason = if roots.contains(&id) {
                Some("its value is read after the step (loss, gradient or output)".to_string())
            } else if !is_conv
                && (g.ty(id).shape.rank() != 2
                    || g.operands(id).iter().any(|&o| g.ty(o).shape.rank() != 2))
            {
                Some(
                    "it is a batched product; epilogues are fused into single matrix products"
                        .to_string(),
                )
            } else if users.len() != 1 {
                Some(format!(
                    "it has {} uses; an epilogue can only serve one",
                    users.len()
                ))
            } else if let Some(r) = reader.filter(|&r| !elementwise(&g.node(r).op)) {
                Some(format!(
                    "its reader `{}` is not an elementwise loop",
                    g.node(r).op
                ))
            } else if let Some(r) = reader.filter(|&r| g.ty(r).shape != g.ty(id).shape) {
                Some(format!(
                    "its reader's loop runs over {}, not the product's {}",
                    g.ty(r).shape,
                    g.ty(id).shape
                ))
            } else if let Some(r) = reader.filter(|r| self.epilogues.contains_key(&r.index())) {
                Some(format!(
                    "its reader, node {}, already runs as the epilogue of another product",
                    r.index()
                ))
            } else {
                reader
                    .filter(|&r| {
                        !loopable(r) || self.members(r).iter().any(|&m| !loopable(NodeId::new(m)))
                    })
                    .map(|r| {
                        format!(
                            "an operand of its reader, node {}, broadcasts in a way a flat loop cannot index",
                            r.index()
                        )
                    })
            };
            match (reason, reader) {
                (None, Some(r)) => {
                    self.groups
                        .entry(r.index())
                        .or_insert_with(|| distinct_operands(tg, r));
                    self.epilogues.insert(r.index(), id);
                    self.epilogue_of.insert(id.index(), r.index());
                }
                (reason, _) => self.matmul_refusals.push((
                    id.index(),
                    reason.unwrap_or_else(|| "nothing reads it".to_string()),
                )),
            }
        }
    }

    /// Elements of scratch space the kernel of `id` needs: its op's, or,
    /// for a loop running as a convolution's epilogue, the convolution's.
    pub fn scratch(&self, tg: &TrainingGraph, id: NodeId) -> usize {
        let node = self.epilogue_product(id).unwrap_or(id);
        let operands = tg.graph.operands(node);
        let types: Vec<_> = operands.iter().map(|&o| tg.graph.ty(o)).collect();
        tg.graph.node(node).op.scratch(&types)
    }

    /// The product a loop root computes first, if it runs as an epilogue.
    fn epilogue_product(&self, root: NodeId) -> Option<NodeId> {
        self.epilogues.get(&root.index()).copied()
    }

    /// The loop root whose kernel computes this product, if any.
    fn epilogue_root(&self, product: NodeId) -> Option<NodeId> {
        self.epilogue_of
            .get(&product.index())
            .map(|&r| NodeId::new(r))
    }

    fn collect_inputs(&self, tg: &TrainingGraph, id: NodeId, out: &mut Vec<NodeId>) {
        for o in tg.graph.operands(id) {
            if self.into.contains_key(&o.index()) {
                self.collect_inputs(tg, o, out);
            } else if !out.contains(&o) {
                out.push(o);
            }
        }
    }

    /// The nodes computed inside a root's loop, in index order.
    pub fn members(&self, root: NodeId) -> Vec<usize> {
        self.members_of
            .get(&root.index())
            .cloned()
            .unwrap_or_default()
    }

    /// Whether a node is computed inside another node's kernel (a loop it
    /// was fused into, or a product that reads it transposed).
    pub fn is_member(&self, id: NodeId) -> bool {
        self.into.contains_key(&id.index())
            || self.folded_transposes.contains_key(&id.index())
            || self.epilogue_root(id).is_some()
    }

    /// The kernels that read a node's value when `user` uses it: the
    /// owner of `user`, or for a folded transpose, the products reading it.
    pub fn readers(&self, tg: &TrainingGraph, user: NodeId) -> Vec<NodeId> {
        if self.folded_transposes.contains_key(&user.index()) {
            tg.graph
                .users(user)
                .into_iter()
                .map(|u| self.owner(u))
                .collect()
        } else {
            vec![self.owner(user)]
        }
    }

    /// Per operand of a kernel: whether it reads a folded transpose.
    pub fn transposed(&self, tg: &TrainingGraph, id: NodeId) -> Vec<bool> {
        if self.groups.contains_key(&id.index()) {
            return Vec::new();
        }
        tg.graph
            .operands(id)
            .iter()
            .map(|o| self.folded_transposes.contains_key(&o.index()))
            .collect()
    }

    /// The node whose kernel computes `id` (itself unless fused).
    pub fn owner(&self, id: NodeId) -> NodeId {
        if let Some(r) = self.epilogue_root(id) {
            return r;
        }
        self.into.get(&id.index()).map_or(id, |&r| NodeId::new(r))
    }

    /// The operands a node's kernel takes: its group's inputs, or its own
    /// (a folded transpose replaced by the matrix it transposes).
    /// An epilogue loop takes the product's two operands first.
    pub fn inputs(&self, tg: &TrainingGraph, id: NodeId) -> Vec<NodeId> {
        let resolved = |n: NodeId| -> Vec<NodeId> {
            tg.graph
                .operands(n)
                .iter()
                .map(|o| {
                    self.folded_transposes
                        .get(&o.index())
                        .copied()
                        .unwrap_or(*o)
                })
                .collect()
        };
        match (self.groups.get(&id.index()), self.epilogue_product(id)) {
            (Some(inputs), Some(product)) => {
                let mut all = resolved(product);
                all.extend(inputs.iter().filter(|&&x| x != product));
                all
            }
            (Some(inputs), None) => {
                let own = self.in_place_input(id);
                inputs.iter().copied().filter(|&x| Some(x) != own).collect()
            }
            (None, _) => resolved(id),
        }
    }

    /// Why each node stays its own kernel, for `--explain-fusion`.
    pub fn explain(&self) -> impl Iterator<Item = &(usize, String)> {
        self.refusals.iter().chain(&self.matmul_refusals)
    }
}
