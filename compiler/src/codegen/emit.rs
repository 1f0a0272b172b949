//! Where the bulk of a network's generated code goes as it is produced:
//! kept as tokens (the `network!` macro expands to tokens), or formatted to
//! text at once, piece by piece (`nnc compile`).
//!
//! A big model's kernels and kernel calls are nearly all of its code, and
//! as tokens they take about thirteen times the memory of their text
//! (issue 22: 1.6 GB for a 100k-node model). In text mode each kernel and
//! each call is formatted as soon as it is generated and its tokens
//! dropped; the run of them stands in the token stream as one placeholder
//! item or statement, `__nnc_text!(N, idents…)`, which [`super::format`]
//! replaces with text `N`. The placeholder lists the identifiers the text
//! mentions, so that the code around it, which binds only the names its
//! body uses (`kernels::mentions`), sees them as it would the tokens.

use super::format;
use super::template::Templates;
use crate::diagnostic::{CompileError, Diagnostic, ErrorKind};
use proc_macro2::{Ident, Literal, Span, TokenStream, TokenTree};
use quote::quote;
use std::collections::BTreeSet;

/// The macro name of a placeholder; nothing generated is called this.
pub(super) const PLACEHOLDER: &str = "__nnc_text";

/// Tokens or text: where the runs of kernels and calls of the networks
/// being generated go.
#[derive(Debug, Default)]
pub struct Emit {
    /// `None` in token mode; in text mode, the texts placeholders stand
    /// for, each taken once by the formatter.
    texts: Option<Vec<Option<String>>>,
    /// Text mode's statements formatted by shape (see `template.rs`).
    templates: Templates,
}

impl Emit {
    /// Token mode: everything stays tokens.
    pub fn tokens() -> Emit {
        Emit {
            texts: None,
            templates: Templates::default(),
        }
    }

    /// Text mode: runs are formatted as they are produced, for
    /// [`super::format_into`].
    pub fn text() -> Emit {
        Emit {
            texts: Some(Vec::new()),
            templates: Templates::default(),
        }
    }

    /// A run of statements of an associated function's body.
    pub(super) fn statements(&mut self) -> Run<'_> {
        self.run(Kind::Statement)
    }

    /// A run of associated items of an `impl` block.
    pub(super) fn members(&mut self) -> Run<'_> {
        self.run(Kind::Member)
    }

    fn run(&mut self, kind: Kind) -> Run<'_> {
        Run {
            emit: self,
            kind,
            tokens: TokenStream::new(),
            text: String::new(),
            idents: BTreeSet::new(),
        }
    }

    /// Whether runs are formatted as they are produced.
    pub(super) fn is_text(&self) -> bool {
        self.texts.is_some()
    }

    /// A top-level item already formatted (text mode only: in token mode
    /// the text is not wanted, and this returns nothing): the placeholder
    /// item that stands for it.
    pub(super) fn item(&mut self, text: String) -> TokenStream {
        let Some(texts) = &mut self.texts else {
            return TokenStream::new();
        };
        let n = Literal::usize_unsuffixed(texts.len());
        texts.push(Some(text));
        let name = Ident::new(PLACEHOLDER, Span::call_site());
        quote!(#name!(#n);)
    }

    /// Takes text `n` (once): what the placeholder `n` stands for.
    pub(super) fn take(&mut self, n: usize) -> Option<String> {
        self.texts.as_mut()?.get_mut(n)?.take()
    }

    /// Whether every text was taken, then forgets them all.
    pub(super) fn all_taken(&mut self) -> bool {
        let done = self
            .texts
            .as_ref()
            .is_none_or(|t| t.iter().all(Option::is_none));
        if let Some(t) = &mut self.texts {
            t.clear();
        }
        done
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Statement,
    Member,
}

/// A run of statements or associated items being generated.
pub(super) struct Run<'a> {
    emit: &'a mut Emit,
    kind: Kind,
    tokens: TokenStream,
    text: String,
    idents: BTreeSet<String>,
}

impl Run<'_> {
    /// Adds one statement or item: kept, or formatted and dropped.
    pub(super) fn push(&mut self, item: TokenStream) -> Result<(), CompileError> {
        if self.emit.texts.is_none() {
            self.tokens.extend(item);
            return Ok(());
        }
        let printed = match self.kind {
            Kind::Statement => self.emit.templates.statement(item, &mut self.idents),
            Kind::Member => format::member(item),
        };
        let text = printed.map_err(|e| {
            CompileError::from(Diagnostic::new(
                ErrorKind::Internal,
                Default::default(),
                format!("generated code does not parse: {e}"),
            ))
        })?;
        self.text.push_str(&text);
        Ok(())
    }

    /// The run's tokens, or the placeholder of its text.
    pub(super) fn finish(self) -> TokenStream {
        let Some(texts) = &mut self.emit.texts else {
            return self.tokens;
        };
        if self.text.is_empty() {
            return TokenStream::new();
        }
        let n = Literal::usize_unsuffixed(texts.len());
        texts.push(Some(self.text));
        let name = Ident::new(PLACEHOLDER, Span::call_site());
        let mentioned = self.idents.iter().map(|i| {
            // Raw identifiers (`r#type`) as written; anything else plain.
            i.strip_prefix("r#").map_or_else(
                || Ident::new(i, Span::call_site()),
                |r| Ident::new_raw(r, Span::call_site()),
            )
        });
        quote!(#name!(#n #(, #mentioned)*);)
    }
}

/// Every identifier `ts` mentions.
pub(super) fn idents(ts: &TokenStream, out: &mut BTreeSet<String>) {
    for t in ts.clone() {
        match t {
            TokenTree::Ident(i) => {
                let s = i.to_string();
                if !out.contains(&s) {
                    out.insert(s);
                }
            }
            TokenTree::Group(g) => idents(&g.stream(), out),
            _ => {}
        }
    }
}

/// The text number of `tokens` when they are a placeholder
/// (`__nnc_text!(N, …);`).
pub(super) fn placeholder(tokens: &[TokenTree]) -> Option<usize> {
    let [TokenTree::Ident(name), TokenTree::Punct(bang), TokenTree::Group(args), TokenTree::Punct(semi)] =
        tokens
    else {
        return None;
    };
    if name != PLACEHOLDER || bang.as_char() != '!' || semi.as_char() != ';' {
        return None;
    }
    match args.stream().into_iter().next() {
        Some(TokenTree::Literal(n)) => n.to_string().parse().ok(),
        _ => None,
    }
}

/// Whether a body mentions a placeholder among its top-level tokens.
pub(super) fn has_placeholder(tokens: &TokenStream) -> bool {
    tokens
        .clone()
        .into_iter()
        .any(|t| matches!(t, TokenTree::Ident(i) if i == PLACEHOLDER))
}
