//! `input_gradient`, generated with `Options::explain`: the gradient of the
//! loss's prediction with respect to the float inputs, seeded by a
//! cotangent per sample (a one-hot row picks one class), from the
//! explanation graph (`autodiff::input_gradient_graph`). It runs on the
//! same workspace as the other entry points (the workspace is sized for
//! the largest of them), reads the parameters and never writes them, and
//! allocates nothing after the first call.

use super::emit::Emit;
use super::fuse::Fusion;
use super::kernels::{calls, kernels, mentions, prelude};
use super::layout::Layout;
use super::network::read;
use super::target::Target;
use super::{ancestors, usize_lit, var, Options};
use crate::diagnostic::{CompileError, SourceFile};
use crate::graph::NodeId;
use crate::ir::{OptLevel, TrainingGraph};
use proc_macro2::{Ident, TokenStream};
use quote::quote;

/// What `input_gradient` adds to a network's generated code.
pub(super) struct Explain {
    /// The inherent method `input_gradient` and its companions.
    pub(super) methods: TokenStream,
    /// `impl Model`'s `input_gradient` and `gradient_inputs`.
    pub(super) trait_methods: TokenStream,
    /// The kernels it calls (`x…`).
    pub(super) kernels: TokenStream,
    /// Its workspace: fixed and per-sample floats.
    pub(super) ws_size: (usize, usize),
}

/// The names of an explanation's entry point: the struct, its spec static,
/// and the inputs `predict` reads (which `input_gradient` takes too).
pub(super) struct Names<'a> {
    pub(super) ty: &'a Ident,
    pub(super) spec: &'a Ident,
    pub(super) predict_inputs: &'a [Ident],
}

/// Generates `input_gradient` from the optimised explanation graph `xtg`.
pub(super) fn explain(
    source: &SourceFile,
    xtg: &TrainingGraph,
    names: &Names<'_>,
    rt: &TokenStream,
    target: &dyn Target,
    opts: &Options,
    emit: &mut Emit,
) -> Result<Explain, CompileError> {
    let Names {
        ty,
        spec: spec_name,
        predict_inputs: pnames,
    } = *names;
    let scores = xtg.outputs[0].1;
    let grads: Vec<NodeId> = xtg.inputs.iter().map(|i| i.2).collect();
    let mut targets = grads.clone();
    targets.push(scores);
    let schedule = ancestors(xtg, &targets);
    let fusion = if opts.opt_level >= OptLevel::O2 {
        Fusion::new(xtg, &targets)
    } else {
        Fusion::default()
    };
    let planned = opts.opt_level >= OptLevel::O2;
    let (layout, _) = Layout::new(xtg, &schedule, &targets, planned, &fusion, false)?;
    let mut run = emit.members();
    let names = kernels(
        source,
        xtg,
        rt,
        target,
        &[&schedule],
        &fusion,
        "x",
        &mut run,
    )?;
    let kernel_items = run.finish();
    let mut run = emit.statements();
    calls(
        source,
        xtg,
        &layout,
        &schedule,
        rt,
        &fusion,
        ("x", &names),
        &mut run,
    )?;
    let call_list = run.finish();
    let per_sample = xtg.graph.ty(scores).shape.fixed_numel().unwrap_or(0);
    // `b` alone for one score a sample: `1usize * b` is a clippy warning
    // in the user's crate.
    let rows = if per_sample == 1 {
        quote!(b)
    } else {
        let k = usize_lit(per_sample);
        quote!(#k * b)
    };
    let dnames: Vec<Ident> = xtg
        .inputs
        .iter()
        .map(|(n, _, _)| var(&format!("d_{n}")))
        .collect();
    let gnames: Vec<String> = xtg.inputs.iter().map(|(n, _, _)| n.clone()).collect();
    let copies: TokenStream = xtg
        .inputs
        .iter()
        .zip(&dnames)
        .map(|((name, _, g), d)| {
            let src = read(&layout, xtg, *g);
            let what = format!("d_{name}");
            let comment = format!(" d scores / d {name}, node {}", g.index());
            quote! {
                #[doc = #comment]
                let src = &#src;
                if #d.len() != src.len() {
                    return Err(#rt::StepError::Length {
                        name: ::std::borrow::Cow::Borrowed(#what),
                        expected: src.len(),
                        found: #d.len(),
                    });
                }
                #d.copy_from_slice(src);
            }
        })
        .collect();
    // A token input attributed through its embeddings: the graph reads the
    // gathered vectors `e_<input>`, which the caller passes (see
    // `embedded_inputs`).
    let enames: Vec<Ident> = xtg
        .embedded
        .iter()
        .map(|(n, _)| var(&format!("e_{n}")))
        .collect();
    let echecks: TokenStream = xtg
        .embedded
        .iter()
        .zip(&enames)
        .map(|((name, _), e)| {
            let node = xtg
                .inputs
                .iter()
                .find(|i| i.0 == *name)
                .map_or(scores, |i| i.1);
            let per = usize_lit(xtg.graph.ty(node).shape.numel(1));
            let what = format!("e_{name}");
            quote! {
                if #e.len() != #per * b {
                    return Err(#rt::StepError::Length {
                        name: ::std::borrow::Cow::Borrowed(#what),
                        expected: #per * b,
                        found: #e.len(),
                    });
                }
            }
        })
        .collect();
    let score_src = read(&layout, xtg, scores);
    let mut body = quote! {
        #echecks
        if cotangent.len() != #rows {
            return Err(#rt::StepError::Length {
                name: ::std::borrow::Cow::Borrowed("cotangent"),
                expected: #rows,
                found: cotangent.len(),
            });
        }
        #call_list
        #copies
        if !scores.is_empty() {
            let src = &#score_src;
            if scores.len() != src.len() {
                return Err(#rt::StepError::Length {
                    name: ::std::borrow::Cow::Borrowed("scores"),
                    expected: src.len(),
                    found: scores.len(),
                });
            }
            scores.copy_from_slice(src);
        }
        Ok(b)
    };
    // Inputs `predict` reads that the prediction does not (read only by
    // another output) are taken and ignored.
    let unused: Vec<&Ident> = pnames
        .iter()
        .filter(|n| !mentions(&body, &n.to_string()))
        .collect();
    if mentions(&body, "ws") {
        body = quote!(let ws = &mut self.ws[..]; #body);
    }
    let check =
        quote!(#rt::model::check_batch(&#spec_name, &[#(#pnames),*], None, self.max_batch)?);
    let body = prelude(check, quote!(#(let _ = #unused;)* #body));
    let pparams: Vec<TokenStream> = pnames
        .iter()
        .chain(&enames)
        .map(|n| quote!(#n: &[f32]))
        .collect();
    let dparams: Vec<TokenStream> = dnames.iter().map(|n| quote!(#n: &mut [f32])).collect();
    let all_inputs: Vec<&Ident> = pnames.iter().chain(&enames).collect();
    let n_predict = all_inputs.len();
    let n_grads = dnames.len();
    let doc = format!(
        " The gradient of the loss's prediction (`scores`, {per_sample} per sample) with \
         respect to the float inputs ({}), seeded per sample by `cotangent` ({per_sample} \
         values a sample: a one-hot row asks for one class's gradient): writes \
         `cotangentᵀ · ∂scores/∂input` into each `d_…` slice and, unless `scores` is empty, \
         the prediction into `scores`; returns the batch size. Inference mode; the \
         parameters are read, never written. Generated with `explain`.",
        gnames.join(", ")
    );
    let doc = if xtg.embedded.is_empty() {
        doc
    } else {
        let names: Vec<String> = xtg
            .embedded
            .iter()
            .map(|e| format!("`e_{}`", e.0))
            .collect();
        format!(
            "{doc} The token inputs' ids are not differentiated: the gathered embedding \
             vectors ({}, `batch × positions × width` values, see `embedded_inputs`) are \
             given instead and `d_…` is the gradient with respect to them.",
            names.join(", ")
        )
    };
    let methods = quote! {
        #[doc = #doc]
        #[allow(clippy::too_many_arguments)]
        pub fn input_gradient(&mut self, #(#pparams,)* cotangent: &[f32], #(#dparams,)* scores: &mut [f32]) -> ::core::result::Result<usize, #rt::StepError> {
            #body
        }
    };
    // Only models with embedded inputs override the trait's default.
    let embedded_method = if xtg.embedded.is_empty() {
        TokenStream::new()
    } else {
        let pairs = xtg.embedded.iter().map(|(i, t)| quote!((#i, #t)));
        quote! {
            fn embedded_inputs(&self) -> &'static [(&'static str, &'static str)] {
                &[#(#pairs),*]
            }
        }
    };
    let trait_methods = quote! {
        fn gradient_inputs(&self) -> &'static [&'static str] {
            &[#(#gnames),*]
        }
        fn input_gradient(&mut self, inputs: &[&[f32]], cotangent: &[f32], grads: &mut [&mut [f32]], scores: &mut [f32]) -> ::core::result::Result<usize, #rt::StepError> {
            let &[#(#all_inputs),*] = inputs else {
                return Err(#rt::StepError::Arity { what: "input", expected: #n_predict, found: inputs.len() });
            };
            let [#(#dnames),*] = grads else {
                return Err(#rt::StepError::Arity { what: "input gradient", expected: #n_grads, found: grads.len() });
            };
            #ty::input_gradient(self, #(#pnames,)* #(#enames,)* cotangent, #(#dnames,)* scores)
        }
        #embedded_method
    };
    Ok(Explain {
        methods,
        trait_methods,
        kernels: kernel_items,
        ws_size: layout.ws_size(),
    })
}
