//! Formatting the generated items with prettyplease, one item at a time.
//!
//! A big model's generated program is tens of megabytes of text, and its
//! `syn` tree is many times that: parsing the whole token stream into one
//! `syn::File` held the tokens, the tree and the text at once (issue 22:
//! 1.4 GB for a 100k-node model). Here the token stream is cut into its
//! top-level items, and an `impl` block into its associated items, and each
//! piece is parsed, printed and dropped before the next, so only one
//! piece's tree is alive at a time. The text is the same as printing the
//! whole file: prettyplease puts nothing between items but their own line
//! breaks, and lays out an item from its indentation alone, so an
//! associated item printed inside a copy of its block's header is the same
//! text as in the whole block.

use super::emit::{self, Emit};
use super::template::Templates;
use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use quote::quote;
use std::iter::Peekable;

/// Formats `items` (a generated file's items) onto `out`, each line
/// through [`push_text`]; a placeholder ([`super::emit`]) becomes the text
/// `emit` holds for it.
pub(super) fn items(items: TokenStream, out: &mut String, emit: &mut Emit) -> syn::Result<()> {
    each_item(items.into_iter(), top_level, |piece| match piece {
        Piece::Item(file) => {
            push_text(out, &prettyplease::unparse(&file));
            Ok(())
        }
        Piece::Impl { header, body } => impl_block(&header, body, out, emit),
        Piece::Text(n) => {
            out.push_str(&placed(emit, n)?);
            Ok(())
        }
    })
}

/// The wrapper [`member`] and [`statement`] print a piece in: the text of
/// an associated item or a statement depends only on its indentation,
/// which is the same inside any `impl` block and associated function, so
/// printing it inside the shortest ones (rather than copies of the real
/// header and signature) gives the same text for less parsing.
const WRAP_IMPL: &str = "impl __Nnc {\n";
const WRAP_FN: &str = "    fn __nnc() {\n";

/// The text of one associated item of an `impl` block, as [`push_text`]
/// writes it.
pub(super) fn member(tokens: TokenStream) -> syn::Result<String> {
    let file: syn::File = syn::parse2(quote!(impl __Nnc { #tokens }))?;
    let text = prettyplease::unparse(&file);
    drop(file);
    let inner = text
        .strip_prefix(WRAP_IMPL)
        .and_then(|t| t.strip_suffix("}\n"))
        .ok_or_else(|| layout(WRAP_IMPL))?;
    let mut out = String::with_capacity(inner.len());
    push_text(&mut out, inner);
    Ok(out)
}

/// The text of one statement of an associated function's body, as
/// [`push_text`] writes it.
pub(super) fn statement(tokens: TokenStream) -> syn::Result<String> {
    let file: syn::File = syn::parse2(quote!(impl __Nnc { fn __nnc() { #tokens } }))?;
    let text = prettyplease::unparse(&file);
    drop(file);
    let inner = text
        .strip_prefix(WRAP_IMPL)
        .and_then(|t| t.strip_prefix(WRAP_FN))
        .and_then(|t| t.strip_suffix("}\n"))
        .and_then(|t| t.strip_suffix("    }\n"))
        .ok_or_else(|| layout(WRAP_IMPL))?;
    let mut out = String::with_capacity(inner.len());
    push_text(&mut out, inner);
    Ok(out)
}

/// The identifier that stands for the elements of array `i` of an item
/// given to [`item_with_rows`]: long enough that every array holding it
/// breaks, one element a line, as an array of many elements does.
pub(super) fn row_mark(i: usize) -> String {
    format!("__nnc_rows_{i}_{}", "x".repeat(100))
}

/// The text of `item`, a top-level item in which array `i` holds only
/// [`row_mark`]`(i)`, with each mark's line replaced by the elements
/// `rows[i]` yields (issue 22: a big model's `ModelSpec` has a row per
/// parameter, and as one syntax tree it was the largest thing alive while
/// formatting). Only for arrays of enough elements that printed in place
/// they break, one element a line: an element's text then depends only on
/// its indentation and on whether it is the last (which prints its comma
/// as a break's), and each element is printed in the same place of a nest
/// of arrays indented as deep, by its shape ([`Templates::element`]: the
/// rows of a table are few shapes).
pub(super) fn item_with_rows<'a>(
    item: TokenStream,
    rows: Vec<Box<dyn ExactSizeIterator<Item = TokenStream> + 'a>>,
) -> syn::Result<String> {
    let text = prettyplease::unparse(&syn::parse2(item)?);
    let mut out = String::new();
    let mut rest: &str = &text;
    let mut templates = Templates::default();
    for (i, elements) in rows.into_iter().enumerate() {
        let mark = row_mark(i);
        let at = rest.find(&mark).ok_or_else(|| layout("static"))?;
        let line_start = rest[..at].rfind('\n').map_or(0, |p| p + 1);
        let indent = at - line_start;
        let line_end = at + mark.len();
        if rest[line_start..at].bytes().any(|b| b != b' ')
            || !rest[line_end..].starts_with(",\n")
            || indent < 4
            || indent % 4 != 0
        {
            return Err(layout("static"));
        }
        push_text(&mut out, &rest[..line_start]);
        let n = elements.len();
        for (k, element) in elements.enumerate() {
            push_text(&mut out, &templates.element(element, indent, k + 1 == n)?);
        }
        rest = &rest[line_end + 2..];
    }
    push_text(&mut out, rest);
    Ok(out)
}

/// The lines of consecutive array elements, printed `indent` deep: inside
/// arrays nested `indent / 4` deep, next to a mark that breaks them all.
/// The mark goes after them, or, when they end the array (`last`), before
/// them, so each element is followed by what follows it in place.
pub(super) fn elements_text(
    elements: Vec<TokenStream>,
    indent: usize,
    last: bool,
) -> syn::Result<String> {
    let mark = row_mark(0);
    let m = proc_macro2::Ident::new(&mark, proc_macro2::Span::call_site());
    let mut array = if last {
        quote!([#m, #(#elements),*])
    } else {
        quote!([#(#elements,)* #m])
    };
    drop(elements);
    for _ in 1..indent / 4 {
        array = quote!([#array]);
    }
    let text = prettyplease::unparse(&syn::parse2(quote!(const _: () = #array;))?);
    let (pad, mark_line) = (" ".repeat(indent), format!("{}{mark},", " ".repeat(indent)));
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(&pad) && line != mark_line {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        return Err(layout("static"));
    }
    Ok(out)
}

/// The text placeholder `n` stands for.
fn placed(emit: &mut Emit, n: usize) -> syn::Result<String> {
    emit.take(n).ok_or_else(|| {
        syn::Error::new(
            proc_macro2::Span::call_site(),
            format!("generated text {n} is missing or placed twice"),
        )
    })
}

/// A top-level item, parsed, or an `impl` block to be printed item by item.
enum Piece {
    Item(syn::File),
    Impl { header: TokenStream, body: Group },
    Text(usize),
}

/// `tokens` as a top-level item: an `impl` block (attributes, then `impl`,
/// …, then its brace group) whose header parses is kept as tokens, any
/// other item is parsed.
fn top_level(tokens: &[TokenTree]) -> syn::Result<Piece> {
    if let Some(n) = emit::placeholder(tokens) {
        return Ok(Piece::Text(n));
    }
    if let Some((TokenTree::Group(body), head)) = tokens.split_last() {
        if body.delimiter() == Delimiter::Brace && starts_impl(head) && !body.stream().is_empty() {
            let header: TokenStream = head.iter().cloned().collect();
            syn::parse2::<syn::File>(wrap(&header, TokenStream::new()))?;
            return Ok(Piece::Impl {
                header,
                body: body.clone(),
            });
        }
    }
    syn::parse2(tokens.iter().cloned().collect()).map(Piece::Item)
}

/// Whether `head`, after its attributes (`#` and a bracket group each),
/// begins with `impl`.
fn starts_impl(head: &[TokenTree]) -> bool {
    let mut rest = head;
    while let [TokenTree::Punct(p), TokenTree::Group(g), tail @ ..] = rest {
        if p.as_char() != '#' || g.delimiter() != Delimiter::Bracket {
            break;
        }
        rest = tail;
    }
    matches!(rest.first(), Some(TokenTree::Ident(i)) if i == "impl")
}

/// `header { inner }`.
fn wrap(header: &TokenStream, inner: TokenStream) -> TokenStream {
    let mut tokens = header.clone();
    tokens.extend([TokenTree::Group(Group::new(Delimiter::Brace, inner))]);
    tokens
}

/// Prints an `impl` block: its header, then each associated item printed
/// inside a copy of the header with that header and the closing brace cut
/// off again, then the closing brace.
fn impl_block(
    header: &TokenStream,
    body: Group,
    out: &mut String,
    emit: &mut Emit,
) -> syn::Result<()> {
    let empty = prettyplease::unparse(&syn::parse2(wrap(header, TokenStream::new()))?);
    // `impl X {}` printed; a non-empty block opens with the same text, a
    // line break after its `{`.
    let open = match empty.strip_suffix("{}\n") {
        Some(o) => format!("{o}{{\n"),
        None => {
            let file = syn::parse2(wrap(header, body.stream()))?;
            push_text(out, &prettyplease::unparse(&file));
            return Ok(());
        }
    };
    push_text(out, &open);
    let stream = body.stream();
    drop(body);
    each_item(
        stream.into_iter(),
        |tokens| member_of(header, tokens),
        |m| match m {
            Member::Parsed(file) => {
                let text = prettyplease::unparse(&file);
                drop(file);
                let inner = text.strip_prefix(&open).and_then(|t| t.strip_suffix("}\n"));
                push_text(out, inner.ok_or_else(|| layout(&open))?);
                Ok(())
            }
            Member::Fn { sig, body } => fn_by_statement(header, &open, &sig, body, out, emit),
            Member::Text(n) => {
                out.push_str(&placed(emit, n)?);
                Ok(())
            }
        },
    )?;
    push_text(out, "}\n");
    Ok(())
}

/// A function body with at least this many top-level tokens is printed
/// statement by statement (a big model's step is one function of tens of
/// megabytes).
const SPLIT_TOKENS: usize = 64;

/// An associated item of an `impl` block: parsed inside a copy of the
/// block's header, a long function (or one with placeholders) kept as
/// tokens to be printed statement by statement, or a placeholder.
enum Member {
    Parsed(syn::File),
    Fn { sig: TokenStream, body: Group },
    Text(usize),
}

fn member_of(header: &TokenStream, tokens: &[TokenTree]) -> syn::Result<Member> {
    if let Some(n) = emit::placeholder(tokens) {
        return Ok(Member::Text(n));
    }
    if let Some((TokenTree::Group(body), sig)) = tokens.split_last() {
        let is_fn = sig
            .iter()
            .any(|t| matches!(t, TokenTree::Ident(i) if i == "fn"));
        if is_fn && body.delimiter() == Delimiter::Brace && {
            let stream = body.stream();
            emit::has_placeholder(&stream) || stream.into_iter().count() >= SPLIT_TOKENS
        } {
            let sig: TokenStream = sig.iter().cloned().collect();
            syn::parse2::<syn::File>(wrap(header, wrap(&sig, TokenStream::new())))?;
            return Ok(Member::Fn {
                sig,
                body: body.clone(),
            });
        }
    }
    syn::parse2(wrap(header, tokens.iter().cloned().collect())).map(Member::Parsed)
}

/// Prints a long associated function: its opening (everything before its
/// first statement, found by printing it with a marker statement), then
/// each statement printed inside copies of the block's header and the
/// function's signature with both cut off again, then its closing.
fn fn_by_statement(
    header: &TokenStream,
    open: &str,
    sig: &TokenStream,
    body: Group,
    out: &mut String,
    emit: &mut Emit,
) -> syn::Result<()> {
    const MARK: &str = "__nnc_format_mark;";
    let marked: TokenStream = MARK.parse().map_err(|_| layout(open))?;
    let text = prettyplease::unparse(&syn::parse2(wrap(header, wrap(sig, marked)))?);
    let inner = text
        .strip_prefix(open)
        .and_then(|t| t.strip_suffix("}\n"))
        .ok_or_else(|| layout(open))?;
    let at = inner.find(MARK).ok_or_else(|| layout(open))?;
    let line_start = inner[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = inner[at..].find('\n').map_or(inner.len(), |i| at + i + 1);
    let (fn_open, fn_close) = (&inner[..line_start], &inner[line_end..]);
    push_text(out, fn_open);
    let stream = body.stream();
    drop(body);
    each_item(
        stream.into_iter(),
        |tokens| match emit::placeholder(tokens) {
            Some(n) => Ok(Err(n)),
            None => statement(tokens.iter().cloned().collect()).map(Ok),
        },
        |stmt| {
            match stmt {
                Ok(text) => out.push_str(&text),
                Err(n) => out.push_str(&placed(emit, n)?),
            }
            Ok(())
        },
    )?;
    push_text(out, fn_close);
    Ok(())
}

/// The error for a piece that printed in a shape this module does not
/// expect (a prettyplease change): generation stops rather than emit
/// wrong text.
fn layout(open: &str) -> syn::Error {
    syn::Error::new(
        proc_macro2::Span::call_site(),
        format!(
            "an item of `{}` printed in an unexpected layout",
            open.trim_end()
        ),
    )
}

/// Cuts `tokens` into items and hands each to `emit` once `parse` accepts
/// it. The cut ([`Items`]) is a guess from the tokens alone; when `parse`
/// rejects a piece, the next one is appended and the whole tried again, so
/// a wrong guess costs time, never the output.
fn each_item<T>(
    tokens: impl Iterator<Item = TokenTree>,
    mut parse: impl FnMut(&[TokenTree]) -> syn::Result<T>,
    mut emit: impl FnMut(T) -> syn::Result<()>,
) -> syn::Result<()> {
    let mut pending: Vec<TokenTree> = Vec::new();
    let mut error = None;
    for item in (Items {
        tokens: tokens.peekable(),
    }) {
        pending.extend(item);
        match parse(&pending) {
            Ok(t) => {
                pending.clear();
                error = None;
                emit(t)?;
            }
            Err(e) => error = Some(e),
        }
    }
    error.map_or(Ok(()), Err)
}

/// Splits a token sequence after each `;` and after each brace group that
/// is not followed by punctuation (other than an attribute's `#`) or
/// `else`: where an item or a statement ends in the code codegen writes.
struct Items<I: Iterator<Item = TokenTree>> {
    tokens: Peekable<I>,
}

impl<I: Iterator<Item = TokenTree>> Iterator for Items<I> {
    type Item = Vec<TokenTree>;

    fn next(&mut self) -> Option<Vec<TokenTree>> {
        let mut item = Vec::new();
        while let Some(t) = self.tokens.next() {
            let end = match &t {
                TokenTree::Punct(p) => p.as_char() == ';',
                // `if c {} else {}`: the `else` goes on; punctuation
                // (`;`, `.`, `?`, an operator) continues an expression.
                TokenTree::Group(g) => {
                    g.delimiter() == Delimiter::Brace
                        && !matches!(self.tokens.peek(),
                            Some(TokenTree::Punct(p)) if p.as_char() != '#')
                        && !matches!(self.tokens.peek(),
                            Some(TokenTree::Ident(i)) if i == "else")
                }
                _ => false,
            };
            item.push(t);
            if end {
                break;
            }
        }
        (!item.is_empty()).then_some(item)
    }
}

/// Appends `text`'s lines: a doc comment inside a function body (indented
/// 8 or more) becomes a plain comment. Statement-level notes travel through
/// the token stream as doc attributes.
fn push_text(out: &mut String, text: &str) {
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent >= 8 && trimmed.starts_with("///") {
            out.push_str(&line[..indent]);
            out.push_str("//");
            out.push_str(&trimmed[3..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    /// Printing piece by piece gives the text of printing the whole file,
    /// also for the statement forms the item cut must not split (`else`,
    /// `let … else`, a struct literal or block followed by `;`, `.` or an
    /// operator, attributes on statements and items).
    #[test]
    fn piecewise_printing_equals_whole_printing() {
        let items = quote! {
            /// A static.
            pub static S: Spec = Spec { a: 1, b: [1, 2, 3], c: Inner { d: 4 } };
            pub struct Net { x: Vec<f32> }
            impl Net {
                /// A short one.
                #[inline]
                fn k1(x: &[f32]) -> f32 { x[0] }
                pub fn step(&mut self, x: &[f32], very_long_argument_name: usize, another_long_argument: &mut [f32]) -> ::core::result::Result<f32, Error> {
                    let b = check(x)?;
                    /// node 3: `h` = `relu`
                    {
                        Self::k1(&x[0usize..very_long_argument_name * 16usize * another_long_argument.len()]);
                    }
                    if b > 0 { self.x.push(1.0); } else if b < 0 { self.x.clear(); } else { return Ok(0.0); }
                    let Some(v) = self.x.first() else { return Err(Error) };
                    let s = Spec { a: 2, b: [0; 3], c: Inner { d: 1 } }.a + { 3 } * 2;
                    match b { 0 => {} _ => { let _ = v; } }
                    for (i, o) in another_long_argument.iter_mut().enumerate() { *o = { let l = x[i]; l * 2.0 }; }
                    debug_assert!(b < 10, "b is {}", b);
                    unsafe { core::hint::unreachable_unchecked() }
                }
            }
            impl Model for Net { fn a(&self) -> usize { 1 } }
            impl Empty for Net {}
        };
        let whole: syn::File = syn::parse2(items.clone()).unwrap();
        let mut want = String::new();
        push_text(&mut want, &prettyplease::unparse(&whole));
        let mut got = String::new();
        super::items(items, &mut got, &mut Emit::tokens()).unwrap();
        assert_eq!(got, want);
        assert!(got.contains("        // node 3"), "{got}");
    }
}
