//! Kernel functions, one per scheduled node that is not fused into another
//! (each asks the [`Target`] for the body), and the calls an entry point
//! makes to them in schedule order, with each operand's slice. Kernels are
//! associated functions of the network's struct (`Self::k5_add`), so two
//! networks in one module never collide.

use super::emit::Run;
use super::fuse::Fusion;
use super::layout::{Layout, Loc};
use super::target::Target;
use super::{usize_lit, var};
use crate::diagnostic::{CompileError, SourceFile};
use crate::graph::{DType, NodeId};
use crate::ir::TrainingGraph;
use crate::ops::{Kernel, LeafOp, NormOp, Op};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use std::collections::{BTreeSet, HashMap};

/// Whether a token stream mentions the identifier `name` (stopping at
/// the first mention).
pub(super) fn mentions(ts: &TokenStream, name: &str) -> bool {
    ts.clone().into_iter().any(|t| match t {
        proc_macro2::TokenTree::Ident(i) => i == name,
        proc_macro2::TokenTree::Group(g) => mentions(&g.stream(), name),
        _ => false,
    })
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

/// The function each kernel node's calls name: that of the first node
/// whose kernel is the same code.
#[derive(Debug, Default)]
pub(super) struct KernelNames(HashMap<usize, Ident>);

/// One function per distinct kernel among the nodes any entry point uses,
/// each pushed to `run`. Nodes whose kernels are the same code (a stack of
/// identical layers) share the first one's function, whose comment lists
/// them; each call still names its own node.
#[allow(clippy::too_many_arguments)]
pub(super) fn kernels(
    source: &SourceFile,
    tg: &TrainingGraph,
    rt: &TokenStream,
    target: &dyn Target,
    schedules: &[&Vec<NodeId>],
    fusion: &Fusion,
    prefix: &str,
    run: &mut Run<'_>,
) -> Result<KernelNames, CompileError> {
    let used: BTreeSet<usize> = schedules
        .iter()
        .flat_map(|s| s.iter().map(|n| n.index()))
        .collect();
    // First the groups of nodes with the same code, keyed by its text (the
    // tokens are dropped: only one kernel's tokens are alive at a time);
    // then each group's function, generated again from its first node.
    let mut groups: Vec<Vec<NodeId>> = Vec::new();
    let mut by_code: HashMap<String, usize> = HashMap::new();
    for id in tg.graph.ids().filter(|id| used.contains(&id.index())) {
        let Some(f) = kernel_fn(tg, id, rt, target, fusion) else {
            continue;
        };
        let key = format!("{}{}", f.many.is_some(), f.code);
        match by_code.get(&key) {
            Some(&g) => groups[g].push(id),
            None => {
                by_code.insert(key, groups.len());
                groups.push(vec![id]);
            }
        }
    }
    drop(by_code);
    let mut names = KernelNames::default();
    for group in groups {
        let id = group[0];
        let Some(KernelFn { many, code }) = kernel_fn(tg, id, rt, target, fusion) else {
            continue;
        };
        let name = kernel_name(tg, id, prefix);
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
        doc.push_str(&shared(&group[1..]));
        run.push(quote! {
            #[doc = #doc]
            #[inline]
            #many
            fn #name #code
        })?;
        for n in group {
            names.0.insert(n.index(), name.clone());
        }
    }
    Ok(names)
}

/// What a shared kernel's comment says of the other nodes it computes.
fn shared(others: &[NodeId]) -> String {
    const LISTED: usize = 3;
    let Some((last, _)) = others.split_last() else {
        return String::new();
    };
    let listed: Vec<String> = others
        .iter()
        .take(LISTED)
        .map(|n| n.index().to_string())
        .collect();
    let list = if others.len() > LISTED {
        format!("{} and {} more", listed.join(", "), others.len() - LISTED)
    } else if others.len() > 1 {
        format!(
            "{} and {}",
            listed[..listed.len() - 1].join(", "),
            last.index()
        )
    } else {
        listed[0].clone()
    };
    let s = if others.len() > 1 { "s" } else { "" };
    format!("; also the kernel of node{s} {list} (the same code)")
}

/// A kernel node's function but for its name and comment: the parameter
/// list and the body its op (or fused loop) is written as; `None` for a
/// node without a kernel.
fn kernel_fn(
    tg: &TrainingGraph,
    id: NodeId,
    rt: &TokenStream,
    target: &dyn Target,
    fusion: &Fusion,
) -> Option<KernelFn> {
    let node = tg.graph.node(id);
    if fusion.is_member(id) {
        return None;
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
    let body = fusion
        .emit(tg, id, rt, target)
        .or_else(|| target.kernel(&node.op, &k))?;
    let scratch = (fusion.scratch(tg, id) > 0).then(|| quote!(scratch: &mut [f32]));
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
    // Fused loops take one slice per input; that is their natural shape.
    let arity = inputs.len() + 2 + usize::from(scratch.is_some()) + usize::from(key.is_some());
    let many = (arity > 7).then(|| quote!(#[allow(clippy::too_many_arguments)]));
    Some(KernelFn {
        many,
        code: quote! {
            (#b: usize, #key #(#args,)* out: &mut [f32], #scratch) {
                #body
            }
        },
    })
}

/// A kernel's function but for its name and comment.
struct KernelFn {
    /// The `allow` of a long parameter list.
    many: Option<TokenStream>,
    /// The parameter list and the body.
    code: TokenStream,
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

/// The kernel calls of one entry point, in schedule order, pushed to
/// `run`: each to the function `names` gives its node (kernel names start
/// with `prefix`, `k` for the training graph, `i` for the inference graph
/// of a modal network).
#[allow(clippy::too_many_arguments)]
pub(super) fn calls(
    source: &SourceFile,
    tg: &TrainingGraph,
    layout: &Layout,
    schedule: &[NodeId],
    rt: &TokenStream,
    fusion: &Fusion,
    (prefix, names): (&str, &KernelNames),
    run: &mut Run<'_>,
) -> Result<(), CompileError> {
    for &id in schedule {
        let node = tg.graph.node(id);
        if matches!(node.op, Op::Leaf(_)) || fusion.is_member(id) {
            continue;
        }
        let name = names
            .0
            .get(&id.index())
            .cloned()
            .unwrap_or_else(|| kernel_name(tg, id, prefix));
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
            let out_pair = layout.pair(tg, id);
            let ws_names = (0..ws_ranges.len()).map(|i| format_ident!("w{}", i));
            quote! {
                let ([#(#ws_names),*], out, scratch) =
                    #rt::conv::io_scratch(ws, #out_pair, (#s, #len), [#(#ws_ranges),*]);
                Self::#name(b, #(#args,)* out, scratch);
            }
        } else if ws_ranges.is_empty() {
            let out_slice = layout.slice(tg, id);
            quote! {
                Self::#name(b, #(#args,)* &mut #out_slice);
            }
        } else {
            let out_pair = layout.pair(tg, id);
            let ws_names = (0..ws_ranges.len()).map(|i| format_ident!("w{}", i));
            quote! {
                let ([#(#ws_names),*], out) = #rt::kernels::io(ws, #out_pair, [#(#ws_ranges),*]);
                Self::#name(b, #(#args,)* out);
            }
        };
        run.push(quote! {
            #[doc = #comment]
            {
                #call
            }
        })?;
    }
    Ok(())
}
