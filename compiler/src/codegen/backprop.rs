//! `train_step_backprop`, generated for the stage networks of a pipeline
//! (`stages:`, `lower::stages`): the training step that also writes the
//! gradient of the objective with respect to the stage's incoming
//! activation (the training graph's requested input gradients), which the
//! pipeline sends back to the previous stage. Networks without requested
//! input gradients get none of this, so their code is unchanged.

use super::layout::Layout;
use super::network::read;
use super::usize_lit;
use crate::ir::TrainingGraph;
use proc_macro2::{Ident, TokenStream};
use quote::quote;

/// What `train_step_backprop` adds to a stage network's generated code.
pub(super) struct Backprop {
    /// The inherent `train_step_backprop_in`.
    pub(super) methods: TokenStream,
    /// `impl Model`'s `backprop_inputs` and `train_step_backprop`.
    pub(super) trait_methods: TokenStream,
}

/// The slices of a training step, as `network.rs` builds them.
pub(super) struct Step<'a> {
    /// The network's struct and its spec static.
    pub(super) ty: &'a Ident,
    pub(super) spec: &'a Ident,
    /// Its float inputs and labels, in declaration order.
    pub(super) features: &'a [Ident],
    pub(super) labels: &'a [Ident],
    /// `train_step_in`'s body up to (not including) its `Ok(loss)`: the
    /// kernel calls and the gradient copies.
    pub(super) body: TokenStream,
    /// The loss's slice in the workspace.
    pub(super) loss_at: TokenStream,
    /// The batch check that binds `b`.
    pub(super) check: TokenStream,
}

/// `train_step_backprop` from the training step `step` and the input
/// gradients of `tg`, which must be in `layout` (scheduled and kept live to
/// the end of the step).
pub(super) fn backprop(
    tg: &TrainingGraph,
    layout: &Layout,
    step: &Step<'_>,
    rt: &TokenStream,
) -> Backprop {
    let Step {
        ty,
        spec,
        features,
        labels,
        body,
        loss_at,
        check,
    } = step;
    let n = usize_lit(tg.inputs.len());
    let copies: TokenStream = tg
        .inputs
        .iter()
        .enumerate()
        .map(|(i, (name, _, g))| {
            let src = read(layout, tg, *g);
            let what = format!("d_{name}");
            let comment = format!(" d objective / d {name}, node {}", g.index());
            let i = usize_lit(i);
            quote! {
                #[doc = #comment]
                let src = &#src;
                let dst = &mut *d_inputs[#i];
                if dst.len() != src.len() {
                    return ::core::result::Result::Err(#rt::StepError::Length {
                        name: ::std::borrow::Cow::Borrowed(#what),
                        expected: src.len(),
                        found: dst.len(),
                    });
                }
                dst.copy_from_slice(src);
            }
        })
        .collect();
    let full = quote! {
        #body
        #copies
        ::core::result::Result::Ok(#loss_at[0])
    };
    let b = if super::kernels::mentions(&full, "b") {
        quote!(b)
    } else {
        quote!(_)
    };
    let bind =
        |name: &str, tokens: TokenStream| super::kernels::mentions(&full, name).then_some(tokens);
    let mb = bind("mb", quote!(let mb = max_batch;));
    let p = bind("p", quote!(let p = params;));
    let g = bind("g", quote!(let g = grads;));
    let names: Vec<&String> = tg.inputs.iter().map(|i| &i.0).collect();
    let fparams: Vec<TokenStream> = features.iter().map(|f| quote!(#f: &[f32])).collect();
    let lparams: Vec<TokenStream> = labels.iter().map(|l| quote!(#l: &[u32])).collect();
    let (nf, nl) = (features.len(), labels.len());
    let methods = quote! {
        /// [`Self::train_step_in`] that also writes the gradient of the
        /// objective with respect to each input `backprop_inputs` names
        /// into `d_inputs`, in that order: a pipeline stage's step, whose
        /// incoming activation's gradient goes back to the previous stage.
        #[allow(clippy::too_many_arguments)]
        pub fn train_step_backprop_in(params: &[f32], ws: &mut [f32], max_batch: usize, grads: &mut [f32], d_inputs: &mut [&mut [f32]], #(#fparams,)* #(#lparams,)*) -> ::core::result::Result<f32, #rt::StepError> {
            #rt::model::check_buffers(&#spec, params, grads, ws, Self::workspace_len(max_batch))?;
            if d_inputs.len() != #n {
                return ::core::result::Result::Err(#rt::StepError::Arity { what: "input gradient", expected: #n, found: d_inputs.len() });
            }
            let #b = #check;
            #mb
            #p
            #g
            #full
        }
    };
    let trait_methods = quote! {
        fn backprop_inputs(&self) -> &'static [&'static str] {
            &[#(#names),*]
        }
        fn train_step_backprop(&mut self, batch: &#rt::Batch<'_>, d_inputs: &mut [&mut [f32]]) -> ::core::result::Result<f32, #rt::StepError> {
            let &[#(#features),*] = batch.inputs else {
                return ::core::result::Result::Err(#rt::StepError::Arity { what: "input", expected: #nf, found: batch.inputs.len() });
            };
            let &[#(#labels),*] = batch.labels else {
                return ::core::result::Result::Err(#rt::StepError::Arity { what: "label", expected: #nl, found: batch.labels.len() });
            };
            self.reserve_workspace()?;
            self.grads.resize(#spec.param_count, 0.0);
            #ty::train_step_backprop_in(&self.params, &mut self.ws, self.max_batch, &mut self.grads, d_inputs, #(#features,)* #(#labels,)*)
        }
    };
    Backprop {
        methods,
        trait_methods,
    }
}
