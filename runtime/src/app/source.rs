//! Where a run's data comes from: a CSV file read with a column mapping
//! made from the model's inputs, an IDX directory, or a shard (`nnc data
//! convert`'s output).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::csv::{read_csv, CsvOptions, Header, Select};
use crate::data::{idx, Column, DataError, Dataset};
use crate::model::{InputKind, InputSpec, LossKind, ModelSpec};

use super::AppError;

/// How the data arguments describe the files.
#[derive(Debug, Clone, Default)]
pub struct DataArgs {
    /// A CSV file, or a directory of IDX files.
    pub path: PathBuf,
    /// The CSV column of the labels or targets: a header name or a 0-based
    /// index (default: the last column).
    pub label: Option<String>,
    /// `INPUT=COLUMNS`: which CSV columns feed an input (a name, an index,
    /// a range `a..b`, or names `a,b,c`).
    pub columns: Vec<String>,
    /// The field separator.
    pub delimiter: u8,
    /// Whether the first row is a header (`None`: detect).
    pub header: Option<bool>,
}

/// Which part of an IDX directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `train-images-idx3-ubyte` and `train-labels-idx1-ubyte`.
    Train,
    /// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, falling
    /// back to the training files when there are none.
    Test,
}

/// What the data is for: training and evaluation read labels or targets,
/// prediction does not need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Every input and label.
    Labelled,
    /// The inputs `predict` reads; a label column present is skipped.
    Predict,
}

/// The input the loss compares the prediction with (its label or target).
pub fn supervision(spec: &ModelSpec) -> Option<usize> {
    match spec.loss.kind {
        LossKind::Classification { label, .. } => Some(label),
        LossKind::Binary { target } | LossKind::Regression { target } => Some(target),
        LossKind::Other => None,
    }
}

/// Loads data for `spec` as `args` say. `classes` are class names already
/// known (from training, or the weights file), by input name: a file read
/// later numbers its classes the same way.
pub fn load(
    spec: &ModelSpec,
    args: &DataArgs,
    part: Part,
    usage: Use,
    classes: &BTreeMap<String, Arc<[String]>>,
) -> Result<Dataset, AppError> {
    if let Some(set) = shard_set(&args.path)? {
        // `nnc data convert`'s output, one shard or a directory of them:
        // columns as converted, classes renumbered as training numbered them.
        return Ok(renumber_classes(set.load()?, classes, &args.path)?);
    }
    if args.path.is_dir() {
        return load_idx(&args.path, part);
    }
    let opts = csv_mapping(spec, args, usage, classes)?;
    Ok(read_csv(&args.path, &opts)?)
}

/// `data` with each named class column numbered as `classes` (known from
/// training) numbers that column's names: `nnc data convert` numbers a
/// file's class names in sorted order per file, so a test file that lacks
/// a class, or names one training never saw, would otherwise shift every
/// label after it. A class training never saw is refused, named.
fn renumber_classes(
    data: Dataset,
    classes: &BTreeMap<String, Arc<[String]>>,
    path: &Path,
) -> Result<Dataset, DataError> {
    let mut columns = Vec::with_capacity(data.columns().len());
    for c in data.columns() {
        let (Some(names), Some(known), Some(values)) = (
            c.class_names(),
            classes.get(c.name()),
            data.class_values(c.name()),
        ) else {
            columns.push(c.clone());
            continue;
        };
        if names == &known[..] {
            columns.push(c.clone());
            continue;
        }
        let mut to = Vec::with_capacity(names.len());
        for n in names {
            let Some(k) = known.iter().position(|x| x == n) else {
                return Err(DataError::File {
                    path: path.to_path_buf(),
                    reason: format!(
                        "column `{}` has class `{n}`, which the model was not trained on \
                         (its classes: {})",
                        c.name(),
                        known.join(", ")
                    ),
                });
            };
            to.push(u32::try_from(k).unwrap_or(u32::MAX));
        }
        let renumbered = values
            .iter()
            .map(|&v| to.get(v as usize).copied().unwrap_or(u32::MAX))
            .collect();
        columns.push(
            Column::classes(
                c.name(),
                c.shape(),
                renumbered,
                u32::try_from(known.len()).unwrap_or(u32::MAX),
            )
            .with_class_names(known.to_vec())
            .with_origin(c.origin().clone()),
        );
    }
    Dataset::new(columns)
}

/// Whether `path` is a file that starts as an nnc shard does.
fn is_shard_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && magic == crate::data::shard::MAGIC
}

/// The shards `path` names, to be streamed: a shard file, or a directory
/// holding `*.shard` files; `None` for any other data.
pub fn shard_set(path: &Path) -> Result<Option<crate::data::ShardSet>, AppError> {
    let dir_of_shards = path.is_dir()
        && std::fs::read_dir(path)
            .map_err(|error| DataError::Io {
                path: path.to_path_buf(),
                error,
            })?
            .filter_map(Result::ok)
            .any(|e| e.path().extension().is_some_and(|x| x == "shard"));
    if dir_of_shards || is_shard_file(path) {
        return Ok(Some(crate::data::ShardSet::open([path])?));
    }
    Ok(None)
}

/// Whether `dir` is an IDX directory with a test pair (`t10k-*`).
pub fn has_idx_test(dir: &Path) -> bool {
    dir.is_dir()
        && ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
            .iter()
            .all(|s| dir.join(s).is_file() || dir.join(format!("{s}.gz")).is_file())
}

fn load_idx(dir: &Path, part: Part) -> Result<Dataset, AppError> {
    let pair = |prefix: &str| -> Option<(PathBuf, PathBuf)> {
        let find = |stem: String| {
            [dir.join(format!("{stem}.gz")), dir.join(&stem)]
                .into_iter()
                .find(|p| p.is_file())
        };
        Some((
            find(format!("{prefix}-images-idx3-ubyte"))?,
            find(format!("{prefix}-labels-idx1-ubyte"))?,
        ))
    };
    let files = match part {
        Part::Train => pair("train"),
        Part::Test => pair("t10k").or_else(|| pair("train")),
    };
    let Some((images, labels)) = files else {
        return Err(AppError::Data(DataError::File {
            path: dir.to_path_buf(),
            reason: "no IDX pair here: expected train-images-idx3-ubyte and \
                     train-labels-idx1-ubyte (each may end in .gz)"
                .into(),
        }));
    };
    Ok(idx::load_pair(&images, &labels)?)
}

/// A `--column` or `--label` selection: `name`, `3`, `0..30`, `a,b,c`.
fn selection(text: &str) -> Select {
    if let Some((a, b)) = text.split_once("..") {
        if let (Ok(a), Ok(b)) = (a.trim().parse(), b.trim().parse()) {
            return Select::Range(a..b);
        }
    }
    if let Ok(i) = text.trim().parse::<usize>() {
        return Select::Index(i);
    }
    if text.contains(',') {
        return Select::Names(text.split(',').map(|s| s.trim().to_string()).collect());
    }
    Select::Name(text.trim().to_string())
}

/// The first row of a CSV file, as fields.
fn first_row(path: &Path, delimiter: u8) -> Result<Vec<String>, AppError> {
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .trim(::csv::Trim::All)
        .from_path(path)
        .map_err(|e| {
            AppError::Data(DataError::File {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        })?;
    let mut row = ::csv::StringRecord::new();
    let ok = rdr.read_record(&mut row).map_err(|e| {
        AppError::Data(DataError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    })?;
    Ok(if ok {
        row.iter().map(str::to_string).collect()
    } else {
        Vec::new()
    })
}

/// The column mapping for a CSV file: explicit `--column`s, the label or
/// target from `--label` (default: the last column), and the one feature
/// input left takes every other column.
fn csv_mapping(
    spec: &ModelSpec,
    args: &DataArgs,
    usage: Use,
    classes: &BTreeMap<String, Arc<[String]>>,
) -> Result<CsvOptions, AppError> {
    let mut opts = CsvOptions::new().delimiter(args.delimiter);
    if let Some(h) = args.header {
        opts = opts.header(if h { Header::Present } else { Header::Absent });
    }
    let wanted = |i: &InputSpec| match usage {
        Use::Labelled => true,
        Use::Predict => i.predict,
    };
    let add = |opts: CsvOptions, input: &InputSpec, select: Select| match input.kind {
        InputKind::Features => opts.numbers(&input.name, select),
        InputKind::Labels { .. } | InputKind::Tokens { .. } => match classes.get(&*input.name) {
            Some(names) => opts.classes_named(&input.name, select, names.clone()),
            None => opts.classes(&input.name, select),
        },
    };
    let mut mapped: Vec<&str> = Vec::new();
    for c in &args.columns {
        let Some((name, sel)) = c.split_once('=') else {
            return Err(AppError::Usage(format!(
                "--column `{c}`: expected INPUT=COLUMNS, e.g. x=0..30 or x=a,b,c"
            )));
        };
        let name = name.trim();
        let Some(input) = spec.inputs.iter().find(|i| i.name == name) else {
            let names: Vec<&str> = spec.inputs.iter().map(|i| &*i.name).collect();
            return Err(AppError::Usage(format!(
                "--column `{c}`: model `{}` has no input `{name}` (it has {})",
                spec.name,
                names.join(", ")
            )));
        };
        if wanted(input) {
            opts = add(opts, input, selection(sel));
        }
        mapped.push(&input.name);
    }
    let sup = supervision(spec).map(|i| &spec.inputs[i]);
    let first = first_row(&args.path, args.delimiter)?;
    let features: Vec<&InputSpec> = spec
        .inputs
        .iter()
        .filter(|i| !mapped.contains(&&*i.name) && Some(&*i.name) != sup.map(|s| &*s.name))
        .filter(|i| wanted(i))
        .filter(|i| !matches!(i.kind, InputKind::Labels { .. }))
        .collect();
    if let Some(sup) = sup.filter(|s| !mapped.contains(&&*s.name)) {
        let select = args
            .label
            .as_deref()
            .map_or(Select::Index(usize::MAX), selection);
        match usage {
            Use::Labelled => opts = add(opts, sup, select),
            Use::Predict => {
                // Skip the label column when the file has it: by name in
                // the header, or by count (one more column than the inputs
                // take).
                let present = match &select {
                    Select::Name(n) => first.iter().any(|f| f == n),
                    _ => {
                        let width: usize = features.iter().map(|i| i.per_sample).sum();
                        first.len() == width + sup.per_sample
                    }
                };
                if present {
                    opts = opts.skip(select);
                }
            }
        }
    }
    match features.as_slice() {
        [] => {}
        [one] => opts = add(opts, one, Select::Rest),
        many => {
            let names: Vec<&str> = many.iter().map(|i| &*i.name).collect();
            return Err(AppError::Usage(format!(
                "model `{}` has inputs {}: say which CSV columns feed each, with \
                 --column INPUT=COLUMNS (or `INPUT: COLUMNS` in the train block's csv(...))",
                spec.name,
                names.join(", ")
            )));
        }
    }
    Ok(opts)
}

/// Class names of every class column of `data` that has them, by name.
pub fn class_names(data: &Dataset) -> BTreeMap<String, Arc<[String]>> {
    data.columns()
        .iter()
        .filter_map(|c| {
            c.class_names()
                .map(|n| (c.name().to_string(), n.to_vec().into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard converted on its own numbers its classes in its own sorted
    /// order; read after training, it is renumbered by name.
    #[test]
    fn a_shards_classes_are_renumbered_as_training_numbered_them() {
        let col = Column::classes("y", &[], vec![0, 1, 0], 2)
            .with_class_names(vec!["b".into(), "c".into()]);
        let x = Column::f32("x", &[], vec![1.0, 2.0, 3.0]);
        let data = Dataset::new(vec![x, col]).unwrap();
        let known: Arc<[String]> = vec!["a".to_string(), "b".into(), "c".into()].into();
        let classes = BTreeMap::from([("y".to_string(), known)]);
        let out = renumber_classes(data.clone(), &classes, Path::new("t.shard")).unwrap();
        assert_eq!(out.class_values("y"), Some(&[1, 2, 1][..]));
        assert_eq!(out.column("y").unwrap().classes_count(), Some(3));
        assert_eq!(out.f32_values("x"), data.f32_values("x"));
        // Nothing known about the column: as converted.
        let same = renumber_classes(data.clone(), &BTreeMap::new(), Path::new("t.shard")).unwrap();
        assert_eq!(same, data);
        // A class training never saw is refused, named.
        let only_a: Arc<[String]> = vec!["a".to_string(), "b".into()].into();
        let err = renumber_classes(
            data,
            &BTreeMap::from([("y".to_string(), only_a)]),
            Path::new("t.shard"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "t.shard: column `y` has class `c`, which the model was not trained on (its classes: a, b)"
        );
    }
}
