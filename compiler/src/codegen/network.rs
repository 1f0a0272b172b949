//! One network's generated code: the schedule, layout and kernel calls of
//! each entry point (`train_step`, `loss_with_scores`, `predict`,
//! `predict_scores`), the `ModelSpec`, and the bodies the surface
//! ([`super::surface`]) wraps in the struct and `impl Model`.

use std::collections::BTreeSet;

use super::emit::Emit;
use super::fuse::Fusion;
use super::kernels::{calls, kernels, mentions, prelude, KernelNames};
use super::layout::{Layout, Loc};
use super::modal::Modal;
use super::stats::fusion_for;
use super::surface::{self, Bodies, Generated, Surface};
use super::{ancestors, codegen_error, spec, usize_lit, var, Input, Options};
use crate::diagnostic::{CompileError, Diagnostic, ErrorKind, SourceFile};
use crate::graph::NodeId;
use crate::ir::{InputDecl, InputKind, OptLevel, TrainingGraph};
use crate::ops::{LeafOp, Op};
use nnc_spec::{BatchSpec, LossSpec};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

/// The batch `Default` builds a model for when the `train` block says
/// `batch: full` (the data's size is not known at compile time): the
/// chunk `evaluate` and `predict` run in; `fit` sizes its own buffers.
const FULL_BATCH_CHUNK: usize = 256;

/// The items of one network: its `ModelSpec`, its struct with `new`,
/// `train_step`, `train_step_in`, `loss`, `loss_with_scores`, `predict`
/// and `predict_scores`, its `impl Model`, and its kernels. `rt` is the
/// runtime path ([`super::runtime_path`]).
pub fn network(
    source: &SourceFile,
    input: &Input<'_>,
    rt: &TokenStream,
    opts: &Options,
) -> Result<TokenStream, CompileError> {
    network_with(source, input, rt, opts, &mut Emit::tokens())
}

/// [`network`], its kernels and kernel calls going to `emit`: in text mode
/// they are formatted as they are generated, and the items returned hold
/// placeholders for them ([`super::format_into`] puts the text back).
pub fn network_with(
    source: &SourceFile,
    input: &Input<'_>,
    rt: &TokenStream,
    opts: &Options,
    emit: &mut Emit,
) -> Result<TokenStream, CompileError> {
    let Input {
        net,
        config: cfg,
        train: tg,
        inference,
        explain: xtg,
        layout: layout_hash,
    } = *input;
    // A modal network (dropout, batch norm) is compiled twice: the training
    // graph for `train_step`, the inference graph (every modal op in its
    // inference form, see `Network::for_inference`) for the others. Their
    // kernels are `k…` and `i…`.
    let modal = net.is_modal();
    if modal != inference.is_some() {
        return Err(Diagnostic::new(
            ErrorKind::Internal,
            net.span,
            format!(
                "network `{}` is {}modal but was given {} inference graph",
                net.name,
                if modal { "" } else { "not " },
                if modal { "no" } else { "an" }
            ),
        )
        .into());
    }
    let itg = inference.unwrap_or(tg);
    let iprefix = if modal { "i" } else { "k" };
    let grads: Vec<NodeId> = tg.params.iter().map(|p| p.2).collect();
    let updates: Vec<NodeId> = tg.state_updates.iter().map(|u| u.1).collect();
    // A pipeline stage's gradient w.r.t. its incoming activation (empty
    // for every other network, whose step is unchanged).
    let dins: Vec<NodeId> = tg.inputs.iter().map(|i| i.2).collect();
    let mut train_targets = vec![tg.loss];
    train_targets.extend(&grads);
    train_targets.extend(&updates);
    train_targets.extend(&dins);
    let train = ancestors(tg, &train_targets);
    let scores = itg.scores;
    let mut loss_out = vec![itg.loss];
    loss_out.extend(scores);
    let loss = ancestors(itg, &loss_out);
    let out_nodes: Vec<NodeId> = itg.outputs.iter().map(|o| o.1).collect();
    let predict = ancestors(itg, &out_nodes);
    let score_out: Vec<NodeId> = scores.into_iter().collect();
    let scoring = ancestors(itg, &score_out);
    for (i, &node) in out_nodes.iter().enumerate() {
        if uses_label(itg, node) {
            let o = &net.outputs[i];
            return Err(codegen_error(
                o.span,
                format!(
                    "output `{}` depends on a label; predict() has no labels",
                    o.name
                ),
            ));
        }
    }
    if scores.is_some_and(|s| uses_label(itg, s)) {
        // The prediction a loss scores never reads its labels; a custom
        // objective that does gets no predict_scores (it counts as `Other`).
        return Err(codegen_error(
            net.span,
            "the loss's prediction depends on a label".into(),
        ));
    }
    let planned = opts.opt_level >= OptLevel::O2;
    let mut train_out = grads.clone();
    train_out.push(tg.loss);
    train_out.extend(&updates);
    train_out.extend(&dins);
    let fusion = fusion_for(tg, opts);
    // One graph serves every entry point of a network that is not modal:
    // its fusion is decided once.
    let ifusion_own = (!std::ptr::eq(itg, tg)).then(|| fusion_for(itg, opts));
    let ifusion = ifusion_own.as_ref().unwrap_or(&fusion);
    let (layout, _) = Layout::new(tg, &train, &train_out, planned, &fusion, true)?;
    let (loss_layout, _) = Layout::new(itg, &loss, &loss_out, planned, ifusion, false)?;
    let (predict_layout, _) = Layout::new(itg, &predict, &out_nodes, planned, ifusion, false)?;
    let (score_layout, _) = Layout::new(itg, &scoring, &score_out, planned, ifusion, false)?;

    // The inputs predict and predict_scores read: those the outputs or the
    // loss's prediction depend on (targets only the loss reads are not).
    let reads: BTreeSet<String> = predict
        .iter()
        .chain(&scoring)
        .filter_map(|&n| match &itg.graph.node(n).op {
            Op::Leaf(LeafOp::Input { name, .. } | LeafOp::Tokens { name, .. }) => {
                Some(name.clone())
            }
            _ => None,
        })
        .collect();
    let predict_flags: Vec<bool> = net
        .inputs
        .iter()
        .map(|i| i.kind == InputKind::Features && reads.contains(&i.name))
        .collect();
    let loss_spec = LossSpec {
        kind: net.loss_decl.kind,
        scores: scores.map_or(0, |s| itg.graph.ty(s).shape.fixed_numel().unwrap_or(0)),
    };
    let spec = spec::model_spec(
        source,
        net,
        cfg,
        tg,
        &layout,
        loss_spec,
        &predict_flags,
        rt,
        emit,
    )?;

    let ty = super::rust_ident(&net.name);
    let spec_name = format_ident!("{}_SPEC", spec::screaming(&net.name));
    let state_name = format_ident!("{}_STATE", spec::screaming(&net.name));
    let target = &*opts.target;
    let mut run = emit.members();
    let train_scheduled: Vec<&Vec<NodeId>> = if modal {
        vec![&train]
    } else {
        vec![&train, &loss, &predict, &scoring]
    };
    let knames = kernels(
        source,
        tg,
        rt,
        target,
        &train_scheduled,
        &fusion,
        "k",
        &mut run,
    )?;
    let inames = if modal {
        Some(kernels(
            source,
            itg,
            rt,
            target,
            &[&loss, &predict, &scoring],
            ifusion,
            "i",
            &mut run,
        )?)
    } else {
        None
    };
    let kernels = run.finish();
    // The other entry points of a network that is not modal call the
    // training graph's kernels.
    let inames = inames.as_ref().unwrap_or(&knames);
    let features: Vec<&InputDecl> = net
        .inputs
        .iter()
        .filter(|i| i.kind == InputKind::Features)
        .collect();
    let labels: Vec<&InputDecl> = net
        .inputs
        .iter()
        .filter(|i| i.kind == InputKind::Labels)
        .collect();
    let fnames: Vec<Ident> = features.iter().map(|i| var(&i.name)).collect();
    let lnames: Vec<Ident> = labels.iter().map(|i| var(&i.name)).collect();
    let pnames: Vec<Ident> = net
        .inputs
        .iter()
        .zip(&predict_flags)
        .filter(|(_, &p)| p)
        .map(|(i, _)| var(&i.name))
        .collect();
    let onames: Vec<Ident> = net.outputs.iter().map(|o| var(&o.name)).collect();

    // Each entry point's kernel calls: one run of statements (formatted
    // as they are generated in text mode).
    let entry_calls = |emit: &mut Emit,
                       graph: &TrainingGraph,
                       layout: &Layout,
                       schedule: &[NodeId],
                       fused: &Fusion,
                       names: (&str, &KernelNames)| {
        let mut run = emit.statements();
        calls(source, graph, layout, schedule, rt, fused, names, &mut run)?;
        Ok::<_, CompileError>(run.finish())
    };
    let train_calls = entry_calls(emit, tg, &layout, &train, &fusion, ("k", &knames))?;
    let loss_calls = entry_calls(emit, itg, &loss_layout, &loss, ifusion, (iprefix, inames))?;
    let predict_calls = entry_calls(
        emit,
        itg,
        &predict_layout,
        &predict,
        ifusion,
        (iprefix, inames),
    )?;
    let score_calls = entry_calls(
        emit,
        itg,
        &score_layout,
        &scoring,
        ifusion,
        (iprefix, inames),
    )?;
    // `predict`'s matrix products split across the caller's rayon pool
    // (the batch-256 inference workloads ran on one core of two). Products
    // split by whole tiles of their output, so the values are the same on
    // any number of threads; a product too small to pay for the split (any
    // at batch 1) stays on the calling thread.
    let parallel =
        |calls: TokenStream| quote!(let _parallel = #rt::kernels::parallel_gemm(); #calls);
    let (predict_calls, score_calls) = (parallel(predict_calls), parallel(score_calls));
    let grad_copies: TokenStream = tg
        .params
        .iter()
        .enumerate()
        .filter(|(_, (_, _, g))| !matches!(layout.loc.get(&g.index()), Some(Loc::Grad { .. })))
        .map(|(i, (name, _, g))| {
            let po = usize_lit(layout.param_offset[i]);
            let pe = usize_lit(layout.param_offset[i] + layout.param_len[i]);
            let src = layout.slice(tg, *g);
            let comment = format!(" d loss / d {name}");
            quote! {
                #[doc = #comment]
                g[#po..#pe].copy_from_slice(&#src);
            }
        })
        .collect();
    let loss_at = layout.slice(tg, tg.loss);
    let loss_only_at = loss_layout.slice(itg, itg.loss);
    // Each state tensor's batch statistic, copied out for the running
    // update (only when the caller asked for statistics).
    let mut state_offset = 0;
    let stat_copies: TokenStream = tg
        .states
        .iter()
        .map(|(name, len)| {
            let (a, e) = (usize_lit(state_offset), usize_lit(state_offset + len));
            state_offset += len;
            let comment = format!(" batch statistic for {name}");
            match tg.state_updates.iter().find(|u| &u.0 == name) {
                Some((_, node)) => {
                    let src = layout.slice(tg, *node);
                    quote! {
                        #[doc = #comment]
                        stats[#a..#e].copy_from_slice(&#src);
                    }
                }
                None => quote!(),
            }
        })
        .collect();
    let state_len = usize_lit(state_offset);
    let copy_out = |layout: &Layout, node: NodeId, dst: &Ident, name: &str| {
        let src = read(layout, itg, node);
        quote! {
            let src = &#src;
            if #dst.len() != src.len() {
                return ::core::result::Result::Err(#rt::StepError::Length {
                    name: ::std::borrow::Cow::Borrowed(#name),
                    expected: src.len(),
                    found: #dst.len(),
                });
            }
            #dst.copy_from_slice(src);
        }
    };
    let out_copies: TokenStream = net
        .outputs
        .iter()
        .zip(&out_nodes)
        .zip(&onames)
        .map(|((o, &node), name)| copy_out(&predict_layout, node, name, &o.name))
        .collect();
    let scores_ident = format_ident!("scores");
    let explain = match xtg {
        Some(xtg) => Some(super::explain::explain(
            source,
            xtg,
            &super::explain::Names {
                ty: &ty,
                spec: &spec_name,
                predict_inputs: &pnames,
            },
            rt,
            target,
            opts,
            emit,
        )?),
        None => None,
    };
    // The largest workspace any entry point needs; distinct, non-zero sizes
    // only (a `.max(0)` is a clippy warning in the user's crate).
    let ws_size = {
        let mut sizes: Vec<(usize, usize)> = Vec::new();
        let layouts = [&layout, &loss_layout, &predict_layout, &score_layout];
        let explained = explain.as_ref().map(|x| x.ws_size);
        for s in layouts.iter().map(|l| l.ws_size()).chain(explained) {
            if s != (0, 0) && !sizes.contains(&s) {
                sizes.push(s);
            }
        }
        // Saturating: a batch too large for the address space gives
        // `usize::MAX`, which no allocation satisfies (a clean error in
        // `reserve_workspace`), never a wrapped, too-small length.
        let tokens: Vec<TokenStream> = sizes
            .iter()
            .map(|&(f, p)| super::layout::saturating_len_tokens(f, p))
            .collect();
        match tokens.as_slice() {
            [] => quote!(0usize),
            [one] => quote!(#one),
            [a, rest @ ..] => quote!((#a) #(.max(#rest))*),
        }
    };
    let workspace_len = if mentions(&ws_size, "mb") {
        quote!(let mb = max_batch.max(1); #ws_size)
    } else {
        quote!(let _ = max_batch; #ws_size)
    };
    let check_labels = quote!(#rt::model::check_batch(&#spec_name, &[#(#fnames),*], ::core::option::Option::Some(&[#(#lnames),*]), self.max_batch)?);
    let check_shard = quote!(#rt::model::check_batch(&#spec_name, &[#(#fnames),*], ::core::option::Option::Some(&[#(#lnames),*]), max_batch)?);
    let check_inputs = quote!(#rt::model::check_batch(&#spec_name, &[#(#pnames),*], ::core::option::Option::None, self.max_batch)?);
    // The training step reads parameters and writes workspace and
    // gradients through slices, so data-parallel workers can run it at once
    // on their own buffers (`train_step_in`).
    let mut backprop = None;
    let train_step_in = {
        let stat_block = (!stat_copies.is_empty()).then(|| {
            quote! {
                if !stats.is_empty() {
                    #stat_copies
                }
            }
        });
        if !tg.inputs.is_empty() && !modal {
            backprop = Some(super::backprop::backprop(
                tg,
                &layout,
                &super::backprop::Step {
                    ty: &ty,
                    spec: &spec_name,
                    features: &fnames,
                    labels: &lnames,
                    // Its own copy of the calls: a placeholder's text is
                    // placed once.
                    body: {
                        let calls =
                            entry_calls(emit, tg, &layout, &train, &fusion, ("k", &knames))?;
                        quote!(#calls #grad_copies)
                    },
                    loss_at: loss_at.clone(),
                    check: check_shard.clone(),
                },
                rt,
            ));
        }
        let body = quote! {
            #train_calls
            #grad_copies
            #stat_block
            ::core::result::Result::Ok(#loss_at[0])
        };
        let modal_checks = modal.then(|| {
            let unused_key = (!mentions(&body, "key")).then(|| quote!(let _ = key;));
            quote! {
                #rt::model::check_stats(stats, #state_len)?;
                #unused_key
            }
        });
        let b = if mentions(&body, "b") {
            quote!(b)
        } else {
            quote!(_)
        };
        let mb = mentions(&body, "mb").then(|| quote!(let mb = max_batch;));
        let p = mentions(&body, "p").then(|| quote!(let p = params;));
        // A network without parameters has no gradient to write.
        let g = mentions(&body, "g").then(|| quote!(let g = grads;));
        let tw = mentions(&body, "tw").then(|| quote!(let tw = Self::teacher_weights()?;));
        quote! {
            #rt::model::check_buffers(&#spec_name, params, grads, ws, Self::workspace_len(max_batch))?;
            #modal_checks
            let #b = #check_shard;
            #mb
            #p
            #g
            #tw
            #body
        }
    };
    let score_copy = match scores {
        Some(s) => {
            let copy = copy_out(&loss_layout, s, &scores_ident, "scores");
            quote! {
                if !scores.is_empty() {
                    #copy
                }
            }
        }
        None => quote!(let _ = scores;),
    };
    let loss_with_scores = prelude(
        check_labels,
        ws_if_used(quote! {
            #loss_calls
            #score_copy
            ::core::result::Result::Ok(#loss_only_at[0])
        }),
    );
    let predict_body = prelude(
        check_inputs.clone(),
        ws_if_used(quote! {
            #predict_calls
            #out_copies
            ::core::result::Result::Ok(b)
        }),
    );
    let predict_scores = match scores {
        Some(s) => {
            let copy = copy_out(&score_layout, s, &scores_ident, "scores");
            prelude(
                check_inputs,
                ws_if_used(quote! {
                    #score_calls
                    #copy
                    ::core::result::Result::Ok(b)
                }),
            )
        }
        // Another objective has no prediction to score: the batch is
        // checked and nothing is written.
        None => prelude(
            check_inputs,
            quote!(let _ = scores; ::core::result::Result::Ok(b)),
        ),
    };
    let modal_items = Modal::new(
        net,
        tg,
        rt,
        &ty,
        &spec_name,
        &state_name,
        &fnames,
        &lnames,
        (fnames.len(), lnames.len()),
    );
    let default_batch = match cfg.spec.batch {
        BatchSpec::Size(n) => n.max(1),
        BatchSpec::Full => FULL_BATCH_CHUNK,
    };
    let state_static = modal_items.state_static;
    let (mut explain_methods, mut explain_trait, explain_kernels) = match explain {
        Some(x) => (x.methods, x.trait_methods, x.kernels),
        None => Default::default(),
    };
    if let Some(bp) = backprop {
        explain_methods.extend(bp.methods);
        explain_trait.extend(bp.trait_methods);
    }
    if let Some(h) = layout_hash {
        let h = proc_macro2::Literal::u64_suffixed(h);
        explain_trait.extend(quote! {
            fn layout_hash(&self) -> u64 {
                #h
            }
        });
    }
    let trait_methods = {
        let m = modal_items.trait_methods;
        quote!(#m #explain_trait)
    };
    let kernels = quote!(#kernels #explain_kernels);
    let teacher = super::teacher::teacher(source, net, cfg, &[tg, itg], rt)?;
    let explain_methods = {
        let t = teacher.methods;
        quote!(#explain_methods #t)
    };
    let generated = Generated {
        statics: {
            let t = teacher.statics;
            quote!(#spec #state_static #t)
        },
        struct_fields: modal_items.struct_fields,
        new_fields: modal_items.new_fields,
        default_batch,
        train_step: {
            let body = modal_items.train_step_body;
            quote! {
                self.reserve_workspace()?;
                self.grads.resize(#spec_name.param_count, 0.0);
                #body
            }
        },
        train_step_in,
        workspace_len,
        loss_with_scores,
        predict: predict_body,
        predict_scores,
        trait_step_in: modal_items.trait_step_in,
        trait_methods,
        explain_methods,
        kernels,
    };
    let surface = Surface {
        ty,
        spec: spec_name,
        features: fnames,
        labels: lnames,
        predict_inputs: pnames,
        outputs: onames,
        modal,
    };
    Ok(surface::items(
        &surface,
        &Bodies::Generated(Box::new(generated)),
        rt,
    ))
}

/// Whether `node` reads a label.
fn uses_label(tg: &TrainingGraph, node: NodeId) -> bool {
    ancestors(tg, &[node])
        .iter()
        .any(|&n| matches!(tg.graph.node(n).op, Op::Leaf(LeafOp::Label { .. })))
}

/// A body that runs on the workspace, binding `ws` only when it is used
/// (a network without outputs has an empty `predict`).
fn ws_if_used(body: TokenStream) -> TokenStream {
    if mentions(&body, "ws") {
        quote!(let ws = &mut self.ws[..]; #body)
    } else {
        body
    }
}

/// A node's value as a slice expression, wherever it lives: the workspace,
/// an input's slice, the parameters or the state.
pub(super) fn read(layout: &Layout, tg: &TrainingGraph, node: NodeId) -> TokenStream {
    match layout.loc.get(&node.index()) {
        Some(Loc::Input(name)) => {
            let v = var(name);
            quote!(#v[..])
        }
        Some(Loc::Param { offset, len }) => {
            let (a, e) = (usize_lit(*offset), usize_lit(offset + len));
            quote!(p[#a..#e])
        }
        Some(Loc::State { offset, len }) => {
            let (a, e) = (usize_lit(*offset), usize_lit(offset + len));
            quote!(st[#a..#e])
        }
        Some(Loc::Frozen { offset, len }) => {
            let (a, e) = (usize_lit(*offset), usize_lit(offset + len));
            quote!(tw[#a..#e])
        }
        _ => layout.slice(tg, node),
    }
}
