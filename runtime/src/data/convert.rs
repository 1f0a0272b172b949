//! Converting a CSV file to a shard ([`super::shard`]) without holding it:
//! blocks of rows are parsed and appended as they come.
//!
//! Class columns are numbered as [`super::csv::read_csv`] numbers them, so
//! a shard loads to the same dataset: names in sorted order (a first pass
//! collects them, holding only the distinct names), integers as themselves
//! with the largest plus one as the class count.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::csv::{read_csv_blocks, CsvOptions, ReadAs};
use super::shard::{ShardColumn, ShardWriter};
use super::DataError;

/// Rows parsed per block.
const BLOCK_ROWS: usize = 16 * 1024;

/// Converts the CSV file `input` (read with `opts`) to the shard `output`;
/// the rows written.
pub fn csv_to_shard(
    input: impl AsRef<Path>,
    opts: &CsvOptions,
    output: impl AsRef<Path>,
    chunk_rows: u32,
) -> Result<u64, DataError> {
    let input = input.as_ref();
    let mapping = opts.mapping();
    let mut opts = CsvOptions {
        columns: mapping.clone(),
        ..opts.clone()
    };
    // Pass 1, only when some column numbers names: the distinct names.
    if mapping.iter().any(|m| m.read == ReadAs::Classes) {
        let mut names: Vec<Option<BTreeSet<String>>> = vec![None; mapping.len()];
        let mut ints = vec![false; mapping.len()];
        read_csv_blocks(input, &opts, BLOCK_ROWS, &mut |block| {
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
        for (k, set) in names.into_iter().enumerate() {
            if let Some(set) = set {
                let list: Arc<[String]> = set.into_iter().collect();
                opts.columns[k].read = ReadAs::ClassesNamed(list);
            }
        }
    }
    // Pass 2: the rows, block by block.
    let mut writer: Option<ShardWriter> = None;
    let mut counts: Vec<u32> = Vec::new();
    read_csv_blocks(input, &opts, BLOCK_ROWS, &mut |block| {
        if writer.is_none() {
            let columns: Vec<ShardColumn> = block.columns().iter().map(ShardColumn::of).collect();
            counts = vec![0; columns.len()];
            writer = Some(ShardWriter::create(output.as_ref(), columns, chunk_rows)?);
        }
        for (c, column) in counts.iter_mut().zip(block.columns()) {
            *c = (*c).max(column.classes_count().unwrap_or(0));
        }
        match &mut writer {
            Some(w) => w.push(&block),
            None => Ok(()),
        }
    })?;
    let Some(mut writer) = writer else {
        return Err(DataError::File {
            path: input.to_path_buf(),
            reason: "no rows".into(),
        });
    };
    for (j, &count) in counts.iter().enumerate() {
        writer.set_classes(j, count);
    }
    writer.finish()
}
