//! An in-memory dataset: named columns, one row per sample.
//!
//! A column is a tensor per sample (`shape`, without the batch dimension)
//! of real numbers or of class indices, plus where it came from, so an
//! error about it can name the file and the columns. Columns are matched to
//! a model's inputs and labels by name (see [`super::bind`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::DataError;
use crate::rng::Rng;

/// The values of a column, all samples row after row.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Real numbers: features, regression targets, binary targets (token
    /// ids written as whole numbers are accepted too).
    F32(Vec<f32>),
    /// Class indices, each below `classes`: labels, or token ids.
    Classes {
        /// The indices.
        values: Vec<u32>,
        /// How many classes there are (at least one more than the largest index).
        classes: u32,
        /// The name of class `i` at index `i`, when the data named its
        /// classes (`setosa`, …) rather than numbering them.
        names: Option<Arc<[String]>>,
    },
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::Classes { values, .. } => values.len(),
        }
    }

    /// "real numbers" or "class indices", for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Values::F32(_) => "real numbers",
            Values::Classes { .. } => "class indices",
        }
    }

    fn select(&self, rows: &[usize], width: usize) -> Values {
        fn pick<T: Copy>(v: &[T], rows: &[usize], w: usize) -> Vec<T> {
            let mut out = Vec::with_capacity(rows.len() * w);
            for &r in rows {
                out.extend_from_slice(&v[r * w..(r + 1) * w]);
            }
            out
        }
        match self {
            Values::F32(v) => Values::F32(pick(v, rows, width)),
            Values::Classes {
                values,
                classes,
                names,
            } => Values::Classes {
                values: pick(values, rows, width),
                classes: *classes,
                names: names.clone(),
            },
        }
    }
}

/// Where a column came from, for error messages: the file, which of its
/// columns, and (for text files) the line each row was read from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    /// The file; `None` for data made in memory.
    pub file: Option<PathBuf>,
    /// Which part of the file, e.g. "column 5 (`species`)" or "columns
    /// 1-4"; empty when the file holds only this column.
    pub part: String,
    /// The 1-based line of each row, when rows come from lines of text.
    pub lines: Option<Arc<[u32]>>,
    /// The header names of the file's columns this column holds, in
    /// order, when the file has a header (attributions name features by
    /// them).
    pub fields: Option<Arc<[String]>>,
    /// For a column read from a CSV file: where its fields are, so an
    /// error about one value can name its `file:line:col`.
    pub csv: Option<CsvFields>,
}

/// Where a column's fields sit in the CSV file it was read from. The
/// character column of a field is found on the error path only, by
/// re-reading its one line, so reading keeps no per-field positions.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvFields {
    /// The file's 0-based column of each of the column's values in a row.
    pub columns: Arc<[usize]>,
    /// The field delimiter.
    pub delimiter: u8,
}

impl Origin {
    /// A column read from `file`, described by `part`.
    pub fn file(file: impl Into<PathBuf>, part: impl Into<String>) -> Self {
        Origin {
            file: Some(file.into()),
            part: part.into(),
            lines: None,
            fields: None,
            csv: None,
        }
    }

    /// Where row `row` (0-based) of the column is, for a message:
    /// `file:line` when lines are known, else `file, row N`.
    pub fn row(&self, row: usize) -> String {
        let line = self
            .lines
            .as_ref()
            .and_then(|l| l.get(row))
            .map(|&l| l as usize);
        match (&self.file, line) {
            (Some(f), Some(line)) => format!("{}:{line}", f.display()),
            (Some(f), None) => format!("{}, row {}", f.display(), row + 1),
            (None, _) => format!("row {}", row + 1),
        }
    }

    /// Where value `k` of row `row` (both 0-based) is, for a message:
    /// `file:line:col` for a column read from a CSV file, else as
    /// [`Origin::row`].
    pub fn field(&self, row: usize, k: usize) -> String {
        let line = self
            .lines
            .as_ref()
            .and_then(|l| l.get(row))
            .map(|&l| l as usize);
        let at = match (&self.file, line, &self.csv) {
            (Some(f), Some(line), Some(csv)) => csv
                .columns
                .get(k)
                .and_then(|&c| super::csv::field_column(f, line, c, csv.delimiter))
                .map(|col| format!("{}:{line}:{col}", f.display())),
            _ => None,
        };
        at.unwrap_or_else(|| self.row(row))
    }

    fn select(&self, rows: &[usize]) -> Origin {
        Origin {
            file: self.file.clone(),
            part: self.part.clone(),
            lines: self
                .lines
                .as_ref()
                .map(|l| rows.iter().map(|&r| l[r]).collect()),
            fields: self.fields.clone(),
            csv: self.csv.clone(),
        }
    }
}

impl std::fmt::Display for Origin {
    /// `file (part)`, `file`, `part`, or "data in memory".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.part.is_empty()) {
            (Some(file), true) => write!(f, "{}", file.display()),
            (Some(file), false) => write!(f, "{} ({})", file.display(), self.part),
            (None, false) => f.write_str(&self.part),
            (None, true) => f.write_str("data in memory"),
        }
    }
}

/// One named tensor per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    name: String,
    shape: Vec<usize>,
    values: Values,
    origin: Origin,
}

impl Column {
    /// A column of real numbers, `shape` values per sample (`[]` is one).
    pub fn f32(name: impl Into<String>, shape: &[usize], values: Vec<f32>) -> Self {
        Column {
            name: name.into(),
            shape: shape.to_vec(),
            values: Values::F32(values),
            origin: Origin::default(),
        }
    }

    /// A column of class indices below `classes`, `shape` per sample.
    pub fn classes(
        name: impl Into<String>,
        shape: &[usize],
        values: Vec<u32>,
        classes: u32,
    ) -> Self {
        Column {
            name: name.into(),
            shape: shape.to_vec(),
            values: Values::Classes {
                values,
                classes,
                names: None,
            },
            origin: Origin::default(),
        }
    }

    /// The same column with class names (`names[i]` names class `i`);
    /// ignored for real-valued columns.
    pub fn with_class_names(mut self, names: Vec<String>) -> Self {
        if let Values::Classes { names: n, .. } = &mut self.values {
            *n = Some(names.into());
        }
        self
    }

    /// The same column, recorded as coming from `origin`.
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// The same column under another name.
    pub fn renamed(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same values viewed with another per-sample shape of equal size
    /// (MNIST's `[28, 28]` as `[784]`).
    pub fn reshaped(mut self, shape: &[usize]) -> Result<Self, DataError> {
        if shape.iter().product::<usize>() != self.width() {
            return Err(DataError::Invalid(format!(
                "cannot view column `{}` of shape {:?} as {shape:?}",
                self.name, self.shape
            )));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// The column's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Shape of one sample's values.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Values per sample.
    pub fn width(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values.
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// Where the column came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The class count of a class column.
    pub fn classes_count(&self) -> Option<u32> {
        match &self.values {
            Values::Classes { classes, .. } => Some(*classes),
            Values::F32(_) => None,
        }
    }

    /// The class names of a class column that has them.
    pub fn class_names(&self) -> Option<&[String]> {
        match &self.values {
            Values::Classes {
                names: Some(names), ..
            } => Some(names),
            _ => None,
        }
    }

    /// `name` from `origin`, for messages: "column `x` of iris.csv (columns 1-4)".
    pub fn describe(&self) -> String {
        if self.origin == Origin::default() {
            format!("column `{}`", self.name)
        } else {
            format!("column `{}` of {}", self.name, self.origin)
        }
    }

    /// Rows of the column, checking its values; `None` when the values
    /// are not a whole number of samples.
    fn rows(&self) -> Result<usize, DataError> {
        let w = self.width();
        let n = self.values.len();
        if w == 0 {
            return Err(DataError::Invalid(format!(
                "{} has shape {:?}: no values per sample",
                self.describe(),
                self.shape
            )));
        }
        if n % w != 0 {
            return Err(DataError::Invalid(format!(
                "{} has {n} values, not a whole number of samples of {w}",
                self.describe()
            )));
        }
        if let Values::Classes {
            values, classes, ..
        } = &self.values
        {
            if let Some((i, &v)) = values.iter().enumerate().find(|(_, &v)| v >= *classes) {
                return Err(DataError::Invalid(format!(
                    "{}: {} is class {v}, but the column has {classes} classes",
                    self.describe(),
                    self.origin.row(i / w)
                )));
            }
        }
        if let Values::F32(values) = &self.values {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(DataError::Invalid(format!(
                    "{}: {} holds {}, not a finite number",
                    self.describe(),
                    self.origin.row(i / w),
                    values[i]
                )));
            }
        }
        Ok(n / w)
    }

    fn select(&self, rows: &[usize]) -> Column {
        Column {
            name: self.name.clone(),
            shape: self.shape.clone(),
            values: self.values.select(rows, self.width()),
            origin: self.origin.select(rows),
        }
    }
}

/// Named columns of equal row count: the data of a run, matched to a
/// model's inputs and labels by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    rows: usize,
    columns: Vec<Column>,
}

impl Dataset {
    /// The columns' values, to reuse their buffers (a streamed window's,
    /// so the next window is decoded into memory already mapped).
    pub(crate) fn into_values(self) -> Vec<Values> {
        self.columns.into_iter().map(|c| c.values).collect()
    }
}

/// How [`Dataset::split`] chooses the validation samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitMode {
    /// The last fraction of the samples, in file order: reproducible without a
    /// seed and respects files that are already ordered train-then-val.
    Tail,
    /// A seeded random subset; both parts keep the original relative order.
    Shuffled {
        /// Seed of the permutation.
        seed: u64,
    },
}

impl Dataset {
    /// A dataset of these columns; they must have distinct names, equal
    /// row counts, finite real values and class indices in range.
    pub fn new(columns: Vec<Column>) -> Result<Self, DataError> {
        let mut data = Dataset::default();
        for c in columns {
            data.push(c)?;
        }
        Ok(data)
    }

    /// Adds a column (checked as in [`Dataset::new`]).
    pub fn push(&mut self, column: Column) -> Result<(), DataError> {
        let rows = column.rows()?;
        if self.columns.iter().any(|c| c.name == column.name) {
            return Err(DataError::Invalid(format!(
                "two columns are named `{}`",
                column.name
            )));
        }
        if !self.columns.is_empty() && rows != self.rows {
            return Err(DataError::Invalid(format!(
                "{} has {rows} rows, {} has {}",
                column.describe(),
                self.columns[0].describe(),
                self.rows
            )));
        }
        self.rows = rows;
        self.columns.push(column);
        Ok(())
    }

    /// The dataset with one more column.
    pub fn with(mut self, column: Column) -> Result<Self, DataError> {
        self.push(column)?;
        Ok(self)
    }

    /// The dataset with column `from` named `to`.
    pub fn rename(mut self, from: &str, to: &str) -> Result<Self, DataError> {
        if from != to && self.column(to).is_some() {
            return Err(DataError::Invalid(format!(
                "cannot rename `{from}` to `{to}`: a column of that name exists"
            )));
        }
        let c = self.column_index(from)?;
        self.columns[c].name = to.to_string();
        Ok(self)
    }

    /// The dataset with column `name` viewed with another per-sample shape.
    pub fn reshape(mut self, name: &str, shape: &[usize]) -> Result<Self, DataError> {
        let c = self.column_index(name)?;
        let col = self.columns.remove(c);
        self.columns.insert(c, col.reshaped(shape)?);
        Ok(self)
    }

    fn column_index(&self, name: &str) -> Result<usize, DataError> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| {
                DataError::Invalid(format!(
                    "no column named `{name}`; the data has {}",
                    self.column_list()
                ))
            })
    }

    /// "`x` (4 values), `y` (class indices)", for messages.
    pub fn column_list(&self) -> String {
        if self.columns.is_empty() {
            return "no columns".into();
        }
        let list: Vec<String> = self
            .columns
            .iter()
            .map(|c| match c.values {
                Values::F32(_) => format!("`{}` ({} real values)", c.name, c.width()),
                Values::Classes { classes, .. } => {
                    format!("`{}` ({} of {classes} classes)", c.name, c.width())
                }
            })
            .collect();
        list.join(", ")
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The columns, in the order they were added.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The values of the real-valued column `name`, all samples.
    pub fn f32_values(&self, name: &str) -> Option<&[f32]> {
        match self.column(name)?.values() {
            Values::F32(v) => Some(v),
            Values::Classes { .. } => None,
        }
    }

    /// The indices of the class column `name`, all samples.
    pub fn class_values(&self, name: &str) -> Option<&[u32]> {
        match self.column(name)?.values() {
            Values::Classes { values, .. } => Some(values),
            Values::F32(_) => None,
        }
    }

    /// A new dataset of the given samples, in the given order.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.rows) {
            return Err(DataError::Invalid(format!(
                "index {bad} out of range for {} samples",
                self.rows
            )));
        }
        Ok(Dataset {
            rows: indices.len(),
            columns: self.columns.iter().map(|c| c.select(indices)).collect(),
        })
    }

    /// Splits into `(train, validation)` with `round(len * val_fraction)`
    /// validation samples.
    pub fn split(
        &self,
        val_fraction: f64,
        mode: SplitMode,
    ) -> Result<(Dataset, Dataset), DataError> {
        if !(0.0..=1.0).contains(&val_fraction) {
            return Err(DataError::Invalid(format!(
                "validation fraction {val_fraction} is not in [0, 1]"
            )));
        }
        let n = self.rows;
        let n_val = ((n as f64) * val_fraction).round() as usize;
        let mut order: Vec<usize> = (0..n).collect();
        if let SplitMode::Shuffled { seed } = mode {
            Rng::new(seed).shuffle(&mut order);
        }
        let (train, val) = order.split_at_mut(n - n_val);
        if let SplitMode::Shuffled { .. } = mode {
            train.sort_unstable();
            val.sort_unstable();
        }
        Ok((self.subset(train)?, self.subset(val)?))
    }

    /// The file the data came from, when all columns share one.
    pub fn file(&self) -> Option<&Path> {
        let first = self.columns.first()?.origin.file.as_deref()?;
        self.columns
            .iter()
            .all(|c| c.origin.file.as_deref() == Some(first))
            .then_some(first)
    }
}
