//! Turning a block of parsed CSV fields into dataset columns, and the
//! numbering of class fields: shared by [`super::read_csv`] (one block) and
//! [`super::read_csv_blocks`] (many).

use super::*;

/// One block's parsed fields made into a dataset.
pub(super) fn block_columns(
    resolved: &[Resolved],
    numbers: &mut [Vec<f32>],
    raw: &mut [Vec<String>],
    lines: Vec<u32>,
    ctx: &BlockContext<'_>,
) -> Result<Dataset, DataError> {
    let BlockContext {
        path,
        opts,
        src,
        has_header,
        first,
        fields,
    } = *ctx;
    let lines: Arc<[u32]> = lines.into();
    let mut data = Dataset::default();
    for (k, r) in resolved.iter().enumerate() {
        let part = describe_part(&r.cols, has_header.then_some(first));
        let origin = Origin {
            file: Some(path.to_path_buf()),
            part,
            lines: Some(lines.clone()),
            fields: has_header.then(|| r.cols.iter().map(|&c| first[c].clone()).collect()),
            // Text given in memory cannot be re-read: its errors name lines.
            csv: matches!(src, Source::File).then(|| CsvFields {
                columns: r.cols.clone().into(),
                delimiter: opts.delimiter,
            }),
        };
        let shape = [r.cols.len()];
        let column = match &r.map.read {
            ReadAs::Skip => continue,
            ReadAs::Numbers if fields == Fields::ClassesOnly => continue,
            ReadAs::Numbers => Column::f32(&r.map.name, &shape, std::mem::take(&mut numbers[k])),
            ReadAs::Classes | ReadAs::ClassesNamed(_) => {
                let given = match &r.map.read {
                    ReadAs::ClassesNamed(names) => Some(names.clone()),
                    _ => None,
                };
                classes(&r.map.name, &shape, &raw[k], given).map_err(|(i, reason)| {
                    let row = i / r.cols.len();
                    let col = r.cols[i % r.cols.len()];
                    DataError::Csv {
                        path: path.to_path_buf(),
                        line: lines[row] as usize,
                        column: src.column(path, lines[row] as usize, col, opts.delimiter),
                        reason,
                    }
                })?
            }
        };
        data.push(column.with_origin(origin))?;
        raw[k].clear();
    }
    Ok(data)
}

/// What every block of one file shares.
#[derive(Clone, Copy)]
pub(super) struct BlockContext<'a> {
    pub(super) path: &'a Path,
    pub(super) opts: &'a CsvOptions,
    pub(super) src: Source<'a>,
    pub(super) has_header: bool,
    pub(super) first: &'a [String],
    pub(super) fields: Fields,
}

/// A class index written as an integer, also `3.0`.
fn class_index(text: &str) -> Option<u32> {
    if let Ok(v) = text.parse::<u32>() {
        return Some(v);
    }
    let v = text.parse::<f64>().ok()?;
    (v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v)).then_some(v as u32)
}

/// A class column from its fields; an error carries the field's index.
fn classes(
    name: &str,
    shape: &[usize],
    raw: &[String],
    given: Option<Arc<[String]>>,
) -> Result<Column, (usize, String)> {
    if let Some(names) = given {
        let mut values = Vec::with_capacity(raw.len());
        for (i, t) in raw.iter().enumerate() {
            let v = match names.iter().position(|n| n == t) {
                Some(v) => v as u32,
                None => match class_index(t) {
                    Some(v) if (v as usize) < names.len() => v,
                    _ => {
                        return Err((
                            i,
                            format!("`{t}` is not one of the classes {}", names.join(", ")),
                        ))
                    }
                },
            };
            values.push(v);
        }
        let count = names.len() as u32;
        return Ok(Column::classes(name, shape, values, count).with_class_names(names.to_vec()));
    }
    let ints: Vec<Option<u32>> = raw.iter().map(|t| class_index(t)).collect();
    let first_int = ints.first().is_some_and(Option::is_some);
    // A column of numbers with one stray word (or the reverse) is a typo,
    // not one more class: refuse it where the kind changes.
    if let Some(i) = ints.iter().position(|v| v.is_some() != first_int) {
        let what = if first_int {
            "a non-negative integer class index like the fields above it"
        } else {
            "a class name like the fields above it (the column mixes names and numbers)"
        };
        return Err((i, format!("class `{}` is not {what}", raw[i])));
    }
    if first_int {
        let values: Vec<u32> = ints.into_iter().flatten().collect();
        if let Some(i) = values.iter().position(|&v| v == u32::MAX) {
            return Err((i, format!("class index {} is too large", u32::MAX)));
        }
        let count = values.iter().max().map_or(0, |&m| m + 1);
        return Ok(Column::classes(name, shape, values, count));
    }
    let mut names: Vec<&str> = raw.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let values = raw
        .iter()
        .map(|t| names.binary_search(&t.as_str()).map_or(0, |i| i as u32))
        .collect();
    let owned: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    Ok(Column::classes(name, shape, values, owned.len() as u32).with_class_names(owned))
}
