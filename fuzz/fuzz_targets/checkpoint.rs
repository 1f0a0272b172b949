//! The checkpoint loader (`nnc_runtime::checkpoint`): any bytes as a
//! safetensors file, read by `load_tensors` and by `load_training` for a
//! small fixed model. What loads is consistent: every tensor's values
//! number the product of its shape and are finite, and the model's
//! parameters are filled only from a file that matches it. From memory
//! (`parse_tensors`, `parse_training`); through a file with
//! `NNC_FUZZ_FILES=1`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nnc_runtime::checkpoint::{load_tensors, load_training, parse_tensors, parse_training};
use nnc_runtime::params::ParamSpec;
use std::path::PathBuf;

/// The model the training loader is asked to fill: the tensors of the
/// seed checkpoints (fuzz/seeds/checkpoint).
fn specs() -> Vec<ParamSpec> {
    vec![
        ParamSpec::new("h.weight", vec![2, 3], 0),
        ParamSpec::new("h.bias", vec![3], 6),
    ]
}

fuzz_target!(|data: &[u8]| {
    let path = if nnc_fuzz::through_files() {
        nnc_fuzz::scratch_file("checkpoint", data)
    } else {
        PathBuf::from("fuzz.safetensors")
    };
    let loaded = if nnc_fuzz::through_files() {
        load_tensors(&path)
    } else {
        parse_tensors(data, &path)
    };
    if let Ok((tensors, _meta)) = loaded {
        for t in &tensors {
            let count = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            assert_eq!(count, Some(t.data.len()), "tensor `{}`", t.name);
            assert!(t.data.iter().all(|v| v.is_finite()), "tensor `{}`", t.name);
        }
    }
    let specs = specs();
    let mut params = vec![7.0f32; 9];
    let training = if nnc_fuzz::through_files() {
        load_training(&path, &specs, &mut params, None)
    } else {
        parse_training(data, &path, &specs, &mut params, None)
    };
    match training {
        Ok(loaded) => {
            assert!(params.iter().all(|v| v.is_finite()));
            if let Some(o) = loaded.optimizer {
                for (name, v) in &o.tensors {
                    assert!(v.iter().all(|x| x.is_finite()), "optimizer `{name}`");
                }
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // Nothing is touched before the file is known to fit.
            assert!(params.iter().all(|&v| v == 7.0), "{e}");
        }
    }
});
