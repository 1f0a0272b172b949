//! The stand-in emitted next to the errors when a model does not compile.
//!
//! Code around the macro uses what it generates: `Foo::new(128)`,
//! `model.train_step(&images, &labels)?`, `FOO_SPEC.train.seed`, `fit(&mut
//! model, ..)` through `impl Model`. Without those items every use would be
//! a second error ("cannot find type `Foo`"), so for each `network Foo`
//! found in the input the stand-in declares the same public surface with
//! the same signatures — `FOO_SPEC`, `struct Foo`, `new`, `train_step`,
//! `loss`, `predict` (one slice per input, label and output, in order) and
//! `impl Model` — with bodies that panic (they never run: the crate does not
//! compile). The signatures come from a scan of the tokens, not from the
//! parser, so they are there even when the model has a syntax error.

pub use nnc_compiler::codegen::screaming;
use proc_macro2::{Delimiter, Ident, TokenStream, TokenTree};
use quote::{format_ident, quote};

/// What the scan finds of one network: its name and the names of its
/// inputs, labels and outputs (only their number and kind matter).
#[derive(Debug, Default, PartialEq)]
struct Surface {
    name: Option<Ident>,
    inputs: usize,
    labels: usize,
    outputs: usize,
}

/// The stand-ins of every `network NAME` of the input.
pub fn stubs(input: &TokenStream, runtime: &TokenStream) -> TokenStream {
    scan(input).iter().map(|s| stub(s, runtime)).collect()
}

fn scan(input: &TokenStream) -> Vec<Surface> {
    let tokens: Vec<TokenTree> = input.clone().into_iter().collect();
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let (TokenTree::Ident(kw), Some(TokenTree::Ident(name))) = (t, tokens.get(i + 1)) else {
            continue;
        };
        if kw != "network" || !is_rust_name(name) {
            continue;
        }
        let mut surface = Surface {
            name: Some(name.clone()),
            ..Surface::default()
        };
        if let Some(TokenTree::Group(body)) = tokens.get(i + 2) {
            if body.delimiter() == Delimiter::Brace {
                // Statements start at the body's start and after each `;`.
                let mut at_start = true;
                for t in body.stream() {
                    if at_start {
                        if let TokenTree::Ident(word) = &t {
                            match word.to_string().as_str() {
                                "input" => surface.inputs += 1,
                                "label" => surface.labels += 1,
                                "output" => surface.outputs += 1,
                                _ => {}
                            }
                        }
                    }
                    at_start = matches!(&t, TokenTree::Punct(p) if p.as_char() == ';');
                }
            }
        }
        out.push(surface);
    }
    out
}

/// A name the stand-in can declare without a Rust error of its own.
fn is_rust_name(name: &Ident) -> bool {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move",
        "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait",
        "true", "type", "unsafe", "use", "where", "while", "abstract", "become", "box", "do",
        "final", "gen", "macro", "override", "priv", "try", "typeof", "unsized", "virtual",
        "yield", "_",
    ];
    !KEYWORDS.contains(&name.to_string().as_str())
}

fn stub(s: &Surface, rt: &TokenStream) -> TokenStream {
    let Some(ty) = &s.name else {
        return TokenStream::new();
    };
    let spec = format_ident!("{}_SPEC", screaming(&ty.to_string()));
    let name = ty.to_string();
    let inputs = vec![quote!(_: &[f32]); s.inputs];
    let labels = vec![quote!(_: &[u32]); s.labels];
    let outputs = vec![quote!(_: &mut [f32]); s.outputs];
    let why = format!("`{name}` did not compile (nnc reported why)");
    let never = quote!(::core::panic!(#why));
    quote! {
        /// Stand-in for the spec of a network that did not compile.
        #[allow(dead_code)]
        pub static #spec: #rt::ModelSpec = #rt::ModelSpec {
            name: #name,
            source: "",
            hash: 0,
            params: &[],
            inits: &[],
            param_count: 0,
            inputs: &[],
            outputs: &[],
            train: #rt::TrainSpec {
                optimizer: #rt::optim::OptimizerConfig::Sgd(#rt::optim::SgdConfig {
                    momentum: 0.0,
                    dampening: 0.0,
                    nesterov: false,
                    weight_decay: 0.0,
                }),
                lr: 0.0,
                batch: #rt::model::BatchSpec::Full,
                epochs: 0,
                schedule: #rt::model::ScheduleSpec::Constant,
                warmup: 0,
                weight_decay: 0.0,
                seed: 0,
            },
        };

        /// Stand-in for a network that did not compile.
        #[allow(dead_code)]
        pub struct #ty {
            _not_compiled: (),
        }

        #[allow(dead_code, clippy::all)]
        impl #ty {
            pub fn new(_: usize) -> Self {
                #never
            }
            pub fn train_step(&mut self, #(#inputs,)* #(#labels),*) -> ::core::result::Result<f32, #rt::StepError> {
                #never
            }
            pub fn workspace_len(_: usize) -> usize {
                #never
            }
            pub fn loss(&mut self, #(#inputs,)* #(#labels),*) -> ::core::result::Result<f32, #rt::StepError> {
                #never
            }
            pub fn predict(&mut self, #(#inputs,)* #(#outputs),*) -> ::core::result::Result<usize, #rt::StepError> {
                #never
            }
        }

        #[allow(clippy::all)]
        impl #rt::Model for #ty {
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
            fn train_step(&mut self, _: &#rt::Batch<'_>) -> ::core::result::Result<f32, #rt::StepError> {
                #never
            }
            fn workspace_len(&self, _: usize) -> usize {
                #never
            }
            fn train_step_in(&self, _: &mut [f32], _: usize, _: &mut [f32], _: &#rt::Batch<'_>) -> ::core::result::Result<f32, #rt::StepError> {
                #never
            }
            fn loss(&mut self, _: &#rt::Batch<'_>) -> ::core::result::Result<f32, #rt::StepError> {
                #never
            }
            fn predict(&mut self, _: &[&[f32]], _: &mut [&mut [f32]]) -> ::core::result::Result<usize, #rt::StepError> {
                #never
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_network_and_counts_its_inputs_labels_and_outputs() {
        let input: TokenStream =
            "network A { input x: f32[4]; input y: f32[4]; label c: class[batch] of 3;
                 h = x +; output p = h; output h; loss q; }
             train A { batch: 1; }
             network B { input = ; }
             network fn {}"
                .parse()
                .unwrap();
        let found = scan(&input);
        let counts: Vec<_> = found
            .iter()
            .map(|s| {
                let name = s.name.as_ref().unwrap().to_string();
                (name, s.inputs, s.labels, s.outputs)
            })
            .collect();
        assert_eq!(counts, [("A".into(), 2, 1, 2), ("B".into(), 1, 0, 0)]);
    }

    #[test]
    fn screaming_case_matches_the_compiler() {
        for (name, want) in [
            ("MnistMlp", "MNIST_MLP"),
            ("HTTPServer", "HTTP_SERVER"),
            ("net", "NET"),
            ("Net2Layer", "NET2_LAYER"),
        ] {
            assert_eq!(screaming(name), want);
        }
    }
}
