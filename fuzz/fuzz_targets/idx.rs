//! The IDX reader (`nnc_runtime::data::idx`): raw bytes, the same bytes
//! gzipped (a valid stream around any content), and image/label pairs. On
//! success the values number the product of the dimensions and a pair has
//! one label per sample, each below the class count. From memory
//! (`read_idx_from`, `pair`); through files with `NNC_FUZZ_FILES=1`.

#![no_main]

use flate2::write::GzEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;
use nnc_runtime::data::idx::{self, IdxArray};
use nnc_runtime::data::{DataError, Values};
use std::io::Write;
use std::path::{Path, PathBuf};

fn check(result: Result<IdxArray, DataError>) {
    match result {
        Ok(a) => {
            let count: usize = a.dims.iter().product();
            assert_eq!(a.data.len(), count, "dims {:?}", a.dims);
            assert_eq!(a.data.to_f32().len(), count);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let path = Path::new("fuzz.idx");
    let files = nnc_fuzz::through_files();
    // As read from a file: gunzipped when it starts with gzip's magic.
    let read = |tag: &str, bytes: &[u8]| {
        if files {
            let file = nnc_fuzz::scratch_file(tag, bytes);
            let read = idx::read_idx(&file);
            (read, file)
        } else {
            let file = PathBuf::from(format!("{tag}.idx"));
            (idx::read_idx_from(bytes, &file), file)
        }
    };
    match mode % 4 {
        0 => check(read("idx", rest).0),
        1 => check(idx::parse_idx(rest, path, false)),
        2 => check(read("idx", &gzip(rest)).0),
        // A pair: the first byte after the mode splits images from labels.
        _ => {
            let Some((&cut, rest)) = rest.split_first() else {
                return;
            };
            let cut = (cut as usize * 4).min(rest.len());
            let (images, labels) = rest.split_at(cut);
            let (images, images_path) = read("images", images);
            let (labels, labels_path) = read("labels", labels);
            let (Ok(images), Ok(labels)) = (images, labels) else {
                return;
            };
            if let Ok(ds) = idx::pair(images, &images_path, labels, &labels_path) {
                let label = ds.column("label").expect("a label column");
                let Values::Classes {
                    values, classes, ..
                } = label.values()
                else {
                    panic!("labels are not classes");
                };
                assert_eq!(values.len(), ds.len());
                assert!(values.iter().all(|k| k < classes));
                let image = ds.column("image").expect("an image column");
                let Values::F32(pixels) = image.values() else {
                    panic!("images are not numbers");
                };
                assert_eq!(pixels.len(), ds.len() * image.width());
            }
        }
    }
});
