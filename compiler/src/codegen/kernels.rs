//! Kernel functions, one per scheduled node that is not fused into another
//! (each asks the [`Target`] for the body), and the calls an entry point
//! makes to them in schedule order, with each operand's slice. Kernels are
//! associated functions of the network's struct (`Self::k5_add`), so two
//! networks in one module never collide.

use super::fuse::Fusion;
use super::layout::{Layout, Loc};
use super::target::Target;
use super::{usize_lit, var};
use crate::diagnostic::SourceFile;
use crate::graph::{DType, NodeId};
use crate::ir::TrainingGraph;
use crate::ops::{Kernel, LeafOp, NormOp, Op};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use std::collections::BTreeSet;

/// Every identifier a token stream mentions.
fn idents(ts: &TokenStream, out: &mut BTreeSet<String>) {
    for t in ts.clone() {
        match t {
            proc_macro2::TokenTree::Ident(i) => {
                out.insert(i.to_string());
            }
            proc_macro2::TokenTree::Group(g) => idents(&g.stream(), out),
            _ => {}
        }
    }
}

pub(super) fn mentions(ts: &TokenStream, name: &str) -> bool {
    let mut set = BTreeSet::new();
    idents(ts, &mut set);
    set.contains(name)
}

/// An entry point's body behind the workspace reservation and the batch
/// check, binding only what it uses: `b` (batch size), `mb` (maximum batch)
/// and `p` (parameters), `st` (state), `tw` (a teacher's weights).
pub(super) fn prelude(check: TokenStream, body: TokenStream) -> TokenStream {
    let b = if mentions(&body, "b") {
        quote!(b)
    } else {
        quote!(_)
    };
    let mb = mentions(&body, "mb").then(|| quote!(let mb = self.max_batch;));
    let p = mentions(&body, "p").then(|| quote!(let p = &self.params[..];));
    let st = mentions(&body, "st").then(|| quote!(let st = &self.state[..];));
    let tw = mentions(&body, "tw").then(|| quote!(let tw = Self::teacher_weights()?;));
    quote! {
        self.reserve_workspace()?;
        let #b = #check;
        #mb
        #p
        #st
        #tw
        #body
    }
}

/// One function per kernel node used by any entry point.
pub(super) fn kernels(
    source: &SourceFile,
    tg: &TrainingGraph,
    rt: &TokenStream,
    target: &dyn Target,
    schedules: &[&Vec<NodeId>],
    fusion: &Fusion,
    prefix: &str,
) -> TokenStream {
    let used: BTreeSet<usize> = schedules
        .iter()
        .flat_map(|s| s.iter().map(|n| n.index()))
        .collect();
    let mut out = TokenStream::new();
    for id in tg.graph.ids().filter(|id| used.contains(&id.index())) {
        let node = tg.graph.node(id);
        if fusion.is_member(id) {
            continue;
        }
        let operands = fusion.inputs(tg, id);
        let inputs: Vec<_> = operands.iter().map(|&o| tg.graph.ty(o).clone()).collect();
        // The op sees its operands' logical types (a folded transpose's,
        // not its source's) and which of them arrive transposed.
        let logical: Vec<_> = tg
            .graph
            .operands(id)
            .iter()
            .map(|&o| tg.graph.ty(o).clone())
            .collect();
        let transposed = fusion.transposed(tg, id);
        let k = Kernel {
            inputs: &logical,
            out: &node.ty,
            rt,
            transposed: &transposed,
        };
        let Some(body) = fusion
            .emit(tg, id, rt, target)
            .or_else(|| target.kernel(&node.op, &k))
        else {
            continue;
        };
        let scratch = (fusion.scratch(tg, id) > 0).then(|| quote!(scratch: &mut [f32]));
        let name = kernel_name(tg, id, prefix);
        let key = keyed(&node.op).then(|| quote!(key: #rt::model::StepKey,));
        let b = if mentions(&body, "b") {
            quote!(b)
        } else {
            quote!(_b)
        };
        // Labels arrive as `u32`; everything else (token ids fed with the
        // float inputs included) lives in `f32` buffers.
        let args = inputs
            .iter()
            .zip(&operands)
            .enumerate()
            .map(|(i, (t, &o))| {
                let x = format_ident!("x{}", i);
                let label = matches!(tg.graph.node(o).op, Op::Leaf(LeafOp::Label { .. }));
                match t.dtype {
                    DType::Class { .. } if label => quote!(#x: &[u32]),
                    _ => quote!(#x: &[f32]),
                }
            });
        let mut doc = describe(source, tg, id);
        let members = fusion.members(id);
        if !members.is_empty() {
            let list: Vec<String> = members
                .iter()
                .map(|&m| format!("{} ({})", m, tg.graph.node(NodeId::new(m)).op))
                .collect();
            doc.push_str(&format!("; fuses node {} into this loop", list.join(", ")));
        }
        if let Some(x) = fusion.in_place_input(id) {
            doc.push_str(&format!(
                "; runs in place, over node {}'s buffer",
                x.index()
            ));
        }
        if let Some(m) = fusion.epilogues.get(&id.index()) {
            doc.push_str(&format!(
                "; the loop is the epilogue of node {} ({}), computed first",
                m.index(),
                tg.graph.node(*m).op
            ));
        }
        // Fused loops take one slice per input; that is their natural shape.
        let arity = inputs.len() + 2 + usize::from(scratch.is_some()) + usize::from(key.is_some());
        let many = (arity > 7).then(|| quote!(#[allow(clippy::too_many_arguments)]));
        out.extend(quote! {
            #[doc = #doc]
            #[inline]
            #many
            fn #name(#b: usize, #key #(#args,)* out: &mut [f32], #scratch) {
                #body
            }
        });
    }
    out
}

fn kernel_name(tg: &TrainingGraph, id: NodeId, prefix: &str) -> Ident {
    let op = tg.graph.node(id).op.to_string();
    let word: String = op
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    format_ident!(
        "{}{}_{}",
        prefix,
        id.index(),
        if word.is_empty() {
            "op".to_string()
        } else {
            word
        }
    )
}

/// `` node 7: `h1` = `relu` → `f32[batch, 128]` (mnist_mlp.nn:8:14)``: op and
/// type in code spans, so that rustdoc does not read `[batch, 128]` as a
/// link in the generated doc comments.
fn describe(source: &SourceFile, tg: &TrainingGraph, id: NodeId) -> String {
    let node = tg.graph.node(id);
    let (line, col) = source.line_col(node.span.start);
    let name = node
        .name
        .as_deref()
        .map(|n| format!("`{n}` = "))
        .unwrap_or_default();
    let part = if id.index() < tg.forward_len {
        ""
    } else {
        " (backward)"
    };
    format!(
        " node {}{part}: {name}`{}` → `{}` ({}:{line}:{col})",
        id.index(),
        node.op,
        node.ty,
        source.name
    )
}

/// Whether a node's kernel takes the step key (training-mode dropout).
fn keyed(op: &Op) -> bool {
    matches!(op, Op::Norm(NormOp::Dropout { training: true, .. }))
}

/// The kernel calls of one entry point, in schedule order. Kernel names
/// start with `prefix` (`k` for the training graph, `i` for the inference
/// graph of a modal network).
pub(super) fn calls(
    source: &SourceFile,
    tg: &TrainingGraph,
    layout: &Layout,
    schedule: &[NodeId],
    rt: &TokenStream,
    fusion: &Fusion,
    prefix: &str,
) -> Vec<TokenStream> {
    let mut out = Vec::new();
    for &id in schedule {
        let node = tg.graph.node(id);
        if matches!(node.op, Op::Leaf(_)) || fusion.is_member(id) {
            continue;
        }
        let name = kernel_name(tg, id, prefix);
        let operands = fusion.inputs(tg, id);
        let mut ws_ranges = Vec::new();
        let mut args = Vec::new();
        if keyed(&node.op) {
            args.push(quote!(key));
        }
        for &o in &operands {
            match &layout.loc[&o.index()] {
                Loc::Ws { .. } => {
                    let w = format_ident!("w{}", ws_ranges.len());
                    ws_ranges.push(layout.pair(tg, o));
                    args.push(quote!(#w));
                }
                Loc::Param { offset, len } => {
                    let (a, e) = (usize_lit(*offset), usize_lit(offset + len));
                    args.push(quote!(&p[#a..#e]));
                }
                Loc::Grad { offset, len } => {
                    let (a, e) = (usize_lit(*offset), usize_lit(offset + len));
                    args.push(quote!(&g[#a..#e]));
                }
                Loc::State { offset, len } => {
                    let (a, e) = (usize_lit(*offset), usize_lit(offset + len));
                    args.push(quote!(&st[#a..#e]));
                }
                Loc::Frozen { offset, len } => {
                    let (a, e) = (usize_lit(*offset), usize_lit(offset + len));
                    args.push(quote!(&tw[#a..#e]));
                }
                Loc::Input(name) | Loc::Label(name) => {
                    let v = var(name);
                    args.push(quote!(#v));
                }
                Loc::Const { value, batch_pow } => {
                    let v = Kernel::f32(*value);
                    if *batch_pow == 0 {
                        args.push(quote!(&[#v]));
                    } else {
                        let bp = *batch_pow;
                        args.push(quote!(&[#v * (b as f32).powi(#bp)]));
                    }
                }
            }
        }
        let out_pair = layout.pair(tg, id);
        let out_slice = layout.slice(tg, id);
        let comment = describe(source, tg, id);
        let scratch = layout.scratch.get(&id.index()).copied();
        let call = if let Some(Loc::Grad { offset, len }) = layout.loc.get(&id.index()) {
            // A parameter's gradient, written straight into `g`.
            let (a, e) = (usize_lit(*offset), usize_lit(offset + len));
            let ws_names = (0..ws_ranges.len()).map(|i| format_ident!("w{}", i));
            if let Some((s, len)) = scratch {
                // The scratch region is the one mutable workspace slice.
                let (s, len) = (usize_lit(s), usize_lit(len));
                quote! {
                    let ([#(#ws_names),*], scratch) =
                        #rt::kernels::io(ws, (#s, #len), [#(#ws_ranges),*]);
                    Self::#name(b, #(#args,)* &mut g[#a..#e], scratch);
                }
            } else {
                let bind = (!ws_ranges.is_empty()).then(
                    || quote!(let [#(#ws_names),*] = #rt::kernels::inputs(ws, [#(#ws_ranges),*]);),
                );
                quote! {
                    #bind
                    Self::#name(b, #(#args,)* &mut g[#a..#e]);
                }
            }
        } else if let Some((s, len)) = scratch {
            let (s, len) = (usize_lit(s), usize_lit(len));
            let ws_names = (0..ws_ranges.len()).map(|i| format_ident!("w{}", i));
            quote! {
                let ([#(#ws_names),*], out, scratch) =
                    #rt::conv::io_scratch(ws, #out_pair, (#s, #len), [#(#ws_ranges),*]);
                Self::#name(b, #(#args,)* out, scratch);
            }
        } else if ws_ranges.is_empty() {
            quote! {
                Self::#name(b, #(#args,)* &mut #out_slice);
            }
        } else {
            let ws_names = (0..ws_ranges.len()).map(|i| format_ident!("w{}", i));
            quote! {
                let ([#(#ws_names),*], out) = #rt::kernels::io(ws, #out_pair, [#(#ws_ranges),*]);
                Self::#name(b, #(#args,)* out);
            }
        };
        out.push(quote! {
            #[doc = #comment]
            {
                #call
            }
        });
    }
    out
}
