//! One network's items: the `ModelSpec`, the struct and its entry points
//! (`new`, `train_step`, `train_step_in`, `workspace_len`, `loss`,
//! `predict`), `impl Model`, and the kernels they call.

use super::kernels::{calls, kernels, mentions, prelude};
use super::layout::{Layout, Loc};
use super::modal::Modal;
use super::stats::fusion_for;
use super::{ancestors, codegen_error, spec, usize_lit, var, Input, Options};
use crate::diagnostic::{CompileError, Diagnostic, ErrorKind, SourceFile};
use crate::graph::NodeId;
use crate::ir::{InputDecl, InputKind, OptLevel};
use crate::ops::{LeafOp, Op};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

/// The items of one network: its `ModelSpec`, its struct with `new`,
/// `train_step`, `train_step_in`, `loss` and `predict`, its `impl Model`,
/// and its kernels. `rt` is the runtime path ([`super::runtime_path`]).
pub fn network(
    source: &SourceFile,
    input: &Input<'_>,
    rt: &TokenStream,
    opts: &Options,
) -> Result<TokenStream, CompileError> {
    let Input {
        net,
        config: cfg,
        train: tg,
        inference,
    } = *input;
    // A modal network (dropout, batch norm) is compiled twice: the training
    // graph for `train_step`, the inference graph (every modal op in its
    // inference form, see `Network::for_inference`) for `loss` and
    // `predict`. Their kernels are `k…` and `i…`.
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
    let mut train_targets = vec![tg.loss];
    train_targets.extend(&grads);
    train_targets.extend(&updates);
    let train = ancestors(tg, &train_targets);
    let loss = ancestors(itg, &[itg.loss]);
    let out_nodes: Vec<NodeId> = itg.outputs.iter().map(|o| o.1).collect();
    let predict = ancestors(itg, &out_nodes);
    for (o, &node) in net.outputs.iter().zip(&out_nodes) {
        let uses_label = ancestors(itg, &[node])
            .iter()
            .any(|&n| matches!(itg.graph.node(n).op, Op::Leaf(LeafOp::Label { .. })));
        if uses_label {
            return Err(codegen_error(
                o.span,
                format!(
                    "output `{}` depends on a label; predict() has no labels",
                    o.name
                ),
            ));
        }
    }
    let planned = opts.opt_level >= OptLevel::O2;
    let mut train_out = grads.clone();
    train_out.push(tg.loss);
    train_out.extend(&updates);
    let fusion = fusion_for(tg, opts);
    let ifusion = fusion_for(itg, opts);
    let (layout, _) = Layout::new(tg, &train, &train_out, planned, &fusion, true)?;
    let (loss_layout, _) = Layout::new(itg, &loss, &[itg.loss], planned, &ifusion, false)?;
    let (predict_layout, _) = Layout::new(itg, &predict, &out_nodes, planned, &ifusion, false)?;
    let spec = spec::model_spec(source, net, cfg, tg, &layout, rt)?;

    let ty = format_ident!("{}", net.name);
    let spec_name = format_ident!("{}_SPEC", spec::screaming(&net.name));
    let state_name = format_ident!("{}_STATE", spec::screaming(&net.name));
    let kernels = if modal {
        let mut k = kernels(source, tg, rt, &[&train], &fusion, "k");
        k.extend(kernels(source, itg, rt, &[&loss, &predict], &ifusion, "i"));
        k
    } else {
        kernels(source, tg, rt, &[&train, &loss, &predict], &fusion, "k")
    };

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
    let onames: Vec<Ident> = net.outputs.iter().map(|o| var(&o.name)).collect();

    let train_calls = calls(source, tg, &layout, &train, rt, &fusion, "k");
    let loss_calls = calls(source, itg, &loss_layout, &loss, rt, &ifusion, iprefix);
    let predict_calls = calls(
        source,
        itg,
        &predict_layout,
        &predict,
        rt,
        &ifusion,
        iprefix,
    );
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
    let out_copies: TokenStream = net
        .outputs
        .iter()
        .zip(&out_nodes)
        .zip(&onames)
        .map(|((o, &node), name)| {
            let src = predict_layout.slice(itg, node);
            let oname = &o.name;
            quote! {
                let src = &#src;
                if #name.len() != src.len() {
                    return Err(#rt::StepError::Length {
                        name: #oname,
                        expected: src.len(),
                        found: #name.len(),
                    });
                }
                #name.copy_from_slice(src);
            }
        })
        .collect();
    let ws_size = {
        let sizes = [&layout, &loss_layout, &predict_layout].map(|l| l.ws_size_tokens());
        let [a, rest @ ..] = sizes;
        quote!((#a) #(.max(#rest))*)
    };
    let ws_len_body = if mentions(&ws_size, "mb") {
        quote!(let mb = max_batch.max(1); #ws_size)
    } else {
        quote!(let _ = max_batch; #ws_size)
    };
    let doc_struct = format!(
        " The `{}` network of `{}`, compiled by nnc: parameters and gradients in flat buffers, one preallocated workspace.",
        net.name, source.name
    );
    let n_features = features.len();
    let n_labels = labels.len();
    let n_outputs = net.outputs.len();
    let fparams: Vec<TokenStream> = fnames.iter().map(|n| quote!(#n: &[f32])).collect();
    let lparams: Vec<TokenStream> = lnames.iter().map(|n| quote!(#n: &[u32])).collect();
    let oparams: Vec<TokenStream> = onames.iter().map(|n| quote!(#n: &mut [f32])).collect();
    let check_labels = quote!(#rt::model::check_batch(&#spec_name, &[#(#fnames),*], Some(&[#(#lnames),*]), self.max_batch)?);
    let check_shard = quote!(#rt::model::check_batch(&#spec_name, &[#(#fnames),*], Some(&[#(#lnames),*]), max_batch)?);
    let check_inputs =
        quote!(#rt::model::check_batch(&#spec_name, &[#(#fnames),*], None, self.max_batch)?);
    // The training step reads parameters and writes workspace and
    // gradients through slices, so data-parallel workers can run it at once
    // on their own buffers (`train_step_in`).
    let train_body = {
        let stat_block = (!stat_copies.is_empty()).then(|| {
            quote! {
                if !stats.is_empty() {
                    #stat_copies
                }
            }
        });
        let body = quote! {
            #(#train_calls)*
            #grad_copies
            #stat_block
            Ok(#loss_at[0])
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
        quote! {
            #rt::model::check_buffers(&#spec_name, params, grads, ws, Self::workspace_len(max_batch))?;
            #modal_checks
            let #b = #check_shard;
            #mb
            #p
            let g = grads;
            #body
        }
    };
    let loss_body = prelude(
        check_labels,
        quote! {
            let ws = &mut self.ws[..];
            #(#loss_calls)*
            Ok(#loss_only_at[0])
        },
    );
    let predict_body = prelude(
        check_inputs,
        quote! {
            let ws = &mut self.ws[..];
            #(#predict_calls)*
            #out_copies
            Ok(b)
        },
    );
    let modal_items = Modal::new(
        net,
        tg,
        rt,
        &ty,
        &spec_name,
        &state_name,
        &fnames,
        &lnames,
        (n_features, n_labels),
    );
    let Modal {
        state_static,
        struct_fields,
        new_fields,
        stats_params,
        train_step_body,
        trait_step_in,
        trait_methods,
    } = modal_items;
    Ok(quote! {
        #spec

        #state_static

        #[doc = #doc_struct]
        pub struct #ty {
            params: Vec<f32>,
            grads: Vec<f32>,
            ws: Vec<f32>,
            max_batch: usize,
            #struct_fields
        }

        impl #ty {
            /// Builds the network for batches of up to `max_batch` samples,
            /// parameters initialised from the `train` block's seed (the
            /// workspace is allocated on first use).
            pub fn new(max_batch: usize) -> Self {
                let mb = max_batch.max(1);
                let mut model = #ty {
                    params: vec![0.0; #spec_name.param_count],
                    grads: Vec::new(),
                    ws: Vec::new(),
                    max_batch: mb,
                    #new_fields
                };
                #rt::Model::init_params(&mut model, #spec_name.train.seed)
                    .expect("nnc validated every initializer at compile time");
                model
            }

            /// Forward, loss and backward on one batch: writes the gradients
            /// and returns the mean loss (without regularisation penalties).
            pub fn train_step(&mut self, #(#fparams,)* #(#lparams,)*) -> Result<f32, #rt::StepError> {
                self.reserve_workspace();
                self.grads.resize(#spec_name.param_count, 0.0);
                #train_step_body
            }

            /// [`Self::train_step`] on the caller's buffers: `params`, a
            /// workspace of at least `workspace_len(max_batch)` floats for
            /// batches of up to `max_batch` samples, and `grads`, which it
            /// overwrites. Nothing else is touched, so data-parallel workers
            /// run it at once, each on its own workspace and gradients.
            #[allow(clippy::too_many_arguments)]
            pub fn train_step_in(params: &[f32], ws: &mut [f32], max_batch: usize, grads: &mut [f32], #stats_params #(#fparams,)* #(#lparams,)*) -> Result<f32, #rt::StepError> {
                #train_body
            }

            /// Allocates the workspace on first use (the gradient buffer
            /// too, in `train_step`): a model trained through
            /// `train_step_in`, whose callers own those buffers, never
            /// pays for them.
            fn reserve_workspace(&mut self) {
                self.ws.resize(Self::workspace_len(self.max_batch), 0.0);
            }

            /// Workspace floats for batches of up to `max_batch` samples.
            pub fn workspace_len(max_batch: usize) -> usize {
                #ws_len_body
            }

            /// Forward and loss only: the mean loss over the batch.
            pub fn loss(&mut self, #(#fparams,)* #(#lparams,)*) -> Result<f32, #rt::StepError> {
                #loss_body
            }

            /// Forward to the outputs; returns the batch size.
            pub fn predict(&mut self, #(#fparams,)* #(#oparams,)*) -> Result<usize, #rt::StepError> {
                #predict_body
            }
        }

        impl #rt::Model for #ty {
            fn spec(&self) -> &'static #rt::ModelSpec {
                &#spec_name
            }
            fn max_batch(&self) -> usize {
                self.max_batch
            }
            fn params(&self) -> &[f32] {
                &self.params
            }
            fn params_mut(&mut self) -> &mut [f32] {
                &mut self.params
            }
            fn grads(&self) -> &[f32] {
                &self.grads
            }
            fn train_step(&mut self, batch: &#rt::Batch<'_>) -> Result<f32, #rt::StepError> {
                let &[#(#fnames),*] = batch.inputs else {
                    return Err(#rt::StepError::Arity { what: "input", expected: #n_features, found: batch.inputs.len() });
                };
                let &[#(#lnames),*] = batch.labels else {
                    return Err(#rt::StepError::Arity { what: "label", expected: #n_labels, found: batch.labels.len() });
                };
                #ty::train_step(self, #(#fnames,)* #(#lnames,)*)
            }
            fn workspace_len(&self, max_batch: usize) -> usize {
                #ty::workspace_len(max_batch)
            }
            fn train_step_in(&self, ws: &mut [f32], max_batch: usize, grads: &mut [f32], batch: &#rt::Batch<'_>) -> Result<f32, #rt::StepError> {
                let &[#(#fnames),*] = batch.inputs else {
                    return Err(#rt::StepError::Arity { what: "input", expected: #n_features, found: batch.inputs.len() });
                };
                let &[#(#lnames),*] = batch.labels else {
                    return Err(#rt::StepError::Arity { what: "label", expected: #n_labels, found: batch.labels.len() });
                };
                #trait_step_in
            }
            #trait_methods
            fn loss(&mut self, batch: &#rt::Batch<'_>) -> Result<f32, #rt::StepError> {
                let &[#(#fnames),*] = batch.inputs else {
                    return Err(#rt::StepError::Arity { what: "input", expected: #n_features, found: batch.inputs.len() });
                };
                let &[#(#lnames),*] = batch.labels else {
                    return Err(#rt::StepError::Arity { what: "label", expected: #n_labels, found: batch.labels.len() });
                };
                #ty::loss(self, #(#fnames,)* #(#lnames,)*)
            }
            fn predict(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> Result<usize, #rt::StepError> {
                let &[#(#fnames),*] = inputs else {
                    return Err(#rt::StepError::Arity { what: "input", expected: #n_features, found: inputs.len() });
                };
                let [#(#onames),*] = outputs else {
                    return Err(#rt::StepError::Arity { what: "output", expected: #n_outputs, found: outputs.len() });
                };
                #ty::predict(self, #(#fnames,)* #(#onames,)*)
            }
        }

        #kernels
    })
}
