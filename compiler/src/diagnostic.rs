//! Diagnostics: every error any stage reports carries the span of the source
//! it concerns, so the CLI, build scripts and the proc macro all point at the
//! same characters.

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor};
use std::fmt;
use std::sync::OnceLock;

/// A byte range `start..end` in the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// First byte of the range.
    pub start: usize,
    /// One past the last byte of the range.
    pub end: usize,
}

impl Span {
    /// A span covering `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// The class of an error: what tests and tools match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text does not follow the grammar.
    Syntax,
    /// A name that is not bound where it is used.
    UnknownName,
    /// A name bound twice in the same scope.
    DuplicateName,
    /// Operand shapes that the operation cannot combine.
    ShapeMismatch,
    /// An operand of the wrong element type (class labels where f32 is needed).
    TypeMismatch,
    /// A call with a missing, unknown, duplicated or ill-typed argument.
    BadArgument,
    /// A network without a `loss` statement.
    MissingLoss,
    /// A declaration that is well-formed but not allowed where it stands.
    Invalid,
    /// A bug in nnc itself: an invariant of the pipeline did not hold.
    Internal,
}

/// One error with the span it concerns, secondary labels and an optional hint.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// What class of error this is.
    pub kind: ErrorKind,
    /// The headline: what was expected and what was found.
    pub message: String,
    /// Where the error is.
    pub span: Span,
    /// Text shown under the primary span.
    pub label: String,
    /// Further spans worth showing, each with its own text.
    pub notes: Vec<(Span, String)>,
    /// A suggestion for the fix, where one helps.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with no label text, notes or help.
    pub fn new(kind: ErrorKind, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            kind,
            message: message.into(),
            span,
            label: String::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// Sets the text under the primary span.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Adds a secondary span with its text.
    pub fn with_note(mut self, span: Span, text: impl Into<String>) -> Self {
        self.notes.push((span, text.into()));
        self
    }

    /// Sets the hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// All errors found in one compilation, in source order.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", summary(.diagnostics))]
pub struct CompileError {
    /// The errors, never empty.
    pub diagnostics: Vec<Diagnostic>,
}

fn summary(diagnostics: &[Diagnostic]) -> String {
    match diagnostics {
        [] => "compilation failed".to_string(),
        [one] => one.message.clone(),
        [first, rest @ ..] => format!("{} (and {} more errors)", first.message, rest.len()),
    }
}

impl From<Diagnostic> for CompileError {
    fn from(d: Diagnostic) -> Self {
        CompileError {
            diagnostics: vec![d],
        }
    }
}

impl From<Vec<Diagnostic>> for CompileError {
    fn from(mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by_key(|d| d.span.start);
        CompileError { diagnostics }
    }
}

/// A named source text: what diagnostics are rendered against.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics, usually the path.
    pub name: String,
    /// The whole text.
    pub text: String,
    /// Where each line starts, built on the first [`SourceFile::line_col`]
    /// (generated code cites a line and column for every node).
    lines: OnceLock<LineIndex>,
}

/// The start of every line of a text and whether the line is ASCII (its
/// columns are then byte offsets).
#[derive(Clone, Debug)]
struct LineIndex {
    /// The length of the text indexed (a changed text is scanned instead).
    len: usize,
    /// Byte offset of each line's start, with whether the line is ASCII.
    starts: Vec<(usize, bool)>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![(0, true)];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                starts.push((i + 1, true));
            } else if !b.is_ascii() {
                if let Some(last) = starts.last_mut() {
                    last.1 = false;
                }
            }
        }
        LineIndex {
            len: text.len(),
            starts,
        }
    }
}

impl SourceFile {
    /// A source file from its name and text. A UTF-8 byte-order mark at the
    /// start (which some editors write) is dropped: it is no token, and
    /// columns on the first line count from after it.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let mut text = text.into();
        if text.starts_with('\u{feff}') {
            text.drain(..'\u{feff}'.len_utf8());
        }
        SourceFile {
            name: name.into(),
            text,
            lines: OnceLock::new(),
        }
    }

    /// The 1-based line and column (in characters) of a byte offset, in
    /// time logarithmic in the text's length (after the first call).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let index = self.lines.get_or_init(|| LineIndex::new(&self.text));
        if index.len != self.text.len() {
            let before = &self.text[..offset];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            return (line, before[line_start..].chars().count() + 1);
        }
        let line = index.starts.partition_point(|&(s, _)| s <= offset);
        let (start, ascii) = index.starts[line - 1];
        let col = if ascii {
            offset - start
        } else {
            self.text[start..offset].chars().count()
        };
        (line, col + 1)
    }

    /// `file:line:col: message` for one diagnostic: the one-line form tools grep.
    pub fn locate(&self, d: &Diagnostic) -> String {
        let (line, col) = self.line_col(d.span.start);
        format!("{}:{}:{}: {}", self.name, line, col, d.message)
    }

    /// Renders diagnostics the way rustc does: location, the source line, the
    /// span underlined, labels and hints. `color` selects ANSI colours.
    pub fn render(&self, diagnostics: &[Diagnostic], color: bool) -> String {
        let file = SimpleFile::new(self.name.as_str(), self.text.as_str());
        let config = term::Config::default();
        let mut out: Vec<u8> = Vec::new();
        for d in diagnostics {
            let cs = to_codespan(d, self.text.len());
            let result = if color {
                let mut w = termcolor::Ansi::new(&mut out);
                term::emit_to_write_style(&mut w, &config, &file, &cs)
            } else {
                let mut w = termcolor::NoColor::new(&mut out);
                term::emit_to_write_style(&mut w, &config, &file, &cs)
            };
            if result.is_err() {
                // Rendering fails only on spans outside the text; fall back to
                // the one-line form rather than losing the error.
                out.extend_from_slice(self.locate(d).as_bytes());
                out.push(b'\n');
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn clamp(span: Span, len: usize) -> std::ops::Range<usize> {
    let start = span.start.min(len);
    start..span.end.clamp(start, len)
}

fn to_codespan(d: &Diagnostic, len: usize) -> CsDiagnostic<()> {
    let code = match d.kind {
        ErrorKind::Syntax => "syntax",
        ErrorKind::UnknownName => "unknown-name",
        ErrorKind::DuplicateName => "duplicate-name",
        ErrorKind::ShapeMismatch => "shape",
        ErrorKind::TypeMismatch => "type",
        ErrorKind::BadArgument => "argument",
        ErrorKind::MissingLoss => "missing-loss",
        ErrorKind::Invalid => "invalid",
        ErrorKind::Internal => "internal",
    };
    let mut labels = vec![Label::primary((), clamp(d.span, len)).with_message(&d.label)];
    for (span, text) in &d.notes {
        labels.push(Label::secondary((), clamp(*span, len)).with_message(text));
    }
    let mut cs = CsDiagnostic::error()
        .with_message(&d.message)
        .with_code(code)
        .with_labels(labels);
    if let Some(help) = &d.help {
        cs = cs.with_notes(vec![format!("help: {help}")]);
    }
    cs
}
