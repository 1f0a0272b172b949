//! Reading CSV files into named columns.
//!
//! Records are read one at a time by the `csv` crate (quotes, escaped
//! quotes, CRLF, a UTF-8 byte-order mark), so the file is never held in
//! memory as text: only the parsed columns are. Fields are trimmed of
//! surrounding whitespace; blank lines are skipped. Every error points at
//! the real `file:line:column` of the offending field, the way a compiler
//! points at source.
//!
//! What goes where is a [`CsvOptions`] mapping: each named column of the
//! dataset takes one or more CSV columns, chosen by header name, index or
//! range, read as numbers or as classes. Without a mapping the last column
//! is the label `label` (classes) and every other column the input
//! `features`, which the model's one input and one label take (see
//! [`super::bind`]).
//!
//! Numbers must be finite in `f32`: a NaN, an empty field or a value such
//! as `1e39` that overflows `f32` is a data bug that would otherwise show
//! up much later as a NaN loss, so it is an error at its position. Classes
//! are non-negative integers (also written `3.0`, as pandas exports integer
//! columns that once held a NaN) or names (`setosa`), numbered in sorted
//! order unless the names are given (a test file must number its classes
//! as the training file did).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use super::dataset::{Column, CsvFields, Dataset, Origin};
use super::DataError;

/// Which CSV columns feed a dataset column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// One column by 0-based index.
    Index(usize),
    /// One column by its header name.
    Name(String),
    /// Columns `start..end` by 0-based index.
    Range(Range<usize>),
    /// Columns by header name, in this order.
    Names(Vec<String>),
    /// Every column no other mapping takes, in file order.
    Rest,
}

impl From<&str> for Select {
    fn from(name: &str) -> Self {
        Select::Name(name.to_string())
    }
}

impl From<usize> for Select {
    fn from(i: usize) -> Self {
        Select::Index(i)
    }
}

impl From<Range<usize>> for Select {
    fn from(r: Range<usize>) -> Self {
        Select::Range(r)
    }
}

/// How the fields of a mapped column are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAs {
    /// Finite `f32` numbers.
    Numbers,
    /// Classes: integers when every field is one (the class count is the
    /// largest plus one), else names numbered in sorted order.
    Classes,
    /// Classes named by this list (`names[i]` is class `i`); any other
    /// name is an error. Integers are read as indices below its length.
    ClassesNamed(Arc<[String]>),
    /// Not read at all (a label column `predict` does not need).
    Skip,
}

/// One named column of the dataset and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The dataset column's name (matched to a model input's name).
    pub name: String,
    /// The CSV columns it takes.
    pub select: Select,
    /// How they are read.
    pub read: ReadAs,
}

/// Whether the first row is a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A header iff some field of the first row that should be a number is
    /// not one (always, when a mapping selects by name).
    Auto,
    /// The first row is a header.
    Present,
    /// Every row is data.
    Absent,
}

/// How to read a CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Header handling.
    pub header: Header,
    /// Field separator byte (`b','`, `b';'`, `b'\t'`).
    pub delimiter: u8,
    /// The dataset's columns; empty means "the last column is the label
    /// `label`, the rest the input `features`".
    pub columns: Vec<Mapping>,
}

impl Default for CsvOptions {
    /// Comma-separated, header auto-detected, the default mapping.
    fn default() -> Self {
        CsvOptions {
            header: Header::Auto,
            delimiter: b',',
            columns: Vec::new(),
        }
    }
}

impl CsvOptions {
    /// The defaults: see [`CsvOptions::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a column of numbers named `name` from `select`.
    pub fn numbers(mut self, name: &str, select: impl Into<Select>) -> Self {
        self.columns.push(Mapping {
            name: name.to_string(),
            select: select.into(),
            read: ReadAs::Numbers,
        });
        self
    }

    /// Adds a class column named `name` from `select`.
    pub fn classes(mut self, name: &str, select: impl Into<Select>) -> Self {
        self.columns.push(Mapping {
            name: name.to_string(),
            select: select.into(),
            read: ReadAs::Classes,
        });
        self
    }

    /// Takes the columns `select` out of the rest without reading them.
    pub fn skip(mut self, select: impl Into<Select>) -> Self {
        self.columns.push(Mapping {
            name: String::new(),
            select: select.into(),
            read: ReadAs::Skip,
        });
        self
    }

    /// Adds a class column whose class names are `names`, in index order.
    pub fn classes_named(
        mut self,
        name: &str,
        select: impl Into<Select>,
        names: Arc<[String]>,
    ) -> Self {
        self.columns.push(Mapping {
            name: name.to_string(),
            select: select.into(),
            read: ReadAs::ClassesNamed(names),
        });
        self
    }

    /// The same options with another delimiter.
    pub fn delimiter(mut self, d: u8) -> Self {
        self.delimiter = d;
        self
    }

    /// The same options with a header setting.
    pub fn header(mut self, h: Header) -> Self {
        self.header = h;
        self
    }

    /// The mapping used: the given one, or the default.
    /// The mapping in force (the default one when none is given).
    pub(crate) fn mapping(&self) -> Vec<Mapping> {
        if !self.columns.is_empty() {
            return self.columns.clone();
        }
        vec![
            Mapping {
                name: "label".into(),
                select: Select::Index(usize::MAX),
                read: ReadAs::Classes,
            },
            Mapping {
                name: "features".into(),
                select: Select::Rest,
                read: ReadAs::Numbers,
            },
        ]
    }
}

/// A mapping resolved against the file: the CSV column indices it takes.
struct Resolved {
    map: Mapping,
    cols: Vec<usize>,
}

/// Reads a CSV file into a dataset (see the [module docs](self)).
pub fn read_csv(path: impl AsRef<Path>, opts: &CsvOptions) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|error| DataError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    read_whole(BufReader::new(file), path, opts, Source::File)
}

/// Reads a CSV file in blocks of `rows` rows, handing each to `sink` as a
/// dataset as soon as it is parsed, so the file is never held. Class
/// columns are numbered per block unless the mapping names their classes
/// ([`ReadAs::ClassesNamed`]); errors point at the file's lines as
/// [`read_csv`]'s do.
pub fn read_csv_blocks(
    path: impl AsRef<Path>,
    opts: &CsvOptions,
    rows: usize,
    sink: &mut dyn FnMut(Dataset) -> Result<(), DataError>,
) -> Result<(), DataError> {
    read_blocks(path.as_ref(), opts, rows, Fields::All, sink)
}

/// [`read_csv_blocks`], parsing only `fields`.
pub(super) fn read_blocks(
    path: &Path,
    opts: &CsvOptions,
    rows: usize,
    fields: Fields,
    sink: &mut dyn FnMut(Dataset) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file = File::open(path).map_err(|error| DataError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    read(
        BufReader::with_capacity(1 << 20, file),
        path,
        opts,
        Source::File,
        rows.max(1),
        fields,
        sink,
    )
}

/// Parses CSV text; `path` names it in errors.
pub fn parse_csv(text: &str, path: &Path, opts: &CsvOptions) -> Result<Dataset, DataError> {
    parse_csv_bytes(text.as_bytes(), path, opts)
}

/// Parses a CSV file's bytes held in memory, as [`read_csv`] reads the
/// file (invalid UTF-8 included); `path` names it in errors, which name
/// lines and columns as [`read_csv`]'s do. The fuzz target's entry point:
/// no file per input.
pub fn parse_csv_bytes(bytes: &[u8], path: &Path, opts: &CsvOptions) -> Result<Dataset, DataError> {
    read_whole(bytes, path, opts, Source::Bytes(bytes))
}

/// The whole input as one block.
fn read_whole(
    reader: impl Read,
    path: &Path,
    opts: &CsvOptions,
    src: Source<'_>,
) -> Result<Dataset, DataError> {
    let mut out = None;
    let mut keep = |d| {
        out = Some(d);
        Ok(())
    };
    read(reader, path, opts, src, usize::MAX, Fields::All, &mut keep)?;
    Ok(out.unwrap_or_default())
}

/// Which fields a read parses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fields {
    /// Every mapped field.
    All,
    /// Only class fields: number columns are checked for their width but
    /// neither parsed nor returned (the first pass of a conversion, which
    /// only needs the class names).
    ClassesOnly,
}

fn read(
    reader: impl Read,
    path: &Path,
    opts: &CsvOptions,
    src: Source<'_>,
    block: usize,
    fields: Fields,
    sink: &mut dyn FnMut(Dataset) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let newlines = Rc::new(RefCell::new(Newlines::default()));
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(opts.delimiter)
        .from_reader(Counting {
            inner: reader,
            offset: 0,
            newlines: newlines.clone(),
        });
    // Fields are trimmed here, not by the csv crate: its `Trim::All`
    // builds a new record for every row.
    // The csv crate's line numbers skip blank lines, and a record's start
    // offset includes the blank lines before it; the reader's offset after
    // the record is past its terminator, and the newlines before that
    // terminator give the record's real line.
    let line_at = |end: u64| newlines.borrow_mut().line_of(end.saturating_sub(1));
    let line_of = |pos: &::csv::Position| newlines.borrow_mut().line_of(pos.byte());
    let at = |line: u64, field: Option<usize>, reason: String| DataError::Csv {
        path: path.to_path_buf(),
        line: line as usize,
        column: field.map_or(1, |f| src.column(path, line as usize, f, opts.delimiter)),
        reason,
    };
    let csv_err = |e: ::csv::Error| match e.position() {
        Some(p) => at(line_of(p), None, e.to_string()),
        None => DataError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    };

    let mut record = ::csv::ByteRecord::new();
    if !rdr.read_byte_record(&mut record).map_err(csv_err)? {
        return Err(DataError::File {
            path: path.to_path_buf(),
            reason: "no rows".into(),
        });
    }
    let first_line = line_at(rdr.position().byte());
    let width = record.len();
    let first: Vec<String> = record
        .iter()
        .map(|f| String::from_utf8_lossy(f.trim_ascii()).into_owned())
        .collect();
    let mapping = opts.mapping();
    let by_name = mapping
        .iter()
        .any(|m| matches!(m.select, Select::Name(_) | Select::Names(_)));
    let header_names = (opts.header != Header::Absent).then_some(first.as_slice());
    let resolved = resolve(&mapping, width, header_names, by_name)
        .map_err(|reason| at(first_line, None, reason))?;
    let has_header = match opts.header {
        Header::Present => true,
        Header::Absent => false,
        Header::Auto => {
            by_name
                || resolved.iter().any(|r| {
                    r.map.read == ReadAs::Numbers
                        && r.cols.iter().any(|&c| number(&first[c]).is_err())
                })
        }
    };

    // Parse every row into per-column buffers.
    let mut numbers: Vec<Vec<f32>> = resolved.iter().map(|_| Vec::new()).collect();
    let mut raw: Vec<Vec<String>> = resolved.iter().map(|_| Vec::new()).collect();
    let mut lines: Vec<u32> = Vec::new();
    let row_data = |record: &::csv::ByteRecord,
                    line: u64,
                    numbers: &mut [Vec<f32>],
                    raw: &mut [Vec<String>],
                    lines: &mut Vec<u32>|
     -> Result<(), DataError> {
        if record.len() != width {
            return Err(at(
                line,
                Some(record.len().saturating_sub(1)),
                format!("row has {} fields, expected {width}", record.len()),
            ));
        }
        let utf8 = |c: usize, bytes| {
            std::str::from_utf8(bytes).map_err(|_| at(line, Some(c), "field is not UTF-8".into()))
        };
        for (k, r) in resolved.iter().enumerate() {
            match r.map.read {
                ReadAs::Skip => {}
                ReadAs::Numbers if fields == Fields::ClassesOnly => {}
                ReadAs::Numbers => {
                    let out = &mut numbers[k];
                    for &c in &r.cols {
                        let bytes = record[c].trim_ascii();
                        let v = match fast_number(bytes) {
                            Some(v) => v,
                            None => number(utf8(c, bytes)?).map_err(|e| at(line, Some(c), e))?,
                        };
                        out.push(v);
                    }
                }
                ReadAs::Classes | ReadAs::ClassesNamed(_) => {
                    for &c in &r.cols {
                        let text = utf8(c, record[c].trim_ascii())?;
                        if text.is_empty() {
                            return Err(at(line, Some(c), "empty class".into()));
                        }
                        raw[k].push(text.to_string());
                    }
                }
            }
        }
        lines.push(u32::try_from(line).unwrap_or(u32::MAX));
        Ok(())
    };
    let ctx = BlockContext {
        path,
        opts,
        src,
        has_header,
        first: &first,
        fields,
    };
    let columns =
        |resolved: &[Resolved],
         numbers: &mut [Vec<f32>],
         raw: &mut [Vec<String>],
         lines: Vec<u32>| { block_columns(resolved, numbers, raw, lines, &ctx) };
    let mut total = 0usize;
    if !has_header {
        row_data(&record, first_line, &mut numbers, &mut raw, &mut lines)?;
    }
    while rdr.read_byte_record(&mut record).map_err(csv_err)? {
        row_data(
            &record,
            line_at(rdr.position().byte()),
            &mut numbers,
            &mut raw,
            &mut lines,
        )?;
        if lines.len() >= block {
            total += lines.len();
            let sizes: Vec<usize> = numbers.iter().map(Vec::len).collect();
            sink(columns(
                &resolved,
                &mut numbers,
                &mut raw,
                std::mem::take(&mut lines),
            )?)?;
            // The next block is as large: no regrowing from empty.
            for (n, size) in numbers.iter_mut().zip(sizes) {
                n.reserve(size);
            }
            lines.reserve(block);
        }
    }
    if total + lines.len() == 0 {
        return Err(DataError::File {
            path: path.to_path_buf(),
            reason: "a header but no data rows".into(),
        });
    }
    if !lines.is_empty() {
        sink(columns(&resolved, &mut numbers, &mut raw, lines)?)?;
    }
    Ok(())
}

#[path = "csv_columns.rs"]
mod columns;
use columns::{block_columns, BlockContext};

/// Resolves the mapping's selections to column indices: every index in
/// range, no CSV column taken twice, `Rest` taking what is left.
fn resolve(
    mapping: &[Mapping],
    width: usize,
    header: Option<&[String]>,
    by_name: bool,
) -> Result<Vec<Resolved>, String> {
    let find = |name: &str| -> Result<usize, String> {
        let Some(h) = header.filter(|_| by_name) else {
            return Err(format!(
                "column `{name}` is chosen by name, but the file has no header"
            ));
        };
        h.iter()
            .position(|f| f == name)
            .ok_or_else(|| format!("no column named `{name}` in the header ({})", h.join(", ")))
    };
    let mut taken = vec![false; width];
    let mut out: Vec<Option<Vec<usize>>> = Vec::new();
    for m in mapping {
        let cols = match &m.select {
            Select::Index(usize::MAX) => Some(vec![width - 1]),
            Select::Index(i) if *i < width => Some(vec![*i]),
            Select::Index(i) => {
                return Err(format!(
                    "column index {i} for `{}`, but rows have {width} columns",
                    m.name
                ))
            }
            Select::Range(r) if r.start < r.end && r.end <= width => Some(r.clone().collect()),
            Select::Range(r) => {
                return Err(format!(
                    "columns {}..{} for `{}`, but rows have {width} columns",
                    r.start, r.end, m.name
                ))
            }
            Select::Name(n) => Some(vec![find(n)?]),
            Select::Names(ns) => Some(ns.iter().map(|n| find(n)).collect::<Result<_, _>>()?),
            Select::Rest => None,
        };
        if let Some(cols) = &cols {
            for &c in cols {
                if std::mem::replace(&mut taken[c], true) {
                    return Err(format!(
                        "column {c} is mapped twice (again for `{}`)",
                        m.name
                    ));
                }
            }
        }
        out.push(cols);
    }
    let rest: Vec<usize> = (0..width).filter(|&c| !taken[c]).collect();
    let mut rest_used = false;
    let mut resolved = Vec::new();
    for (m, cols) in mapping.iter().zip(out) {
        let cols = match cols {
            Some(c) => c,
            None if rest_used => return Err("two mappings take the rest of the columns".into()),
            None => {
                rest_used = true;
                rest.clone()
            }
        };
        if cols.is_empty() {
            return Err(format!("no columns are left for `{}`", m.name));
        }
        resolved.push(Resolved {
            map: m.clone(),
            cols,
        });
    }
    Ok(resolved)
}

/// "column 5 (`species`)" or "columns 1-4": 1-based, as a spreadsheet shows.
fn describe_part(cols: &[usize], header: Option<&[String]>) -> String {
    let contiguous = cols.windows(2).all(|w| w[1] == w[0] + 1);
    match (cols, header) {
        ([c], Some(h)) => format!("column {} `{}`", c + 1, h[*c]),
        ([c], None) => format!("column {}", c + 1),
        _ if contiguous => format!("columns {}-{}", cols[0] + 1, cols[cols.len() - 1] + 1),
        _ => {
            let list: Vec<String> = cols.iter().map(|c| (c + 1).to_string()).collect();
            format!("columns {}", list.join(", "))
        }
    }
}

/// A finite `f32`.
fn number(text: &str) -> Result<f32, String> {
    if text.is_empty() {
        return Err("empty field where a number is expected".into());
    }
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) if text.parse::<f64>().is_ok_and(f64::is_finite) => Err(format!(
            "`{text}` is beyond the range of f32 (about ±3.4e38)"
        )),
        Ok(_) => Err(format!("`{text}` is not a finite number")),
        Err(_) => Err(format!("`{text}` is not a number")),
    }
}

/// Powers of ten exact in `f32` (5^10 < 2^24).
const POW10: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// The common case of [`number`] without its generality: `[+-]digits[.digits]`
/// whose digits, read as an integer `m` with `f` of them after the point,
/// satisfy `m <= 2^24` and `f <= 10`. Then `m` and `10^f` are exact in
/// `f32` and one correctly rounded division gives the correctly rounded
/// value, the same bits as `str::parse` (Clinger's fast path). `None`
/// sends anything else (exponents, long mantissas, non-numbers) to
/// [`number`].
fn fast_number(bytes: &[u8]) -> Option<f32> {
    let (negative, digits) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, bytes),
    };
    let (mut m, mut frac, mut seen, mut point) = (0u32, 0usize, false, false);
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                m = m.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
                frac += usize::from(point);
                seen = true;
            }
            b'.' if !point => point = true,
            _ => return None,
        }
    }
    if !seen || m > 1 << 24 || frac >= POW10.len() {
        return None;
    }
    let v = m as f32 / POW10[frac];
    Some(if negative { -v } else { v })
}

/// Where the CSV text is, to find a bad field's column on the error path.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Re-read the file.
    File,
    /// The bytes themselves.
    Bytes(&'a [u8]),
}

impl Source<'_> {
    /// The 1-based character column of field `field` on line `line`.
    fn column(self, path: &Path, line: usize, field: usize, delim: u8) -> usize {
        match self {
            Source::Bytes(b) => line_column(b, line, field, delim),
            Source::File => field_column(path, line, field, delim),
        }
        .unwrap_or(1)
    }
}

/// The 1-based character column of field `field` on line `line` of the
/// file at `path`, re-read for an error message; `None` when the line
/// cannot be read (the file changed or went away).
pub(super) fn field_column(path: &Path, line: usize, field: usize, delim: u8) -> Option<usize> {
    line_column(BufReader::new(File::open(path).ok()?), line, field, delim)
}

/// [`field_column`] in any text: `None` when line `line` is missing or is
/// not UTF-8.
fn line_column(text: impl BufRead, line: usize, field: usize, delim: u8) -> Option<usize> {
    let text = text.lines().nth(line.checked_sub(1)?)?.ok()?;
    Some(column_in_line(&text, field, delim))
}

/// Where field `field` starts in `line` (after leading blanks): quote
/// aware, 1-based, in characters. Only used on the error path.
fn column_in_line(line: &str, field: usize, delim: u8) -> usize {
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    let chars: Vec<char> = line.chars().collect();
    let delim = delim as char;
    let (mut k, mut i, mut quoted) = (0, 0, false);
    while k < field && i < chars.len() {
        match chars[i] {
            '"' => quoted = !quoted,
            c if c == delim && !quoted => k += 1,
            _ => {}
        }
        i += 1;
    }
    while i < chars.len() && chars[i] != delim && chars[i].is_whitespace() {
        i += 1;
    }
    i + 1
}

/// The offsets of the newlines a reader has passed on and not yet been
/// asked about: only those inside the csv reader's buffer, so bounded.
#[derive(Default)]
struct Newlines {
    pending: VecDeque<u64>,
    /// Newlines before the last offset asked about.
    passed: u64,
}

impl Newlines {
    /// The 1-based line of byte `offset` (offsets asked in increasing order).
    fn line_of(&mut self, offset: u64) -> u64 {
        while self.pending.front().is_some_and(|&n| n < offset) {
            self.pending.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

/// A reader that records where its newlines are.
struct Counting<R> {
    inner: R,
    offset: u64,
    newlines: Rc<RefCell<Newlines>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut nl = self.newlines.borrow_mut();
        for i in memchr::memchr_iter(b'\n', &buf[..n]) {
            nl.pending.push_back(self.offset + i as u64);
        }
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "csv_tests.rs"]
mod tests;
