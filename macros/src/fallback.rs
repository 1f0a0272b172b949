//! The stand-in emitted next to the errors when a model does not compile.
//!
//! Code around the macro uses what it generates: `Foo::new(128)`,
//! `model.train_step(&images, &labels)?`, `FOO_SPEC.train.seed`, `fit(&mut
//! model, ..)` through `impl Model`. Without those items every use would be
//! a second error ("cannot find type `Foo`"), so for each `network Foo`
//! found in the input the stand-in declares the same public surface with
//! the same signatures — the surface code generation writes
//! (`nnc_compiler::codegen::surface`), with one slice per input, label and
//! output, in order — with bodies that panic (they never run: the crate
//! does not compile). The signatures come from a scan of the tokens, not
//! from the parser, so they are there even when the model has a syntax
//! error.

use nnc_compiler::codegen;
pub use nnc_compiler::codegen::screaming;
use proc_macro2::{Delimiter, Ident, TokenStream, TokenTree};
use quote::format_ident;

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
    // The scan knows how many inputs, labels and outputs there are, not
    // their names: the stand-in's parameters get placeholder names.
    let names = |prefix: &str, n: usize| -> Vec<Ident> {
        (0..n).map(|i| format_ident!("{}{}", prefix, i)).collect()
    };
    let surface = codegen::surface::Surface {
        ty: ty.clone(),
        spec: format_ident!("{}_SPEC", screaming(&ty.to_string())),
        features: names("input_", s.inputs),
        labels: names("label_", s.labels),
        predict_inputs: names("input_", s.inputs),
        outputs: names("output_", s.outputs),
        modal: false,
    };
    let why = format!("`{ty}` did not compile (nnc reported why)");
    codegen::surface::items(&surface, &codegen::surface::Bodies::Stub(why), rt)
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
