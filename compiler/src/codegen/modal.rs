//! The parts of a generated network that only modal networks (dropout,
//! batch norm) have.

use std::borrow::Cow;

use crate::ir::{Network, TrainingGraph};
use nnc_spec::tokens::ToRust;
use nnc_spec::{ParamSpec, StateSpec};
use proc_macro2::{Ident, TokenStream};
use quote::quote;

/// The parts of a generated network that exist only when it is modal
/// (dropout or batch norm): the state table, the state buffer and step
/// counter, the statistics and step key of the training step, and the
/// `Model` methods that expose them. Empty for other networks, whose
/// generated code is unchanged.
pub(super) struct Modal {
    pub(super) state_static: TokenStream,
    pub(super) struct_fields: TokenStream,
    pub(super) new_fields: TokenStream,
    pub(super) train_step_body: TokenStream,
    pub(super) trait_step_in: TokenStream,
    pub(super) trait_methods: TokenStream,
}

impl Modal {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        net: &Network,
        tg: &TrainingGraph,
        rt: &TokenStream,
        ty: &Ident,
        spec_name: &Ident,
        state_name: &Ident,
        fnames: &[Ident],
        lnames: &[Ident],
        (n_features, n_labels): (usize, usize),
    ) -> Modal {
        if !net.is_modal() {
            return Modal {
                state_static: quote!(),
                struct_fields: quote!(),
                new_fields: quote!(),
                train_step_body: quote! {
                    Self::train_step_in(&self.params, &mut self.ws, self.max_batch, &mut self.grads, #(#fnames,)* #(#lnames,)*)
                },
                trait_step_in: quote! {
                    #ty::train_step_in(&self.params, ws, max_batch, grads, #(#fnames,)* #(#lnames,)*)
                },
                trait_methods: quote!(),
            };
        }
        let mut offset = 0;
        let entries: Vec<TokenStream> = tg
            .states
            .iter()
            .map(|(name, len)| {
                let decl = net.states.iter().find(|s| &s.name == name);
                let shape = decl
                    .map(|d| d.shape.resolve(1))
                    .unwrap_or_else(|| vec![*len]);
                let spec = StateSpec {
                    tensor: ParamSpec {
                        name: Cow::Owned(name.clone()),
                        shape: Cow::Owned(shape),
                        offset,
                        len: *len,
                    },
                    init: decl.map_or(0.0, |d| d.init) as f32,
                    momentum: decl.map_or(0.0, |d| d.momentum) as f32,
                };
                offset += len;
                spec.to_rust(rt)
            })
            .collect();
        let doc = format!(
            " The state tensors of `{}` (running statistics): not trained, updated after each training step.",
            net.name
        );
        Modal {
            state_static: quote! {
                #[doc = #doc]
                pub static #state_name: &[#rt::model::StateSpec] = &[#(#entries),*];
            },
            struct_fields: quote! {
                state: ::std::vec::Vec<f32>,
                stats: ::std::vec::Vec<f32>,
                steps: u64,
            },
            new_fields: quote! {
                state: #rt::model::initial_state(#state_name),
                stats: ::std::vec::Vec::new(),
                steps: 0,
            },
            train_step_body: quote! {
                // Training mode: dropout masks of step `steps`, batch
                // statistics blended into the running state afterwards.
                self.stats.resize(#rt::model::state_len(#state_name), 0.0);
                let key = #rt::model::StepKey { seed: #spec_name.train.seed, step: self.steps, offset: 0 };
                let loss = Self::train_step_in(&self.params, &mut self.ws, self.max_batch, &mut self.grads, &mut self.stats, key, #(#fnames,)* #(#lnames,)*)?;
                self.steps += 1;
                #rt::model::update_state(#state_name, &mut self.state, &self.stats);
                ::core::result::Result::Ok(loss)
            },
            trait_step_in: quote! {
                // No statistics and the step key of step 0: `train_step_at`
                // is the full training step.
                #ty::train_step_in(&self.params, ws, max_batch, grads, &mut [], #rt::model::StepKey::default(), #(#fnames,)* #(#lnames,)*)
            },
            trait_methods: quote! {
                fn state_spec(&self) -> &'static [#rt::model::StateSpec] {
                    #state_name
                }
                fn state(&self) -> &[f32] {
                    &self.state
                }
                fn state_mut(&mut self) -> &mut [f32] {
                    &mut self.state
                }
                fn train_step_at(&self, ws: &mut [f32], max_batch: usize, grads: &mut [f32], stats: &mut [f32], batch: &#rt::Batch<'_>, key: #rt::model::StepKey) -> ::core::result::Result<f32, #rt::StepError> {
                    let &[#(#fnames),*] = batch.inputs else {
                        return ::core::result::Result::Err(#rt::StepError::Arity { what: "input", expected: #n_features, found: batch.inputs.len() });
                    };
                    let &[#(#lnames),*] = batch.labels else {
                        return ::core::result::Result::Err(#rt::StepError::Arity { what: "label", expected: #n_labels, found: batch.labels.len() });
                    };
                    #ty::train_step_in(&self.params, ws, max_batch, grads, stats, key, #(#fnames,)* #(#lnames,)*)
                }
            },
        }
    }
}
