//! Post-training int8 inference through generated code (#23): the MNIST
//! MLP and LeNet compiled with `--quantize int8` (the root build script),
//! calibrated with `quantize_int8` on random images, against the same
//! models' f32 `predict`; their quantized weights file round trip
//! (`Int8Model::save`, the generated `load_int8`) and its size.
//!
//! Compared on logits, not probabilities (random-weight models' softmax
//! outputs are near uniform, which hides errors): the int8 side runs its
//! plan without the final softmax step; the f32 side's logits are the
//! probabilities' logarithms, both centred per row (softmax is invariant
//! to a per-row shift, so centred log-probabilities are the centred
//! logits).
//!
//! Tolerance: each int8 product adds at most half a weight step
//! (`max|w| / 126` of the channel's largest weight) per weight and half an
//! activation step (`1 / 510` of the calibrated range) per input, relative
//! to the f32 values it multiplies; with the default initializers' logits
//! of order 1 and three (MLP) or five (LeNet) layers, that is a few
//! hundredths on a logit, and centring at most doubles it: `0.1` on
//! centred logits of magnitude ~1 (checked relative to the largest). The
//! exact per-element bound, derived layer by layer, is checked on random
//! MLPs in `runtime/src/quant/tests/plan.rs`.

use nnc::runtime::checkpoint::save_weights;
use nnc::runtime::quant::{Int8Model, Plan, Step};

mod support;
use support::Rng;

mod mnist_mlp_int8 {
    nnc::include_model!("mnist_mlp_int8");
}
mod lenet_int8 {
    nnc::include_model!("lenet_int8");
}

const BATCH: usize = 32;
const PIXELS: usize = 28 * 28;
/// On centred logits, relative to the largest centred f32 logit.
const TOLERANCE: f32 = 0.1;

/// `n` random images, pixels uniform in [0, 1] like MNIST's.
fn images(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.uniform_f32(n * PIXELS, 0.0, 1.0)
}

/// `plan` without its final softmax: it ends in the logits.
fn logits_plan(mut plan: Plan) -> Plan {
    let Some(Step::Softmax { input, .. }) = plan.steps.pop() else {
        panic!("the plan does not end in softmax");
    };
    plan.output = input;
    plan
}

/// Rows of 10 shifted to mean 0.
fn centred(rows: &mut [f32]) {
    for r in rows.chunks_mut(10) {
        let mean = r.iter().sum::<f32>() / 10.0;
        r.iter_mut().for_each(|v| *v -= mean);
    }
}

/// The largest difference between `q`'s centred logits and the f32
/// model's (from its probabilities `f32_probs`), relative to the largest
/// f32 one, and how many rows' argmax agree.
fn compare(q: &mut Int8Model, x: &[f32], f32_probs: &[f32]) -> (f32, usize) {
    let mut got = vec![0.0; f32_probs.len()];
    q.predict(x, &mut got, BATCH).unwrap();
    centred(&mut got);
    let mut want: Vec<f32> = f32_probs.iter().map(|p| p.ln()).collect();
    centred(&mut want);
    let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / scale;
    let argmax = |r: &[f32]| {
        r.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    let agree = got
        .chunks(10)
        .zip(want.chunks(10))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    (diff, agree)
}

macro_rules! int8_model_test {
    ($test:ident, $module:ident, $ty:ident, $seed:expr) => {
        #[test]
        fn $test() {
            use nnc::runtime::Model;
            let mut rng = Rng::new($seed);
            let mut model = $module::$ty::new(BATCH);
            let calibration = images(&mut rng, 4 * BATCH);
            let mut q = model.quantize_int8(&calibration, BATCH).unwrap();
            let x = images(&mut rng, BATCH);
            let mut want = vec![0.0; BATCH * 10];
            model.predict(&x, &mut want).unwrap();
            let plan = logits_plan($module::$ty::int8_plan());
            let mut logits = Int8Model::calibrate(
                plan,
                &model.spec().params,
                model.params(),
                &calibration,
                BATCH,
            )
            .unwrap();
            let (diff, agree) = compare(&mut logits, &x, &want);
            assert!(diff <= TOLERANCE, "int8 logits {diff} (relative) from f32");
            assert!(agree * 10 >= BATCH * 9, "argmax agrees on {agree}/{BATCH}");

            // The saved file loads (generated `load_int8`, checked against
            // the plan) into the same model: bit-identical outputs.
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(concat!("int8-", stringify!($test)));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("int8.safetensors");
            q.save(&path, &model.spec().params).unwrap();
            let mut loaded = $module::$ty::load_int8(&path).unwrap();
            let (mut a, mut b) = (vec![0.0; BATCH * 10], vec![0.0; BATCH * 10]);
            q.predict(&x, &mut a, BATCH).unwrap();
            loaded.predict(&x, &mut b, BATCH).unwrap();
            assert_eq!(a, b);

            // 7-bit weights in bytes, f32 scales per channel and biases:
            // at most 0.27x the f32 weights file.
            let f32_path = dir.join("f32.safetensors");
            save_weights(&model, &f32_path).unwrap();
            let f = std::fs::metadata(&f32_path).unwrap().len();
            let i = std::fs::metadata(&path).unwrap().len();
            assert!(
                i as f64 <= 0.27 * f as f64,
                "int8 file {i} bytes, f32 file {f} bytes"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    };
}

int8_model_test!(mnist_mlp_int8_tracks_f32, mnist_mlp_int8, MnistMlp, 3);
int8_model_test!(lenet_int8_tracks_f32, lenet_int8, LeNet, 4);
