//! Statements that differ only in their numbers are formatted once.
//!
//! A big model's entry points are hundreds of thousands of kernel calls,
//! and formatting each through `syn` and prettyplease was most of the time
//! `nnc compile` took (issue 22). The calls of a stack of layers are few
//! shapes of statement: the same kernel, the same slices, at other
//! offsets, each under its own node's comment. prettyplease lays a
//! statement out from the widths of its tokens alone, so two statements
//! whose tokens are equal but for the digits of their `usize` literals,
//! each as wide as its counterpart, print alike but for those digits; and
//! a leading doc comment prints as `///` and its text, on a line of its
//! own, whatever the text (when it is one line not starting with `/`).
//! Here each statement's shape — its tokens with every `usize` literal's
//! digits written as ones and its doc comment as a mark — is formatted
//! once, and the text of every statement of that shape is the shape's
//! text with its own digits and comment put back. A statement whose text
//! could hide a hole (a string literal besides its doc comment), or whose
//! shape's text does not show its holes as expected, is formatted on its
//! own, as before.
//!
//! The rows of a long `ModelSpec` table are formatted the same way
//! ([`Templates::element`]), with each plain string literal (a parameter's
//! name) a hole as well, written in the shape as a string of as many `a`s.

use super::{emit, format};
use proc_macro2::{Delimiter, Group, Literal, Punct, Spacing, TokenStream, TokenTree};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

/// What a statement's doc comment is written as in its shape: a character
/// no identifier, number or punctuation of a statement contains, and no
/// other string literal is allowed into a shape.
const NOTE_MARK: char = '\u{1}';

/// The longest `usize` literal a shape writes as ones (`u64::MAX` has 20
/// digits; 19 ones fit in any `usize` of 64 bits).
const MAX_DIGITS: usize = 19;

/// The most shapes kept at once (about a kilobyte each).
const MAX_SHAPES: usize = 4096;

/// The formatted shapes met so far (`None`: a shape whose statements are
/// each formatted on their own).
#[derive(Debug, Default)]
pub(super) struct Templates {
    shapes: HashMap<String, Option<Template>>,
}

/// A shape's text, cut at its holes.
#[derive(Debug)]
struct Template {
    /// The text before each hole, and after the last: one more than holes.
    pieces: Vec<String>,
    /// Each hole in order.
    holes: Vec<Hole>,
}

/// What fills a hole of a shape's text.
#[derive(Clone, Copy, Debug)]
enum Hole {
    /// The `i`th number's digits.
    Number(usize),
    /// The doc comment's text.
    Note,
    /// The `i`th plain string literal, quotes and all.
    Str(usize),
}

/// A statement read as its shape's key and what fills its holes.
struct Reading {
    key: String,
    numbers: Vec<String>,
    note: Option<String>,
    /// Plain string literals as written (only where strings are holes).
    strings: Vec<String>,
}

impl Templates {
    /// The text of one statement of an associated function's body, as
    /// [`format::statement`] writes it; every identifier the statement
    /// mentions is added to `idents` (read in the same walk).
    pub(super) fn statement(
        &mut self,
        tokens: TokenStream,
        idents: &mut BTreeSet<String>,
    ) -> syn::Result<String> {
        let Some(reading) = read(&tokens, false, Some(&mut *idents)) else {
            // The walk may have stopped early.
            emit::idents(&tokens, idents);
            return format::statement(tokens);
        };
        if let Some(entry) = self.shapes.get(&reading.key) {
            return match entry {
                Some(t) => Ok(t.fill(&reading)),
                None => format::statement(tokens),
            };
        }
        let template = format::statement(shape_tokens(&tokens, &reading))
            .ok()
            .and_then(|text| Template::cut(&text, &reading));
        let text = match &template {
            Some(t) => t.fill(&reading),
            None => format::statement(tokens)?,
        };
        self.keep(reading.key, template);
        Ok(text)
    }

    /// The lines of one element of an array printed one element a line,
    /// `indent` deep, as [`format::elements_text`] writes them.
    pub(super) fn element(
        &mut self,
        tokens: TokenStream,
        indent: usize,
        last: bool,
    ) -> syn::Result<String> {
        let Some(mut reading) = read(&tokens, true, None) else {
            return format::elements_text(vec![tokens], indent, last);
        };
        // An element's text depends on its indentation and on whether it
        // ends the array; a statement's key never starts with a digit.
        reading.key.insert_str(0, &format!("{indent} {last} "));
        if let Some(entry) = self.shapes.get(&reading.key) {
            return match entry {
                Some(t) => Ok(t.fill(&reading)),
                None => format::elements_text(vec![tokens], indent, last),
            };
        }
        let template = format::elements_text(vec![shape_tokens(&tokens, &reading)], indent, last)
            .ok()
            .and_then(|text| Template::cut(&text, &reading));
        let text = match &template {
            Some(t) => t.fill(&reading),
            None => format::elements_text(vec![tokens], indent, last)?,
        };
        self.keep(reading.key, template);
        Ok(text)
    }

    fn keep(&mut self, key: String, template: Option<Template>) {
        if self.shapes.len() >= MAX_SHAPES {
            // A model of many distinct kernels has as many shapes: keep
            // the memory bounded, at the cost of formatting some again.
            self.shapes.clear();
        }
        self.shapes.insert(key, template);
    }
}

impl Template {
    /// Cuts a shape's text at its holes: the numbers, each a run of ones as
    /// long as the statement's number and followed by `usize`, and the
    /// comment mark; `None` unless each is where and as expected.
    fn cut(text: &str, reading: &Reading) -> Option<Template> {
        let mut pieces = Vec::new();
        let mut holes = Vec::new();
        let bytes = text.as_bytes();
        let (mut from, mut i, mut number, mut string) = (0, 0, 0, 0);
        while i < bytes.len() {
            let c = bytes[i];
            if c == NOTE_MARK as u8 {
                pieces.push(text[from..i].to_string());
                holes.push(Hole::Note);
                i += 1;
                from = i;
                continue;
            }
            if c == b'"' {
                // Only a hole's string is let into a shape.
                let want = reading.strings.get(string)?;
                let end = i + 1 + text[i + 1..].find('"')?;
                let inner = &bytes[i + 1..end];
                if end + 1 - i != want.len() || inner.iter().any(|&b| b != b'a') {
                    return None;
                }
                pieces.push(text[from..i].to_string());
                holes.push(Hole::Str(string));
                string += 1;
                i = end + 1;
                from = i;
                continue;
            }
            let starts_word = i == 0 || !is_ident_byte(bytes[i - 1]);
            if c.is_ascii_digit() && starts_word {
                let end = i + bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                let rest = &text[end..];
                let suffixed = rest.starts_with("usize")
                    && !rest.as_bytes().get(5).is_some_and(|&b| is_ident_byte(b));
                if suffixed {
                    let want = reading.numbers.get(number)?;
                    if end - i != want.len() || bytes[i..end].iter().any(|&b| b != b'1') {
                        return None;
                    }
                    pieces.push(text[from..i].to_string());
                    holes.push(Hole::Number(number));
                    number += 1;
                    from = end;
                }
                i = end;
                continue;
            }
            i += 1;
        }
        pieces.push(text[from..].to_string());
        let notes = holes.iter().filter(|h| matches!(h, Hole::Note)).count();
        (number == reading.numbers.len()
            && string == reading.strings.len()
            && notes == usize::from(reading.note.is_some()))
        .then_some(Template { pieces, holes })
    }

    /// The text of a statement of this shape.
    fn fill(&self, reading: &Reading) -> String {
        let mut out =
            String::with_capacity(self.pieces.iter().map(String::len).sum::<usize>() + 64);
        for (piece, hole) in self.pieces.iter().zip(&self.holes) {
            out.push_str(piece);
            match *hole {
                Hole::Number(n) => out.push_str(&reading.numbers[n]),
                Hole::Note => out.push_str(reading.note.as_deref().unwrap_or_default()),
                Hole::Str(n) => out.push_str(&reading.strings[n]),
            }
        }
        out.push_str(self.pieces.last().map_or("", String::as_str));
        out
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A statement's (or with `strings`, an array element's) shape key and
/// holes; `None` for one that is not formatted by shape.
fn read(
    tokens: &TokenStream,
    strings: bool,
    mut idents: Option<&mut BTreeSet<String>>,
) -> Option<Reading> {
    let mut reading = Reading {
        key: String::new(),
        numbers: Vec::new(),
        note: None,
        strings: Vec::new(),
    };
    let mut rest = tokens.clone().into_iter().peekable();
    if let Some(TokenTree::Punct(p)) = rest.peek() {
        if p.as_char() == '#' {
            let hash = rest.next();
            let Some(TokenTree::Group(attr)) = rest.next() else {
                return None;
            };
            reading.note = Some(note(&attr)?);
            if let Some(set) = idents.as_deref_mut() {
                // The attribute's one identifier.
                if !set.contains("doc") {
                    set.insert("doc".to_string());
                }
            }
            drop(hash);
            reading.key.push_str("#[doc] ");
        }
    }
    for t in rest {
        walk(t, &mut reading, strings, idents.as_deref_mut())?;
    }
    Some(reading)
}

/// The text of a leading `#[doc = "…"]` as prettyplease prints it after
/// `///`, when that is a plain line.
fn note(attr: &Group) -> Option<String> {
    if attr.delimiter() != Delimiter::Bracket {
        return None;
    }
    let parts: Vec<TokenTree> = attr.stream().into_iter().collect();
    let [TokenTree::Ident(doc), TokenTree::Punct(eq), TokenTree::Literal(lit)] = &parts[..] else {
        return None;
    };
    if doc != "doc" || eq.as_char() != '=' {
        return None;
    }
    let text = lit.to_string();
    // Without a backslash a string literal's value is its text between the
    // quotes (the common case, read without `syn`).
    let value = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => inner.to_string(),
        _ => {
            let syn::Lit::Str(s) = syn::Lit::new(lit.clone()) else {
                return None;
            };
            s.value()
        }
    };
    // One line, as `///` prints it (trailing spaces trimmed); `\r` would
    // end a line for `str::lines` in the formatter's post-processing.
    let plain = !value.starts_with('/')
        && !value.contains(['\n', '\r', NOTE_MARK])
        && !value.trim_end_matches(' ').is_empty();
    plain.then(|| value.trim_end_matches(' ').to_string())
}

/// Appends one token to the shape key, recording its number; `None` for
/// a token that keeps the statement from being formatted by shape.
fn walk(
    t: TokenTree,
    r: &mut Reading,
    strings: bool,
    mut idents: Option<&mut BTreeSet<String>>,
) -> Option<()> {
    match t {
        TokenTree::Ident(i) => {
            // Written straight onto the key: a big model's statements are
            // millions of identifiers, and a string each was most of the
            // walk's time (issue 22).
            let at = r.key.len();
            let _ = write!(r.key, "{i}");
            if let Some(set) = idents {
                let s = &r.key[at..];
                if !set.contains(s) {
                    set.insert(s.to_string());
                }
            }
            r.key.push(' ');
        }
        TokenTree::Punct(p) => {
            r.key.push(p.as_char());
            if p.spacing() == Spacing::Alone {
                r.key.push(' ');
            }
        }
        TokenTree::Literal(l) => {
            let text = l.to_string();
            match number(&text) {
                Some(digits) => {
                    r.key.extend(std::iter::repeat_n('1', digits.len()));
                    r.key.push_str("usize ");
                    r.numbers.push(digits.to_string());
                }
                // A string or character literal could hold what looks like
                // a hole; a number of another kind is part of the shape.
                None if text.starts_with(|c: char| c.is_ascii_digit()) => {
                    r.key.push_str(&text);
                    r.key.push(' ');
                }
                None if strings && plain_string(&text) => {
                    let _ = write!(r.key, "\"{}\" ", text.len());
                    r.strings.push(text);
                }
                None => return None,
            }
        }
        TokenTree::Group(g) => {
            let (open, close) = match g.delimiter() {
                Delimiter::Parenthesis => ('(', ')'),
                Delimiter::Brace => ('{', '}'),
                Delimiter::Bracket => ('[', ']'),
                Delimiter::None => ('\u{2}', '\u{3}'),
            };
            r.key.push(open);
            for t in g.stream() {
                walk(t, r, strings, idents.as_deref_mut())?;
            }
            r.key.push(close);
        }
    }
    Some(())
}

/// The digits of a `usize` literal written as generated code writes them
/// (`16usize`), short enough to be written as ones.
fn number(text: &str) -> Option<&str> {
    let digits = text.strip_suffix("usize")?;
    let plain = !digits.is_empty()
        && digits.len() <= MAX_DIGITS
        && digits.bytes().all(|b| b.is_ascii_digit());
    plain.then_some(digits)
}

/// Whether a literal is a string printed as it reads: ASCII without
/// escapes or quotes (one that reads like a hole's `a`s is a hole too,
/// which is harmless: the hole prints it back).
fn plain_string(text: &str) -> bool {
    text.len() >= 2
        && text.starts_with('"')
        && text.ends_with('"')
        && text[1..text.len() - 1]
            .bytes()
            .all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\')
}

/// A statement's shape as tokens: its numbers as ones, its plain strings
/// as `a`s, its doc comment as the mark.
fn shape_tokens(tokens: &TokenStream, reading: &Reading) -> TokenStream {
    let mut rest = tokens.clone().into_iter().peekable();
    let mut out = TokenStream::new();
    if reading.note.is_some() {
        let (Some(hash), Some(TokenTree::Group(attr))) = (rest.next(), rest.next()) else {
            return tokens.clone();
        };
        let mark = Literal::string(&NOTE_MARK.to_string());
        let doc: TokenStream = [
            TokenTree::Ident(proc_macro2::Ident::new("doc", attr.span())),
            TokenTree::Punct(Punct::new('=', Spacing::Alone)),
            TokenTree::Literal(mark),
        ]
        .into_iter()
        .collect();
        out.extend([hash, TokenTree::Group(Group::new(Delimiter::Bracket, doc))]);
    }
    out.extend(rest.map(ones));
    out
}

/// A token with every `usize` literal in it written as ones, and every
/// plain string literal as `a`s (only element shapes hold any).
fn ones(t: TokenTree) -> TokenTree {
    match t {
        TokenTree::Literal(l) => {
            let text = l.to_string();
            match number(&text) {
                Some(d) => {
                    let ones: String = std::iter::repeat_n('1', d.len()).collect();
                    TokenTree::Literal(Literal::usize_suffixed(ones.parse().unwrap_or(1)))
                }
                None if plain_string(&text) => {
                    TokenTree::Literal(Literal::string(&"a".repeat(text.len() - 2)))
                }
                None => TokenTree::Literal(l),
            }
        }
        TokenTree::Group(g) => {
            let mut inner = Group::new(g.delimiter(), g.stream().into_iter().map(ones).collect());
            inner.set_span(g.span());
            TokenTree::Group(inner)
        }
        t => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    /// Statements of one shape print as formatting each would, whatever
    /// their numbers' values and their comments' lengths, also where the
    /// numbers' widths make the statement break over lines.
    #[test]
    fn a_shape_prints_as_each_statement() {
        let mut templates = Templates::default();
        let long = "x".repeat(150);
        let cases = [
            (" node 1: short", 0usize, 16usize, 7usize),
            (
                " node 2: `h` = `relu` → `f32[batch, 16]` (a.nn:3:4)",
                9,
                99,
                1,
            ),
            (&long[..], 123_456, 7_000_001, 100_000_000),
            (" node 4", 1, 1, 1),
            (" node 5 ", 0, 0, 0),
            (" node 6", 987_654_321, 123_456_789, 999_999_999),
        ];
        for (doc, a, e, n) in cases {
            let a_lit = Literal::usize_suffixed(a);
            let e_lit = Literal::usize_suffixed(e);
            let n_lit = Literal::usize_suffixed(n);
            for stmt in [
                quote! {
                    #[doc = #doc]
                    {
                        let ([w0, w1], out) = ::nnc::runtime::kernels::io(ws, (#a_lit * mb, #n_lit * b), [(#e_lit, #n_lit * b), (#a_lit + #e_lit * mb, 16usize * b)]);
                        Self::k5_matmul(b, w0, &p[#a_lit..#e_lit], w1, out);
                    }
                },
                quote! {
                    #[doc = #doc]
                    {
                        Self::k7_add(b, &[0.5f32 * (b as f32).powi(-1i32)], &p[#a_lit..#e_lit], &mut ws[#n_lit..][..#e_lit * b]);
                    }
                },
                quote!(g[#a_lit..#e_lit].copy_from_slice(&ws[#n_lit..][..#e_lit]);),
            ] {
                let want = format::statement(stmt.clone()).unwrap();
                let got = templates.statement(stmt, &mut BTreeSet::new()).unwrap();
                assert_eq!(got, want);
            }
        }
        // Far fewer shapes than statements.
        assert!(templates.shapes.len() < 18, "{}", templates.shapes.len());
        assert!(templates.shapes.values().all(Option::is_some));
    }

    /// What cannot be formatted by shape is formatted as before.
    #[test]
    fn other_statements_are_formatted_on_their_own() {
        let mut templates = Templates::default();
        for stmt in [
            quote!(let s = "16usize"; let t = 1usize;),
            quote! {
                #[doc = "/ a slash"]
                let x = 1usize;
            },
            quote! {
                #[doc = "two\nlines"]
                let x = 2usize;
            },
            quote!(let x = 0x10usize;),
        ] {
            let want = format::statement(stmt.clone()).unwrap();
            assert_eq!(
                templates.statement(stmt, &mut BTreeSet::new()).unwrap(),
                want
            );
        }
    }
}
