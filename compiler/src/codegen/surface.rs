//! The public surface of a generated network, written once: its struct,
//! constructors, entry points, `save`/`load` and `impl Model`. Code
//! generation fills the bodies ([`Bodies::Generated`]); the `network!`
//! macro's stand-in for a model that did not compile uses the same surface
//! with bodies that panic ([`Bodies::Stub`]), so code around the macro
//! type-checks against exactly what a successful expansion declares.

use proc_macro2::{Ident, TokenStream};
use quote::quote;

/// The names a network's surface is made of.
#[derive(Clone, Debug)]
pub struct Surface {
    /// The struct (`MnistMlp`).
    pub ty: Ident,
    /// Its spec static (`MNIST_MLP_SPEC`).
    pub spec: Ident,
    /// The feature-fed inputs (features and token ids), in declaration order.
    pub features: Vec<Ident>,
    /// The label inputs, in declaration order.
    pub labels: Vec<Ident>,
    /// The inputs `predict` and `predict_scores` read.
    pub predict_inputs: Vec<Ident>,
    /// The declared outputs.
    pub outputs: Vec<Ident>,
    /// Dropout or batch norm: state, statistics and a step key.
    pub modal: bool,
}

/// What a generated network's entry points do.
pub struct Generated {
    /// `static NAME_SPEC` (and `NAME_STATE` of a modal network).
    pub statics: TokenStream,
    /// Extra struct fields of a modal network (state, statistics, step).
    pub struct_fields: TokenStream,
    /// Their initial values in `new`.
    pub new_fields: TokenStream,
    /// The batch `Default` builds for: the `train` block's.
    pub default_batch: usize,
    /// `train_step`'s body.
    pub train_step: TokenStream,
    /// `train_step_in`'s body.
    pub train_step_in: TokenStream,
    /// `workspace_len`'s body.
    pub workspace_len: TokenStream,
    /// `loss_with_scores`'s body.
    pub loss_with_scores: TokenStream,
    /// `predict`'s body.
    pub predict: TokenStream,
    /// `predict_scores`'s body.
    pub predict_scores: TokenStream,
    /// `impl Model`'s `train_step_in` body (it names the slices).
    pub trait_step_in: TokenStream,
    /// `impl Model`'s methods of a modal network, and `input_gradient`'s.
    pub trait_methods: TokenStream,
    /// Inherent methods generated on request (`input_gradient` with
    /// `explain`).
    pub explain_methods: TokenStream,
    /// The kernels the entry points call.
    pub kernels: TokenStream,
}

/// The bodies of the surface.
pub enum Bodies {
    /// Generated code.
    Generated(Box<Generated>),
    /// A stand-in: every body panics with this message, and the spec is a
    /// placeholder.
    Stub(String),
}

/// The items of a network: statics, struct, inherent methods, `Default`,
/// `impl Model`, kernels. `rt` is the runtime path.
pub fn items(s: &Surface, bodies: &Bodies, rt: &TokenStream) -> TokenStream {
    let Surface {
        ty,
        spec: spec_name,
        ..
    } = s;
    let fnames = &s.features;
    let lnames = &s.labels;
    let pnames = &s.predict_inputs;
    let onames = &s.outputs;
    let fparams: Vec<TokenStream> = fnames.iter().map(|n| quote!(#n: &[f32])).collect();
    let lparams: Vec<TokenStream> = lnames.iter().map(|n| quote!(#n: &[u32])).collect();
    let pparams: Vec<TokenStream> = pnames.iter().map(|n| quote!(#n: &[f32])).collect();
    let oparams: Vec<TokenStream> = onames.iter().map(|n| quote!(#n: &mut [f32])).collect();
    let stats_params = s
        .modal
        .then(|| quote!(stats: &mut [f32], key: #rt::model::StepKey,));
    let (n_features, n_labels) = (fnames.len(), lnames.len());
    let (n_predict, n_outputs) = (pnames.len(), onames.len());
    let arity = |what: &str, list: &[Ident], n: usize, from: TokenStream| {
        quote! {
            let &[#(#list),*] = #from else {
                return ::core::result::Result::Err(#rt::StepError::Arity { what: #what, expected: #n, found: #from.len() });
            };
        }
    };
    let bind_batch = {
        let f = arity("input", fnames, n_features, quote!(batch.inputs));
        let l = arity("label", lnames, n_labels, quote!(batch.labels));
        quote!(#f #l)
    };
    let bind_predict = arity("input", pnames, n_predict, quote!(inputs));
    let (g, allow) = match bodies {
        Bodies::Generated(g) => (Some(g.as_ref()), quote!()),
        Bodies::Stub(_) => (
            None,
            quote!(#[allow(dead_code, unused_variables, clippy::all)]),
        ),
    };
    let never = match bodies {
        Bodies::Stub(why) => quote!(::core::panic!(#why)),
        Bodies::Generated(_) => quote!(),
    };
    let body = |f: fn(&Generated) -> &TokenStream| match g {
        Some(g) => f(g).clone(),
        None => never.clone(),
    };
    let statics = match g {
        Some(g) => g.statics.clone(),
        None => {
            let placeholder = nnc_spec::tokens::ToRust::to_rust(&stub_spec(ty), rt);
            quote! {
                /// Stand-in for the spec of a network that did not compile.
                #[allow(dead_code)]
                pub static #spec_name: #rt::ModelSpec = #placeholder;
            }
        }
    };
    let fields = g.map(|g| g.struct_fields.clone()).unwrap_or_default();
    let new_fields = g.map(|g| g.new_fields.clone()).unwrap_or_default();
    let new_body = match g {
        Some(_) => quote! {
            let mb = max_batch.max(1);
            let mut model = #ty {
                params: #rt::model::zeroed(#spec_name.param_count, "parameters")?,
                grads: ::std::vec::Vec::new(),
                ws: ::std::vec::Vec::new(),
                max_batch: mb,
                #new_fields
            };
            #rt::Model::init_params(&mut model, #spec_name.train.seed)
                .expect("nnc validated every initializer at compile time");
            // Sized now so that a batch too large for memory is an error
            // here rather than at the first step.
            if Self::workspace_len(mb) == usize::MAX {
                return ::core::result::Result::Err(#rt::StepError::Memory {
                    what: "workspace",
                    floats: usize::MAX,
                });
            }
            ::core::result::Result::Ok(model)
        },
        None => never.clone(),
    };
    let default_batch = g.map_or(1, |g| g.default_batch);
    let doc_struct = format!(
        " The `{ty}` network, compiled by nnc: parameters and gradients in flat buffers, one preallocated workspace."
    );
    let train_step = body(|g| &g.train_step);
    let train_step_in = body(|g| &g.train_step_in);
    let workspace_len = body(|g| &g.workspace_len);
    let loss_with_scores = body(|g| &g.loss_with_scores);
    let predict = body(|g| &g.predict);
    let predict_scores = body(|g| &g.predict_scores);
    let trait_step_in = body(|g| &g.trait_step_in);
    let trait_methods = g.map(|g| g.trait_methods.clone()).unwrap_or_default();
    let kernels = g.map(|g| g.kernels.clone()).unwrap_or_default();
    let explain_methods = g.map(|g| g.explain_methods.clone()).unwrap_or_default();
    let reserve = g.map(|_| {
        quote! {
            /// Allocates the workspace on first use (the gradient buffer
            /// too, in `train_step`): a model trained through
            /// `train_step_in`, whose callers own those buffers, never
            /// pays for them.
            fn reserve_workspace(&mut self) -> ::core::result::Result<(), #rt::StepError> {
                #rt::model::grow_zeroed(&mut self.ws, Self::workspace_len(self.max_batch), "workspace")
            }
        }
    });
    let trait_items = match g {
        Some(_) => quote! {
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
        },
        None => quote! {
            fn spec(&self) -> &'static #rt::ModelSpec {
                #never
            }
            fn max_batch(&self) -> usize {
                #never
            }
            fn params(&self) -> &[f32] {
                #never
            }
            fn params_mut(&mut self) -> &mut [f32] {
                #never
            }
            fn grads(&self) -> &[f32] {
                #never
            }
        },
    };
    let struct_body = match g {
        Some(_) => quote! {
            params: ::std::vec::Vec<f32>,
            grads: ::std::vec::Vec<f32>,
            ws: ::std::vec::Vec<f32>,
            max_batch: usize,
            #fields
        },
        None => quote!(_not_compiled: (),),
    };
    quote! {
        #statics

        #[doc = #doc_struct]
        // The network's own name, whatever its case (`network mlp`).
        #[allow(non_camel_case_types)]
        #allow
        pub struct #ty {
            #struct_body
        }

        #allow
        impl #ty {
            /// Builds the network for batches of up to `max_batch` samples
            /// in `loss`, `predict` and `train_step` (`fit` sizes its own
            /// buffers), parameters initialised from the `train` block's
            /// seed (the workspace is allocated on first use).
            ///
            /// # Panics
            ///
            /// When the parameters cannot be allocated or the workspace for
            /// `max_batch` samples overflows the address space; see
            /// [`Self::try_new`].
            pub fn new(max_batch: usize) -> Self {
                match Self::try_new(max_batch) {
                    ::core::result::Result::Ok(model) => model,
                    ::core::result::Result::Err(e) => ::core::panic!("{}", e),
                }
            }

            /// [`Self::new`], or an error when the parameters cannot be
            /// allocated or the workspace for `max_batch` samples would not
            /// fit in the address space (a batch size from the command line).
            pub fn try_new(max_batch: usize) -> ::core::result::Result<Self, #rt::StepError> {
                #new_body
            }

            /// Forward, loss and backward on one batch: writes the gradients
            /// and returns the mean loss (without regularisation penalties).
            pub fn train_step(&mut self, #(#fparams,)* #(#lparams,)*) -> ::core::result::Result<f32, #rt::StepError> {
                #train_step
            }

            /// [`Self::train_step`] on the caller's buffers: `params`, a
            /// workspace of at least `workspace_len(max_batch)` floats for
            /// batches of up to `max_batch` samples, and `grads`, which it
            /// overwrites. Nothing else is touched, so data-parallel workers
            /// run it at once, each on its own workspace and gradients.
            #[allow(clippy::too_many_arguments)]
            pub fn train_step_in(params: &[f32], ws: &mut [f32], max_batch: usize, grads: &mut [f32], #stats_params #(#fparams,)* #(#lparams,)*) -> ::core::result::Result<f32, #rt::StepError> {
                #train_step_in
            }

            #reserve

            /// Workspace floats for batches of up to `max_batch` samples.
            pub fn workspace_len(max_batch: usize) -> usize {
                #workspace_len
            }

            /// Forward and loss only (inference mode): the mean loss over the batch.
            pub fn loss(&mut self, #(#fnames: &[f32],)* #(#lnames: &[u32],)*) -> ::core::result::Result<f32, #rt::StepError> {
                self.loss_with_scores(#(#fnames,)* #(#lnames,)* &mut [])
            }

            /// [`Self::loss`], also copying the loss's prediction (the
            /// logits of a classifier, the prediction of a regression) into
            /// `scores` unless it is empty.
            pub fn loss_with_scores(&mut self, #(#fparams,)* #(#lparams,)* scores: &mut [f32]) -> ::core::result::Result<f32, #rt::StepError> {
                #loss_with_scores
            }

            /// Forward to the outputs, from the inputs they read; returns
            /// the batch size.
            pub fn predict(&mut self, #(#pparams,)* #(#oparams,)*) -> ::core::result::Result<usize, #rt::StepError> {
                #predict
            }

            /// The loss's prediction without labels (logits of a
            /// classifier): what `nnc predict` turns into classes.
            pub fn predict_scores(&mut self, #(#pparams,)* scores: &mut [f32]) -> ::core::result::Result<usize, #rt::StepError> {
                #predict_scores
            }

            /// Saves the parameters and state as plain safetensors under
            /// the language's names (atomically).
            #[allow(dead_code)]
            pub fn save(&self, path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<(), #rt::checkpoint::CheckpointError> {
                #rt::checkpoint::save_weights(self, path)
            }

            /// Loads parameters and state from a safetensors file by name,
            /// checking every shape (see `nnc_runtime::checkpoint::load_weights`
            /// for PyTorch's layout).
            #[allow(dead_code)]
            pub fn load(&mut self, path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<(), #rt::checkpoint::CheckpointError> {
                #rt::checkpoint::load_weights(self, path, &::core::default::Default::default()).map(|_| ())
            }

            #explain_methods
        }

        #allow
        impl ::core::default::Default for #ty {
            /// The network for the `train` block's batch size.
            fn default() -> Self {
                Self::new(#default_batch)
            }
        }

        #allow
        impl #rt::Model for #ty {
            #trait_items
            fn train_step(&mut self, batch: &#rt::Batch<'_>) -> ::core::result::Result<f32, #rt::StepError> {
                #bind_batch
                #ty::train_step(self, #(#fnames,)* #(#lnames,)*)
            }
            fn workspace_len(&self, max_batch: usize) -> usize {
                #ty::workspace_len(max_batch)
            }
            fn train_step_in(&self, ws: &mut [f32], max_batch: usize, grads: &mut [f32], batch: &#rt::Batch<'_>) -> ::core::result::Result<f32, #rt::StepError> {
                #bind_batch
                #trait_step_in
            }
            #trait_methods
            fn loss(&mut self, batch: &#rt::Batch<'_>) -> ::core::result::Result<f32, #rt::StepError> {
                #bind_batch
                #ty::loss(self, #(#fnames,)* #(#lnames,)*)
            }
            fn loss_with_scores(&mut self, batch: &#rt::Batch<'_>, scores: &mut [f32]) -> ::core::result::Result<f32, #rt::StepError> {
                #bind_batch
                #ty::loss_with_scores(self, #(#fnames,)* #(#lnames,)* scores)
            }
            fn predict_scores(&mut self, inputs: &[&[f32]], scores: &mut [f32]) -> ::core::result::Result<usize, #rt::StepError> {
                #bind_predict
                #ty::predict_scores(self, #(#pnames,)* scores)
            }
            fn predict(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> ::core::result::Result<usize, #rt::StepError> {
                #bind_predict
                let [#(#onames),*] = outputs else {
                    return ::core::result::Result::Err(#rt::StepError::Arity { what: "output", expected: #n_outputs, found: outputs.len() });
                };
                #ty::predict(self, #(#pnames,)* #(#onames,)*)
            }
        }

        // The kernels, scoped to the network: two networks in one module
        // never collide.
        impl #ty {
            #kernels
        }
    }
}

/// The placeholder spec of a stand-in: the network's name, nothing else.
fn stub_spec(ty: &Ident) -> nnc_spec::ModelSpec {
    use std::borrow::Cow;
    nnc_spec::ModelSpec {
        name: Cow::Owned(ty.to_string()),
        source: Cow::Borrowed(""),
        hash: 0,
        params: Cow::Borrowed(&[]),
        inits: Cow::Borrowed(&[]),
        param_count: 0,
        inputs: Cow::Borrowed(&[]),
        outputs: Cow::Borrowed(&[]),
        loss: nnc_spec::LossSpec {
            kind: nnc_spec::LossKind::Other,
            scores: 0,
        },
        train: nnc_spec::TrainSpec::default(),
    }
}
