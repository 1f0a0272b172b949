//! Diagnostics → `compile_error!` on the tokens they concern.
//!
//! A diagnostic's byte range becomes the spans of the first and last token
//! it covers ([`Rendered::spans`]). `Span::join` is unavailable on stable, so
//! the error is emitted as `::core::compile_error! { "..." }` with the path
//! spanned at the first token and the braces at the last: rustc reports a
//! macro call from the start of its path to the end of its arguments, which
//! underlines the whole range (syn's `Error::new_spanned` does the same).

use crate::render::Rendered;
use nnc_compiler::{Diagnostic, SourceFile};
use proc_macro2::{Delimiter, Group, Literal, Span, TokenStream, TokenTree};
use quote::quote_spanned;

/// One `compile_error!` per diagnostic, in source order.
pub fn compile_errors(rendered: &Rendered, diagnostics: &[Diagnostic]) -> TokenStream {
    let source = SourceFile::new("", rendered.text.as_str());
    let lines = rendered.located();
    let mut out = TokenStream::new();
    for d in diagnostics {
        // A diagnostic at 0..0 has no location unless a token starts there.
        let located = d.span != Default::default() || rendered.token_at(0);
        let (start, end) = match rendered.spans(d.span) {
            Some(spans) if located => spans,
            _ => (Span::call_site(), Span::call_site()),
        };
        let insertion = d.span.start == d.span.end && rendered.token_ends_at(d.span.start);
        out.extend(compile_error(
            &message(&source, d, lines, insertion),
            start,
            end,
        ));
    }
    out
}

/// `::core::compile_error! { "message" }` underlining `start` to `end`.
pub fn compile_error(message: &str, start: Span, end: Span) -> TokenStream {
    let mut lit = Literal::string(message);
    lit.set_span(end);
    let mut group = Group::new(Delimiter::Brace, TokenTree::Literal(lit).into());
    group.set_span(end);
    let mut out = quote_spanned!(start=> ::core::compile_error!);
    out.extend([TokenTree::Group(group)]);
    out
}

/// The headline (what was expected and found), then the text under the
/// primary span, each note with the source it is about, and the hint, in
/// rustc's `= note:` / `= help:` form. An insertion point (a missing `;`)
/// is shown on the token before it, and says so.
fn message(source: &SourceFile, d: &Diagnostic, lines: bool, insertion: bool) -> String {
    let mut m = d.message.clone();
    let label = match (insertion, d.label.is_empty()) {
        (true, true) => "after this".to_string(),
        (true, false) => format!("{} after this", d.label),
        (false, _) if d.message.contains(&d.label) => String::new(),
        (false, _) => d.label.clone(),
    };
    if !label.is_empty() {
        m.push_str(&format!("\n= note: {label}"));
    }
    for (span, text) in &d.notes {
        m.push_str(&format!("\n= note: {}", about(source, *span, text, lines)));
    }
    if let Some(help) = &d.help {
        m.push_str(&format!("\n= help: {help}"));
    }
    m
}

/// "`image` (line 5): this is f32[batch, 784]"; the line only when the text
/// has the layout of the file.
fn about(source: &SourceFile, span: nnc_compiler::Span, text: &str, lines: bool) -> String {
    let snippet = source
        .text
        .get(span.start..span.end)
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let (line, _) = source.line_col(span.start);
    let snippet = if snippet.chars().count() > 40 {
        format!("{}…", snippet.chars().take(39).collect::<String>())
    } else {
        snippet
    };
    match (snippet.is_empty(), lines) {
        (true, _) => text.to_string(),
        (false, true) => format!("`{snippet}` (line {line}): {text}"),
        (false, false) => format!("`{snippet}`: {text}"),
    }
}
