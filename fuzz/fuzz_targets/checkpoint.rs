//! The checkpoint loader (`nnc_runtime::checkpoint`): any bytes as a
//! safetensors file, read by `load_tensors` and by `load_training` for a
//! small fixed model. What loads is consistent: every tensor's values
//! number the product of its shape and are finite, and the model's
//! parameters are filled only from a file that matches it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nnc_runtime::checkpoint::{load_tensors, load_training};
use nnc_runtime::params::ParamSpec;

/// The model the training loader is asked to fill: the tensors of the
/// seed checkpoints (fuzz/seeds/checkpoint).
fn specs() -> Vec<ParamSpec> {
    vec![
        ParamSpec::new("h.weight", vec![2, 3], 0),
        ParamSpec::new("h.bias", vec![3], 6),
    ]
}

fuzz_target!(|data: &[u8]| {
    let path = nnc_fuzz::scratch_file("checkpoint", data);
    if let Ok((tensors, _meta)) = load_tensors(&path) {
        for t in &tensors {
            let count = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            assert_eq!(count, Some(t.data.len()), "tensor `{}`", t.name);
            assert!(t.data.iter().all(|v| v.is_finite()), "tensor `{}`", t.name);
        }
    }
    let specs = specs();
    let mut params = vec![7.0f32; 9];
    match load_training(&path, &specs, &mut params, None) {
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
