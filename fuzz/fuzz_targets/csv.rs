//! The CSV reader (`nnc_runtime::data::csv`) under every header mode,
//! delimiter and column mapping: on success every number is finite, every
//! class is below the class count and every column has one row per
//! sample; on failure the error names the file. Any bytes as a file's
//! contents from memory (`parse_csv_bytes`; through a file with
//! `NNC_FUZZ_FILES=1`), or UTF-8 text (`parse_csv`).

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use nnc_runtime::data::csv::{self, CsvOptions, Header, Select};
use nnc_runtime::data::{DataError, Dataset, Values};
use std::path::Path;
use std::sync::Arc;

fn select(u: &mut Unstructured<'_>) -> arbitrary::Result<Select> {
    let names = ["a", "b", "label", "species", "x", ""];
    Ok(match u.int_in_range(0..=4)? {
        0 => Select::Index(u.int_in_range(0..=6)?),
        1 => Select::Name(u.choose(&names)?.to_string()),
        2 => {
            let a = u.int_in_range(0..=6)?;
            let b = u.int_in_range(0..=8)?;
            Select::Range(a..b)
        }
        3 => Select::Names(vec![
            u.choose(&names)?.to_string(),
            u.choose(&names)?.to_string(),
        ]),
        _ => Select::Rest,
    })
}

fn options(u: &mut Unstructured<'_>) -> arbitrary::Result<CsvOptions> {
    let header = *u.choose(&[Header::Auto, Header::Present, Header::Absent])?;
    let delimiter = *u.choose(&[b',', b',', b';', b'\t', b'|', b'"', b'\n', 0xff])?;
    let mut opts = CsvOptions::new().header(header).delimiter(delimiter);
    for _ in 0..u.int_in_range(0..=3)? {
        let sel = select(u)?;
        let name = *u.choose(&["features", "label", "x", "y"])?;
        opts = match u.int_in_range(0..=3)? {
            0 => opts.numbers(name, sel),
            1 => opts.classes(name, sel),
            2 => opts.skip(sel),
            _ => {
                let names: Arc<[String]> = ["setosa", "versicolor", "1"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                opts.classes_named(name, sel, names)
            }
        };
    }
    Ok(opts)
}

fn check(result: Result<Dataset, DataError>) {
    match result {
        Ok(ds) => {
            for c in ds.columns() {
                let width: usize = c.shape().iter().product();
                match c.values() {
                    Values::F32(v) => {
                        assert_eq!(v.len(), ds.len() * width, "column {}", c.name());
                        assert!(v.iter().all(|x| x.is_finite()), "column {}", c.name());
                    }
                    Values::Classes {
                        values, classes, ..
                    } => {
                        assert_eq!(values.len(), ds.len() * width, "column {}", c.name());
                        assert!(values.iter().all(|k| k < classes), "column {}", c.name());
                    }
                }
                let _ = c.describe();
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(opts) = options(&mut u) else { return };
    let Ok(from_file) = bool::arbitrary(&mut u) else {
        return;
    };
    let rest = u.take_rest();
    if from_file && nnc_fuzz::through_files() {
        // Any bytes, through the file reader (which re-reads the file for
        // error context).
        let path = nnc_fuzz::scratch_file("csv", rest);
        check(csv::read_csv(&path, &opts));
    } else if from_file {
        // The same bytes as the file reader reads them, from memory.
        check(csv::parse_csv_bytes(rest, Path::new("fuzz.csv"), &opts));
    } else if let Ok(text) = std::str::from_utf8(rest) {
        check(csv::parse_csv(text, Path::new("fuzz.csv"), &opts));
    }
});
