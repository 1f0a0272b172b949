//! Macro input → the text of a `.nn` file, and back from byte ranges to spans.
//!
//! Each token is written at its own line and column (known on Rust 1.88+),
//! so the text has the layout of the Rust file around the macro: a byte
//! range in it has the same `line:col` as the tokens in the `.rs` file, and
//! the `(file:line:col)` notes of generated code point into that file. Where
//! positions are unknown or go backwards (tokens passed through a
//! `macro_rules!`), tokens are separated by one space, or by nothing after a
//! `Spacing::Joint` punctuation (`|>` arrives as `|` joint, `>`).
//!
//! Comments do not reach a proc macro; doc comments arrive as `#[doc = ..]`
//! attributes, which are not part of the language and are dropped like the
//! comments they were. Rust's lexer shapes a few things the way nnc reads
//! them anyway: `1e-3` is one literal, `-1` is `-` then `1`, `f32[batch, 784]`
//! is a name then a bracket group.

use nnc_compiler::Span as ByteSpan;
use proc_macro2::{Delimiter, Spacing, Span, TokenStream, TokenTree};

/// The text of the macro input and where each token came from.
pub struct Rendered {
    /// The text the compiler parses.
    pub text: String,
    /// Every token in text order: its byte range and its span.
    tokens: Vec<(usize, usize, Span)>,
}

/// Renders a token stream to nnc source text.
pub fn render(input: TokenStream) -> Rendered {
    let mut r = Renderer {
        text: String::new(),
        line: 1,
        col: 0,
        joint: false,
        tokens: Vec::new(),
    };
    r.stream(input);
    Rendered {
        text: r.text,
        tokens: r.tokens,
    }
}

impl Rendered {
    /// The spans of the first and last token a byte range covers. An empty
    /// range is an insertion point (a missing `;`): the token that ends
    /// there, else the next one. `None` when there is no token at all.
    pub fn spans(&self, range: ByteSpan) -> Option<(Span, Span)> {
        let (first, last) = (self.tokens.first()?, self.tokens.last()?);
        if range.start >= range.end {
            let t = self
                .tokens
                .iter()
                .find(|t| t.1 == range.start)
                .or_else(|| self.tokens.iter().find(|t| t.0 >= range.start))
                .unwrap_or(last);
            return Some((t.2, t.2));
        }
        let start = self
            .tokens
            .iter()
            .find(|t| t.1 > range.start)
            .unwrap_or(last);
        let end = self
            .tokens
            .iter()
            .rev()
            .find(|t| t.0 < range.end)
            .unwrap_or(first);
        if end.0 < start.0 {
            return Some((start.2, start.2));
        }
        Some((start.2, end.2))
    }

    /// The span of the first token.
    pub fn first_span(&self) -> Option<Span> {
        self.tokens.first().map(|t| t.2)
    }

    /// Whether a token ends at this byte.
    pub fn token_ends_at(&self, offset: usize) -> bool {
        self.tokens.iter().any(|t| t.1 == offset)
    }

    /// Whether a token starts at this byte.
    pub fn token_at(&self, offset: usize) -> bool {
        self.tokens.iter().any(|t| t.0 == offset)
    }

    /// Whether the tokens had positions, so that the text has the layout
    /// of the file they came from (`line:col` in the text is in the file).
    pub fn located(&self) -> bool {
        self.tokens.first().is_some_and(|t| t.2.start().line > 0)
    }
}

struct Renderer {
    text: String,
    /// The cursor: 1-based line, 0-based column in characters (the
    /// convention of `proc_macro2::LineColumn`).
    line: usize,
    col: usize,
    /// Whether the last token was punctuation joined to the next.
    joint: bool,
    tokens: Vec<(usize, usize, Span)>,
}

impl Renderer {
    fn stream(&mut self, input: TokenStream) {
        let mut it = input.into_iter().peekable();
        while let Some(tt) = it.next() {
            match tt {
                TokenTree::Group(g) => {
                    let (open, close) = match g.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::Brace => ("{", "}"),
                        // Invisible groups (a `$x:expr` of `macro_rules!`).
                        Delimiter::None => {
                            self.stream(g.stream());
                            continue;
                        }
                    };
                    self.token(open, g.span_open(), false);
                    self.stream(g.stream());
                    self.token(close, g.span_close(), false);
                }
                TokenTree::Punct(p) if p.as_char() == '#' && doc_attribute(&mut it) => {}
                TokenTree::Punct(p) => {
                    let joint = p.spacing() == Spacing::Joint;
                    self.token(&p.as_char().to_string(), p.span(), joint);
                }
                TokenTree::Ident(i) => self.token(&i.to_string(), i.span(), false),
                TokenTree::Literal(l) => self.token(&l.to_string(), l.span(), false),
            }
        }
    }

    /// Writes one token at its position, or after one space (none after a
    /// joint punctuation) when the position is unknown or behind the cursor.
    fn token(&mut self, s: &str, span: Span, joint_with_next: bool) {
        let at = span.start();
        let ahead = at.line > self.line || (at.line == self.line && at.column >= self.col);
        if at.line > 0 && ahead {
            if at.line > self.line {
                self.text
                    .extend(std::iter::repeat_n('\n', at.line - self.line));
                (self.line, self.col) = (at.line, 0);
            }
            self.text
                .extend(std::iter::repeat_n(' ', at.column - self.col));
            self.col = at.column;
        } else if !self.text.is_empty() && !self.joint {
            self.text.push(' ');
            self.col += 1;
        }
        // Two words are never adjacent in real source (they would be one
        // token); positions from different files can make them so.
        let word = |c: char| c.is_alphanumeric() || c == '_';
        if self.text.ends_with(word) && s.starts_with(word) {
            self.text.push(' ');
            self.col += 1;
        }
        let start = self.text.len();
        self.text.push_str(s);
        for c in s.chars() {
            if c == '\n' {
                (self.line, self.col) = (self.line + 1, 0);
            } else {
                self.col += 1;
            }
        }
        self.tokens.push((start, self.text.len(), span));
        self.joint = joint_with_next;
    }
}

/// After a `#`: consumes `[doc = ...]` (or `![doc = ...]`), what a doc
/// comment becomes, and says whether it did.
fn doc_attribute(it: &mut std::iter::Peekable<proc_macro2::token_stream::IntoIter>) -> bool {
    let is_doc = |tt: Option<&TokenTree>| match tt {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Bracket => {
            let mut inner = g.stream().into_iter();
            matches!(inner.next(), Some(TokenTree::Ident(i)) if i == "doc")
                && matches!(inner.next(), Some(TokenTree::Punct(p)) if p.as_char() == '=')
        }
        _ => false,
    };
    match it.peek() {
        Some(TokenTree::Punct(p)) if p.as_char() == '!' => {
            let mut ahead = it.clone();
            ahead.next();
            if is_doc(ahead.peek()) {
                it.next();
                it.next();
                return true;
            }
            false
        }
        tt if is_doc(tt) => {
            it.next();
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_layout_of_the_input() {
        let text = "network N {\n    input x: f32[batch, 4];\n    y = -x |> relu;  // a comment\n    loss mean(y * 1e-3);\n}";
        let r = render(text.parse().unwrap());
        let without_comment = text.replace("  // a comment", "");
        assert_eq!(r.text, without_comment);
    }

    #[test]
    fn doc_comments_are_dropped_like_comments() {
        let text = "/// the network\nnetwork N {\n    //! inner\n    input x: f32[4];\n}";
        let r = render(text.parse().unwrap());
        assert_eq!(r.text, "\nnetwork N {\n\n    input x: f32[4];\n}");
    }

    #[test]
    fn without_positions_tokens_are_spaced_and_joint_punctuation_is_glued() {
        use proc_macro2::{Group, Ident, Punct};
        let s = Span::call_site();
        let mut ts = TokenStream::new();
        ts.extend([
            TokenTree::Ident(Ident::new("y", s)),
            TokenTree::Punct(Punct::new('=', Spacing::Alone)),
            TokenTree::Ident(Ident::new("x", s)),
            TokenTree::Punct(Punct::new('|', Spacing::Joint)),
            TokenTree::Punct(Punct::new('>', Spacing::Alone)),
            TokenTree::Group(Group::new(Delimiter::Parenthesis, "a".parse().unwrap())),
        ]);
        // Tokens built in code have no position: `start()` is line 0 or the
        // position of the call site, never ahead of the cursor.
        let r = render(ts);
        assert!(r.text.ends_with("y = x |> ( a )"), "{:?}", r.text);
    }

    /// Tokens substituted by a `macro_rules!` carry positions from another
    /// place: they go after one space, and never glue to a word.
    #[test]
    fn tokens_from_elsewhere_still_read_right() {
        fn swap(ts: TokenStream) -> TokenStream {
            ts.into_iter()
                .map(|tt| match tt {
                    TokenTree::Group(g) => {
                        let mut n = proc_macro2::Group::new(g.delimiter(), swap(g.stream()));
                        n.set_span(g.span());
                        TokenTree::Group(n)
                    }
                    // Each `x` from its own one-line "file", at column 0.
                    TokenTree::Ident(i) if i == "x" => {
                        let far: TokenStream = "\n\n\n\n\n\n\n\n\n\n  x".parse().unwrap();
                        far.into_iter().next().unwrap()
                    }
                    tt => tt,
                })
                .collect()
        }
        let text = "network N {\n    input x: f32[batch, 4];\n    loss mean(x);\n}";
        let r = render(swap(text.parse().unwrap()));
        let source = nnc_compiler::SourceFile::new("t", r.text.as_str());
        assert!(nnc_compiler::check_source(&source).is_ok(), "{:?}", r.text);
    }

    #[test]
    fn byte_ranges_map_to_the_tokens_they_cover() {
        let text = "network N {\n    input x: f32[batch, 4]\n    loss mean(x);\n}";
        let r = render(text.parse().unwrap());
        let at = |i: usize| r.tokens[i].0;
        let show = |(a, b): (Span, Span)| {
            let find = |s: Span| {
                let i = r
                    .tokens
                    .iter()
                    .position(|t| format!("{:?}", t.2) == format!("{s:?}"));
                &r.text[r.tokens[i.unwrap()].0..r.tokens[i.unwrap()].1]
            };
            (find(a).to_string(), find(b).to_string())
        };
        // `mean(x)`: from `mean` to `)`.
        let mean = text.find("mean").unwrap();
        let range = ByteSpan::new(mean, mean + "mean(x)".len());
        assert_eq!(show(r.spans(range).unwrap()), ("mean".into(), ")".into()));
        // An insertion point just after `]`: the `]`.
        let after = text.find("4]").unwrap() + 2;
        let got = show(r.spans(ByteSpan::new(after, after)).unwrap());
        assert_eq!(got, ("]".into(), "]".into()));
        assert_eq!(at(0), 0);
    }
}
