//! The macro's one code path: render the tokens to text, then the
//! compiler's driver (`check_source` and `driver::generate_tokens`),
//! exactly as `nnc compile` and build scripts run it.

use crate::render::{render, Rendered};
use crate::{error, fallback};
use nnc_compiler::codegen::Options;
use nnc_compiler::driver::generate_tokens;
use nnc_compiler::{check_source, CompileError, Module, SourceFile};
use proc_macro2::{Group, Span, TokenStream, TokenTree};

/// Expands `network! { .. }`: the generated items, or the errors on their
/// tokens followed by stand-ins for the networks (see [`fallback`]).
/// `source_name` overrides the name generated code cites as its source
/// (by default the Rust file of the macro call).
pub fn expand(input: TokenStream, source_name: Option<&str>) -> TokenStream {
    let (explain, input) = strip_explain(input);
    let rendered = render(input.clone());
    let opts = Options {
        explain,
        ..Options::default()
    };
    let result = check(&rendered, source_name)
        .and_then(|(source, module)| generate_tokens(&source, &module, &opts));
    match result {
        Ok(items) => match rendered.first_span() {
            Some(at) => {
                name_at_definitions(locate(items, Span::call_site().located_at(at)), &input)
            }
            None => items,
        },
        Err(e) => {
            let mut out = error::compile_errors(&rendered, &e.diagnostics);
            let runtime: TokenStream = opts.runtime.parse().unwrap_or_default();
            out.extend(fallback::stubs(&input, &runtime));
            out
        }
    }
}

/// A leading `#![explain]` asks for `input_gradient` (codegen's
/// `Options::explain`); it is removed before the networks are read.
fn strip_explain(input: TokenStream) -> (bool, TokenStream) {
    let tokens: Vec<TokenTree> = input.clone().into_iter().collect();
    let is_explain = match tokens.as_slice() {
        [TokenTree::Punct(hash), TokenTree::Punct(bang), TokenTree::Group(g), ..] => {
            hash.as_char() == '#'
                && bang.as_char() == '!'
                && g.delimiter() == proc_macro2::Delimiter::Bracket
                && g.stream().to_string() == "explain"
        }
        _ => false,
    };
    if is_explain {
        (true, tokens.into_iter().skip(3).collect())
    } else {
        (false, input)
    }
}

/// Gives every generated token the span `at`. Generated code resolves names
/// at the call site (so `MnistMlp` is the caller's) but sits on one token of
/// the input (the first): with every token spanning the whole multi-line
/// macro call instead, clippy's formatting lints, which compare the text
/// between two spans, misread generated expressions (`&[c * x]` as a
/// "possibly missing comma").
fn locate(items: TokenStream, at: Span) -> TokenStream {
    items
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(g) = &tt {
                let mut group = Group::new(g.delimiter(), locate(g.stream(), at));
                group.set_span(at);
                tt = TokenTree::Group(group);
            } else {
                tt.set_span(at);
            }
            tt
        })
        .collect()
}

/// Puts the names a network defines at the module's top level (its
/// struct, `NAME_SPEC` and `NAME_STATE`) on the network's name token.
/// Two `network!` calls in one module whose names collide after case
/// conversion (`Net` and `NET`, `my_net` and `MyNet`: both `NET_SPEC`, or
/// `MY_NET_SPEC`) cannot see each other; with these spans rustc's "defined
/// multiple times" error points at the second network's declaration
/// (`network NET`, where rustc's item span starts) and notes the first's,
/// instead of at the first token of each call.
fn name_at_definitions(items: TokenStream, input: &TokenStream) -> TokenStream {
    let tokens: Vec<TokenTree> = input.clone().into_iter().collect();
    let mut names: Vec<(String, Span)> = Vec::new();
    for pair in tokens.windows(2) {
        if let [TokenTree::Ident(kw), TokenTree::Ident(name)] = pair {
            if kw == "network" {
                let (name, span) = (name.to_string(), name.span());
                let key = fallback::screaming(&name);
                names.push((format!("{key}_SPEC"), span));
                names.push((format!("{key}_STATE"), span));
                names.push((name, span));
            }
        }
    }
    items
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Ident(id) = &mut tt {
                if let Some((_, span)) = names.iter().find(|(n, _)| id == n) {
                    id.set_span(id.span().located_at(*span));
                }
            }
            tt
        })
        .collect()
}

/// The rendered input as a named source, checked.
pub fn check(
    rendered: &Rendered,
    source_name: Option<&str>,
) -> Result<(SourceFile, Module), CompileError> {
    let name = match source_name {
        Some(name) => name.to_string(),
        // The text has the layout of the file, so `file:line:col` in
        // generated code points into it.
        None if rendered.located() => Span::call_site().file(),
        None => "network!".to_string(),
    };
    let source = SourceFile::new(name, rendered.text.as_str());
    let module = check_source(&source)?;
    Ok((source, module))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Relative to the package root, the working directory of tests, as
    /// the CLI would be given it.
    const MNIST: &str = "../examples/models/mnist_mlp.nn";

    /// The macro's expansion of the MNIST classifier is the code `nnc
    /// compile` emits for `examples/models/mnist_mlp.nn`: the same token
    /// stream as `generate_tokens` on the file, and — formatted by the
    /// same `driver::generate` — the same text, byte for byte, including
    /// every `(file:line:col)` note (the rendered text keeps the file's
    /// layout) and the header (the test names the source as the CLI does).
    #[test]
    fn mnist_expansion_is_what_nnc_compile_emits() {
        let text = std::fs::read_to_string(MNIST).unwrap();
        let input: TokenStream = text.parse().unwrap();

        let expanded = expand(input.clone(), Some(MNIST));
        let file = SourceFile::new(MNIST, text.as_str());
        let module = check_source(&file).unwrap();
        let direct = generate_tokens(&file, &module, &Options::default()).unwrap();
        assert_eq!(expanded.to_string(), direct.to_string());

        let rendered = render(input);
        let (source, module) = check(&rendered, Some(MNIST)).unwrap();
        let via_macro = nnc_compiler::driver::generate(&source, &module, &Options::default());
        let cli =
            nnc_compiler::build::compile_to_string(Path::new(MNIST), &Options::default()).unwrap();
        assert_eq!(via_macro.unwrap(), cli);
    }

    /// `#![explain]` first asks for `input_gradient`: the expansion is
    /// `generate_tokens` with `Options::explain`.
    #[test]
    fn explain_attribute_generates_the_input_gradient() {
        let text = std::fs::read_to_string(MNIST).unwrap();
        let input: TokenStream = format!("#![explain] {text}").parse().unwrap();
        let expanded = expand(input, Some(MNIST)).to_string();
        assert!(expanded.contains("fn input_gradient"));
        let plain = expand(text.parse().unwrap(), Some(MNIST)).to_string();
        assert!(!plain.contains("fn input_gradient"));
    }

    /// Every example and test model, and every complete example of the
    /// language reference.
    fn corpus() -> Vec<(String, String)> {
        let mut out = Vec::new();
        for dir in ["../examples/models", "../compiler/tests/models"] {
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "nn"))
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap();
                out.push((f.display().to_string(), text));
            }
        }
        let docs = std::fs::read_to_string("../docs/language.md").unwrap();
        for (i, block) in docs.split("```nn\n").skip(1).enumerate() {
            let body = block.split("```").next().unwrap();
            out.push((format!("language.md example {i}"), body.to_string()));
        }
        assert!(out.len() >= 6, "{} sources", out.len());
        out
    }

    /// What checking a source gives, for comparing the two paths: the
    /// generated tokens, or each error's kind, and for all but syntax
    /// errors its message and `line:col` range (a syntax error next to a
    /// `//` comment may name or skip the comment, which tokens do not have).
    fn outcome(source: &SourceFile) -> Result<String, Vec<String>> {
        let module = check_source(source);
        let result = module.and_then(|m| generate_tokens(source, &m, &Options::default()));
        result.map(|t| t.to_string()).map_err(|e| {
            e.diagnostics
                .iter()
                .map(|d| match d.kind {
                    nnc_compiler::ErrorKind::Syntax => "syntax".to_string(),
                    kind => format!(
                        "{kind:?} {:?}-{:?} {}",
                        source.line_col(d.span.start),
                        source.line_col(d.span.end),
                        d.message
                    ),
                })
                .collect()
        })
    }

    /// The macro reads the language as `.nn` files are read: for every
    /// model, and for each of its variants with one line deleted (most of
    /// which are errors: unknown names, missing losses, shape mismatches,
    /// syntax), the rendered tokens give the same code, or the same errors
    /// at the same `line:col`.
    #[test]
    fn every_model_and_every_line_deletion_reads_the_same_through_tokens() {
        let mut compared = 0;
        let mut errors = 0;
        for (name, text) in corpus() {
            let lines: Vec<&str> = text.lines().collect();
            let variants = std::iter::once(text.clone()).chain((0..lines.len()).map(|skip| {
                let mut v: Vec<&str> = lines.clone();
                v[skip] = "";
                v.join("\n")
            }));
            for variant in variants {
                // Unbalanced brackets do not tokenize: rustc reports those.
                let Ok(tokens) = variant.parse::<TokenStream>() else {
                    continue;
                };
                let file = SourceFile::new(name.as_str(), variant.as_str());
                let rendered = render(tokens);
                let via_tokens = SourceFile::new(name.as_str(), rendered.text.as_str());
                let want = outcome(&file);
                errors += usize::from(want.is_err());
                assert_eq!(outcome(&via_tokens), want, "{name}:\n{variant}");
                compared += 1;
            }
        }
        assert!(
            compared > 90 && errors > 40,
            "{compared} compared, {errors} errors"
        );
    }

    #[test]
    fn spec_names_agree_with_the_compiler() {
        for name in ["MnistMlp", "HTTPServer", "Net2Layer", "tiny"] {
            let text = format!(
                "network {name} {{ input x: f32[batch, 2]; param w: f32[2, 1]; loss mean(x @ w); }}"
            );
            let out = expand(text.parse().unwrap(), Some("t.nn")).to_string();
            let spec = format!("static {}_SPEC :", fallback::screaming(name));
            assert!(out.contains(&spec), "{spec} not in {out}");
        }
    }

    #[test]
    fn errors_come_with_a_stand_in() {
        let text = "network Net { input x: f32[batch, 2]; y = x @ ; }";
        let out = expand(text.parse().unwrap(), None).to_string();
        assert!(out.starts_with(":: core :: compile_error !"), "{out}");
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(out.contains("pub struct Net"), "{out}");
        assert!(out.contains("pub static NET_SPEC"), "{out}");
    }

    /// How deeply groups nest in a token stream (rustc's parser recurses on it).
    fn depth(ts: &TokenStream) -> usize {
        ts.clone()
            .into_iter()
            .map(|t| match t {
                TokenTree::Group(g) => 1 + depth(&g.stream()),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    fn net(body: &str) -> TokenStream {
        format!(
            "network N {{ input x: f32[batch, 4]; label y: class[batch] of 4; param w: f32[4]; {body} loss cross_entropy(h * w, y); }}"
        )
        .parse()
        .unwrap()
    }

    /// 20,000 minus signs are an error on the tokens, not a crash of
    /// rustc: the output is the error and the stand-in.
    #[test]
    fn twenty_thousand_minus_signs_are_a_compile_error() {
        let out = expand(net(&format!("h = {}x;", "- ".repeat(20_000))), None);
        let text = out.to_string();
        assert!(text.contains("nested more than 128 deep"), "{text:.400}");
        assert!(depth(&out) < 16, "{}", depth(&out));
    }

    /// A chain of 1,000 `relu` bindings expands to code whose groups nest
    /// no deeper than the fusion limit allows, so rustc parses it.
    #[test]
    fn a_thousand_relus_expand_to_shallow_code() {
        let mut body = String::from("h0 = x;");
        for i in 1..=1_000 {
            body.push_str(&format!(" h{i} = relu(h{});", i - 1));
        }
        body.push_str(" h = h1000;");
        let out = expand(net(&body), None);
        let text = out.to_string();
        assert!(!text.contains("compile_error"), "{text:.400}");
        assert!(depth(&out) < 160, "{}", depth(&out));
    }
}
