//! Converting a CSV file, or IDX files, to a shard ([`super::shard`])
//! without holding them: blocks of rows are parsed and appended as they
//! come.
//!
//! Class columns are numbered as [`super::csv::read_csv`] numbers them, so
//! a shard loads to the same dataset: names in sorted order (a first pass,
//! only when some class column holds names, collects them, holding only
//! the distinct names), integers as themselves with the largest plus one
//! as the class count.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::csv::{read_blocks, CsvOptions, Fields, Mapping, ReadAs};
use super::dataset::{Column, Dataset, Origin};
use super::idx_stream::IdxReader;
use super::shard::{ShardColumn, ShardWriter};
use super::DataError;

/// Rows parsed per block: large enough to amortise the per-block work,
/// small enough that a block of wide rows (MNIST's 784 numbers: 13 MB)
/// stays in memory the allocator reuses.
const BLOCK_ROWS: usize = 4 * 1024;

/// Converts the CSV file `input` (read with `opts`) to the shard `output`;
/// the rows written.
///
/// One pass when every class column holds integers (or has its names
/// given); when a class column turns out to hold names, the rows written
/// so far are dropped and a first pass collects the names (parsing only
/// the class fields) before the rows are written again.
pub fn csv_to_shard(
    input: impl AsRef<Path>,
    opts: &CsvOptions,
    output: impl AsRef<Path>,
    chunk_rows: u32,
) -> Result<u64, DataError> {
    let (input, output) = (input.as_ref(), output.as_ref());
    let mapping = opts.mapping();
    let mut opts = CsvOptions {
        columns: mapping.clone(),
        ..opts.clone()
    };
    let numbered = |m: &Mapping| m.read == ReadAs::Classes;
    match write_rows(input, &opts, output, chunk_rows, &|m| numbered(m))? {
        Some(rows) => return Ok(rows),
        None => {
            let names = class_names(input, &opts, &mapping)?;
            for (k, set) in names.into_iter().enumerate() {
                if let Some(set) = set {
                    let list: Arc<[String]> = set.into_iter().collect();
                    opts.columns[k].read = ReadAs::ClassesNamed(list);
                }
            }
        }
    }
    match write_rows(input, &opts, output, chunk_rows, &|_| false)? {
        Some(rows) => Ok(rows),
        // Unreachable: every named class column now has its names.
        None => Err(DataError::File {
            path: input.to_path_buf(),
            reason: "class names changed during the conversion".into(),
        }),
    }
}

/// The first pass: each numbered class column's distinct names (`None`
/// for integer columns and the rest), parsing only class fields.
fn class_names(
    input: &Path,
    opts: &CsvOptions,
    mapping: &[Mapping],
) -> Result<Vec<Option<BTreeSet<String>>>, DataError> {
    let mut names: Vec<Option<BTreeSet<String>>> = vec![None; mapping.len()];
    let mut ints = vec![false; mapping.len()];
    read_blocks(input, opts, BLOCK_ROWS, Fields::ClassesOnly, &mut |block| {
        for (k, m) in mapping.iter().enumerate() {
            if m.read != ReadAs::Classes {
                continue;
            }
            let Some(column) = block.column(&m.name) else {
                continue;
            };
            match column.class_names() {
                Some(n) => names[k]
                    .get_or_insert_with(BTreeSet::new)
                    .extend(n.iter().cloned()),
                None => ints[k] = true,
            }
            if ints[k] && names[k].is_some() {
                return Err(DataError::File {
                    path: input.to_path_buf(),
                    reason: format!(
                        "class column `{}` mixes names and integers across the file",
                        m.name
                    ),
                });
            }
        }
        Ok(())
    })?;
    Ok(names)
}

/// Writes the rows; `None` (and no output) when a column for which
/// `numbered` holds turns out to hold class names, which need the first
/// pass to be numbered as `read_csv` numbers them.
fn write_rows(
    input: &Path,
    opts: &CsvOptions,
    output: &Path,
    chunk_rows: u32,
    numbered: &dyn Fn(&Mapping) -> bool,
) -> Result<Option<u64>, DataError> {
    let mut writer: Option<ShardWriter> = None;
    let mut counts: Vec<u32> = Vec::new();
    let mut names_found = false;
    let result = read_blocks(input, opts, BLOCK_ROWS, Fields::All, &mut |block| {
        let named = opts.columns.iter().any(|m| {
            numbered(m)
                && block
                    .column(&m.name)
                    .is_some_and(|c| c.class_names().is_some())
        });
        if named {
            names_found = true;
            // Stops the read; the unfinished writer removes its file.
            return Err(DataError::Invalid("class names need a first pass".into()));
        }
        if writer.is_none() {
            let columns: Vec<ShardColumn> = block.columns().iter().map(ShardColumn::of).collect();
            counts = vec![0; columns.len()];
            writer = Some(ShardWriter::create(output, columns, chunk_rows)?);
        }
        for (c, column) in counts.iter_mut().zip(block.columns()) {
            *c = (*c).max(column.classes_count().unwrap_or(0));
        }
        match &mut writer {
            Some(w) => w.push(&block),
            None => Ok(()),
        }
    });
    if names_found {
        drop(writer);
        return Ok(None);
    }
    result?;
    let Some(mut writer) = writer else {
        return Err(DataError::File {
            path: input.to_path_buf(),
            reason: "no rows".into(),
        });
    };
    for (j, &count) in counts.iter().enumerate() {
        writer.set_classes(j, count);
    }
    writer.finish().map(Some)
}

/// Converts an IDX file of samples (and, optionally, one of class labels)
/// to the shard `output`, a block of rows at a time; the rows written. The
/// shard holds what [`super::idx::load_pair`] loads: column `image` (u8
/// scaled to `[0, 1]`, other types unscaled, shape the dimensions after
/// the first) and column `label` (classes: the largest plus one, at least
/// 10 for u8 labels that are all digits).
pub fn idx_to_shard(
    images: impl AsRef<Path>,
    labels: Option<&Path>,
    output: impl AsRef<Path>,
    chunk_rows: u32,
) -> Result<u64, DataError> {
    let mut img = IdxReader::open(images.as_ref())?;
    if img.dims().len() < 2 {
        return Err(DataError::File {
            path: img.path().to_path_buf(),
            reason: format!(
                "expected samples [n, ...], found dimensions {:?}",
                img.dims()
            ),
        });
    }
    let mut lab = labels.map(IdxReader::open).transpose()?;
    if let Some(l) = &lab {
        if l.dims().len() != 1 || l.rows() != img.rows() {
            return Err(DataError::File {
                path: l.path().to_path_buf(),
                reason: format!(
                    "expected {} labels [n] for the samples of {}, found {} {:?}",
                    img.rows(),
                    img.path().display(),
                    l.type_name(),
                    l.dims()
                ),
            });
        }
    }
    let shape = img.dims()[1..].to_vec();
    let digits = lab.as_ref().is_some_and(|l| l.type_name() == "u8");
    let origin = |r: &IdxReader| Origin::file(r.path(), "");
    let (mut features, mut classes) = (Vec::new(), Vec::new());
    let mut writer: Option<ShardWriter> = None;
    let mut max = 0u32;
    loop {
        features.clear();
        classes.clear();
        let n = img.read_f32(BLOCK_ROWS, true, &mut features)?;
        if let Some(l) = &mut lab {
            l.read_labels(n, &mut classes)?;
        }
        if n == 0 {
            break;
        }
        let mut columns =
            vec![Column::f32("image", &shape, std::mem::take(&mut features))
                .with_origin(origin(&img))];
        if let Some(l) = &lab {
            let top = classes.iter().copied().max().unwrap_or(0);
            max = max.max(top);
            columns.push(
                Column::classes(
                    "label",
                    &[],
                    std::mem::take(&mut classes),
                    top.saturating_add(1),
                )
                .with_origin(origin(l)),
            );
        }
        let block = Dataset::new(columns)?;
        if writer.is_none() {
            let layout = block.columns().iter().map(ShardColumn::of).collect();
            writer = Some(ShardWriter::create(output.as_ref(), layout, chunk_rows)?);
        }
        if let Some(w) = &mut writer {
            w.push(&block)?;
        }
    }
    let Some(mut writer) = writer else {
        return Err(DataError::File {
            path: img.path().to_path_buf(),
            reason: "no samples".into(),
        });
    };
    if lab.is_some() {
        let count = if digits && max <= 9 {
            10
        } else {
            max.saturating_add(1)
        };
        writer.set_classes(1, count);
    }
    writer.finish()
}
