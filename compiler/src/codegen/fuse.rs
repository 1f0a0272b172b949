//! Elementwise fusion: a producer → consumer chain of elementwise ops becomes
//! one loop. An elementwise node is folded into its consumer when that is
//! its only use, the consumer is elementwise, it has the consumer's shape,
//! and nothing outside the step reads it. Every refusal carries a reason
//! (`nnc compile --explain-fusion`), as XLA's `FusionDecision` does.

use crate::autodiff::TrainingGraph;
use crate::graph::{NodeId, Shape};
use crate::ops::{Kernel, Op};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use std::collections::{BTreeMap, BTreeSet};

/// How a fused loop reads one of its inputs at output index `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Same shape as the output: `x[i]`.
    Same,
    /// One value: `x[0]`.
    Scalar,
    /// A trailing block of the output's shape (a bias row): `x[i % n]`.
    Suffix(usize),
}

fn access(input: &Shape, out: &Shape) -> Option<Access> {
    if input == out {
        return Some(Access::Same);
    }
    if Kernel::is_scalar(input) {
        return Some(Access::Scalar);
    }
    let (i, o) = (input.dims(), out.dims());
    let trailing = i.len() <= o.len() && o[o.len() - i.len()..] == *i;
    let n = input.fixed_numel()?;
    (trailing && !input.has_batch()).then_some(Access::Suffix(n))
}

fn elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_))
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
}

impl Fusion {
    /// Decides fusion for every elementwise node; `roots` are read after
    /// the last kernel (loss, gradients, outputs) and must stay materialised.
    pub fn new(tg: &TrainingGraph, roots: &[NodeId]) -> Fusion {
        let g = &tg.graph;
        let mut f = Fusion::default();
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
            let reason = if roots.contains(&id) {
                Some("its value is read after the step (loss, gradient or output)".to_string())
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
        let roots_with_members: BTreeSet<usize> = f.into.values().copied().collect();
        for &r in &roots_with_members {
            let mut inputs = Vec::new();
            f.collect_inputs(tg, NodeId::new(r), &mut inputs);
            f.groups.insert(r, inputs);
        }
        f
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
        self.into
            .iter()
            .filter(|(_, &r)| r == root.index())
            .map(|(&m, _)| m)
            .collect()
    }

    /// Whether a node is computed inside another node's kernel (a loop it
    /// was fused into, or a product that reads it transposed).
    pub fn is_member(&self, id: NodeId) -> bool {
        self.into.contains_key(&id.index()) || self.folded_transposes.contains_key(&id.index())
    }

    /// The kernels that read a node's value when `user` uses it: the
    /// owner of `user`, or for a folded transpose, the products reading it.
    pub fn readers(&self, tg: &TrainingGraph, user: NodeId) -> Vec<NodeId> {
        if self.folded_transposes.contains_key(&user.index()) {
            tg.graph.users(user)
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
        self.into.get(&id.index()).map_or(id, |&r| NodeId::new(r))
    }

    /// The operands a node's kernel takes: its group's inputs, or its own
    /// (a folded transpose replaced by the matrix it transposes).
    pub fn inputs(&self, tg: &TrainingGraph, id: NodeId) -> Vec<NodeId> {
        match self.groups.get(&id.index()) {
            Some(inputs) => inputs.clone(),
            None => tg
                .graph
                .operands(id)
                .iter()
                .map(|o| {
                    self.folded_transposes
                        .get(&o.index())
                        .copied()
                        .unwrap_or(*o)
                })
                .collect(),
        }
    }

    /// The loop body of a fused root: `out[i] = expression`.
    pub fn emit(&self, tg: &TrainingGraph, root: NodeId, rt: &TokenStream) -> Option<TokenStream> {
        let inputs = self.groups.get(&root.index())?;
        let out_shape = &tg.graph.ty(root).shape;
        let expr = self.expr(tg, root, inputs, out_shape, rt);
        let guards = inputs.iter().enumerate().filter_map(|(j, &x)| {
            let name = format_ident!("x{}", j);
            (access(&tg.graph.ty(x).shape, out_shape) == Some(Access::Same))
                .then(|| quote!(let #name = &#name[..out.len()];))
        });
        Some(quote! {
            #(#guards)*
            for (i, o) in out.iter_mut().enumerate() {
                *o = #expr;
            }
        })
    }

    fn expr(
        &self,
        tg: &TrainingGraph,
        id: NodeId,
        inputs: &[NodeId],
        out: &Shape,
        rt: &TokenStream,
    ) -> TokenStream {
        let operand = |o: NodeId| -> TokenStream {
            if self.into.contains_key(&o.index()) {
                return self.expr(tg, o, inputs, out, rt);
            }
            let j = inputs.iter().position(|&x| x == o).unwrap_or(0);
            let x = format_ident!("x{}", j);
            match access(&tg.graph.ty(o).shape, out) {
                Some(Access::Scalar) => quote!(#x[0]),
                Some(Access::Suffix(n)) => {
                    let n = proc_macro2::Literal::usize_suffixed(n);
                    quote!(#x[i % #n])
                }
                _ => quote!(#x[i]),
            }
        };
        let ops = tg.graph.operands(id);
        match &tg.graph.node(id).op {
            Op::Unary(u) => {
                let x = operand(ops[0]);
                let e = u.emit_expr(rt);
                quote!({ let x = #x; #e })
            }
            Op::Binary(b) => {
                let (l, r) = (operand(ops[0]), operand(ops[1]));
                let e = b.emit_expr();
                quote!({ let l = #l; let r = #r; #e })
            }
            _ => quote!(0.0),
        }
    }
}
