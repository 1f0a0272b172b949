//! Reader for numeric CSV files: feature columns plus one label column.
//!
//! Small on purpose (no csv crate): fields are separated by one delimiter
//! byte, may be wrapped in double quotes (with `""` as an escaped quote), and
//! are trimmed of surrounding whitespace. Blank lines are skipped but still
//! counted, so every error points at the real `file:line:column` of the
//! offending field, the way a compiler points at source.
//!
//! Every feature must be a finite number: a NaN or an empty field in the
//! training data is a data bug that would otherwise show up, much later, as a
//! NaN loss.

use std::collections::BTreeMap;
use std::path::Path;

use super::{DataError, Dataset, Labels};

/// Which column holds the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelColumn {
    /// 0-based column index.
    Index(usize),
    /// Column named in the header row (requires a header).
    Name(String),
    /// The last column (the common layout).
    Last,
}

/// Whether the first row is a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A header iff some non-label field of the first row is not a number.
    Auto,
    /// The first row is a header.
    Present,
    /// Every row is data.
    Absent,
}

/// How to interpret the label column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    /// Non-negative integer class indices (`3` or `3.0`); `num_classes` is max + 1.
    Class,
    /// Arbitrary strings (e.g. `setosa`), numbered in sorted order; the names
    /// are returned in [`CsvData::class_names`].
    ClassName,
    /// A real-valued regression target.
    Target,
}

/// How to read a CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Label column.
    pub label: LabelColumn,
    /// Header handling.
    pub header: Header,
    /// Field separator byte (`b','`, `b';'`, `b'\t'`).
    pub delimiter: u8,
    /// Label interpretation.
    pub label_kind: LabelKind,
}

impl Default for CsvOptions {
    /// Comma-separated, header auto-detected, integer class in the last column.
    fn default() -> Self {
        CsvOptions {
            label: LabelColumn::Last,
            header: Header::Auto,
            delimiter: b',',
            label_kind: LabelKind::Class,
        }
    }
}

/// A parsed CSV file.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvData {
    /// Features `[n, columns - 1]` and labels.
    pub dataset: Dataset,
    /// Header names of the feature columns, when there was a header.
    pub feature_names: Option<Vec<String>>,
    /// For [`LabelKind::ClassName`]: the name of class `i` at index `i`.
    pub class_names: Option<Vec<String>>,
}

/// Reads and parses a CSV file.
pub fn read_csv(path: impl AsRef<Path>, opts: &CsvOptions) -> Result<CsvData, DataError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_csv(&text, path, opts)
}

/// One field: its text (unquoted, trimmed) and 1-based start column.
struct Field {
    text: String,
    column: usize,
}

/// Splits one line into fields; errors carry the column of the problem.
fn split_line(line: &str, delim: char) -> Result<Vec<Field>, (usize, String)> {
    let chars: Vec<char> = line.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        // Skip leading whitespace (but not the delimiter itself, e.g. tab).
        while i < chars.len() && chars[i] != delim && chars[i].is_whitespace() {
            i += 1;
        }
        let column = i + 1;
        let mut text = String::new();
        if i < chars.len() && chars[i] == '"' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err((column, "unterminated quoted field".into())),
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        text.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        text.push(c);
                        i += 1;
                    }
                }
            }
            while i < chars.len() && chars[i] != delim {
                if !chars[i].is_whitespace() {
                    return Err((i + 1, "unexpected text after a closing quote".into()));
                }
                i += 1;
            }
        } else {
            while i < chars.len() && chars[i] != delim {
                text.push(chars[i]);
                i += 1;
            }
            text.truncate(text.trim_end().len());
        }
        fields.push(Field { text, column });
        if i >= chars.len() {
            return Ok(fields);
        }
        i += 1; // the delimiter
    }
}

fn parse_number(text: &str) -> Result<f64, String> {
    if text.is_empty() {
        return Err("empty field where a number is expected".into());
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("`{text}` is not a finite number")),
        Err(_) => Err(format!("`{text}` is not a number")),
    }
}

/// A class index: a non-negative integer, also when written as a float
/// (`3.0`, as pandas exports integer columns that once held a NaN).
fn parse_class(text: &str) -> Option<u32> {
    if let Ok(v) = text.parse::<u32>() {
        return Some(v);
    }
    let v = text.parse::<f64>().ok()?;
    (v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v)).then_some(v as u32)
}

/// Parses CSV text; `path` names the source in errors.
pub fn parse_csv(text: &str, path: &Path, opts: &CsvOptions) -> Result<CsvData, DataError> {
    let err = |line: usize, column: usize, reason: String| DataError::Csv {
        path: path.to_path_buf(),
        line,
        column,
        reason,
    };
    let delim = opts.delimiter as char;
    let mut rows: Vec<(usize, Vec<Field>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = if i == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_line(line, delim).map_err(|(c, r)| err(i + 1, c, r))?;
        rows.push((i + 1, fields));
    }
    let Some((first_line, first)) = rows.first() else {
        return Err(DataError::File {
            path: path.to_path_buf(),
            reason: "no rows".into(),
        });
    };
    let width = first.len();
    if width < 2 {
        return Err(err(
            *first_line,
            1,
            format!("need at least 2 columns (features and a label), found {width}"),
        ));
    }
    let label_col = match &opts.label {
        LabelColumn::Index(i) if *i < width => *i,
        LabelColumn::Index(i) => {
            return Err(err(
                *first_line,
                1,
                format!("label column index {i} but rows have {width} columns"),
            ))
        }
        LabelColumn::Last => width - 1,
        LabelColumn::Name(name) => {
            if opts.header == Header::Absent {
                return Err(DataError::File {
                    path: path.to_path_buf(),
                    reason: format!("label column `{name}` given by name but header is absent"),
                });
            }
            first.iter().position(|f| f.text == *name).ok_or_else(|| {
                err(
                    *first_line,
                    1,
                    format!("no column named `{name}` in the header"),
                )
            })?
        }
    };
    let has_header = match opts.header {
        Header::Present => true,
        Header::Absent => false,
        Header::Auto => {
            matches!(opts.label, LabelColumn::Name(_))
                || first
                    .iter()
                    .enumerate()
                    .any(|(c, f)| c != label_col && parse_number(&f.text).is_err())
        }
    };
    let feature_names = has_header.then(|| {
        first
            .iter()
            .enumerate()
            .filter(|(c, _)| *c != label_col)
            .map(|(_, f)| f.text.clone())
            .collect()
    });
    let data_rows = if has_header { &rows[1..] } else { &rows[..] };
    if data_rows.is_empty() {
        return Err(DataError::File {
            path: path.to_path_buf(),
            reason: "header but no data rows".into(),
        });
    }

    let mut features = Vec::with_capacity(data_rows.len() * (width - 1));
    let mut raw_labels: Vec<&str> = Vec::with_capacity(data_rows.len());
    let mut classes = Vec::new();
    let mut targets = Vec::new();
    for (line, fields) in data_rows {
        if fields.len() != width {
            let column = fields.last().map_or(1, |f| f.column);
            return Err(err(
                *line,
                column,
                format!("row has {} fields, expected {width}", fields.len()),
            ));
        }
        for (c, f) in fields.iter().enumerate() {
            if c == label_col {
                match opts.label_kind {
                    LabelKind::Class => {
                        let v = parse_class(&f.text).ok_or_else(|| {
                            err(
                                *line,
                                f.column,
                                format!("class label `{}` is not a non-negative integer", f.text),
                            )
                        })?;
                        classes.push(v);
                    }
                    LabelKind::ClassName => {
                        if f.text.is_empty() {
                            return Err(err(*line, f.column, "empty class name".into()));
                        }
                        raw_labels.push(&f.text);
                    }
                    LabelKind::Target => {
                        let v = parse_number(&f.text).map_err(|r| err(*line, f.column, r))?;
                        targets.push(v as f32);
                    }
                }
            } else {
                let v = parse_number(&f.text).map_err(|r| err(*line, f.column, r))?;
                features.push(v as f32);
            }
        }
    }

    let mut class_names = None;
    let labels = match opts.label_kind {
        LabelKind::Class => Labels::Classes {
            num_classes: classes.iter().max().map_or(0, |&m| m as usize + 1),
            values: classes,
        },
        LabelKind::Target => Labels::Targets {
            values: targets,
            width: 1,
        },
        LabelKind::ClassName => {
            let ids: BTreeMap<&str, u32> = {
                let mut names: Vec<&str> = raw_labels.clone();
                names.sort_unstable();
                names.dedup();
                names.into_iter().zip(0..).collect()
            };
            class_names = Some(ids.keys().map(|s| s.to_string()).collect());
            Labels::Classes {
                values: raw_labels.iter().map(|s| ids[s]).collect(),
                num_classes: ids.len(),
            }
        }
    };
    let dataset = Dataset::new(features, vec![width - 1], labels)?;
    Ok(CsvData {
        dataset,
        feature_names,
        class_names,
    })
}
