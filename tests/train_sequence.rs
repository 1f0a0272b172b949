//! The transformer of `examples/models/transformer.nn` really learns to
//! reverse digit sequences through `fit`: a few dozen Adam steps take its
//! held-out token accuracy far above chance (10%). The full run is `cargo
//! run --release -p sequence` (README).

use nnc::runtime::data::{Column, Dataset};
use nnc::runtime::{evaluate, fit, BatchSpec, FitOptions, ScheduleSpec, TrainData};

mod support;
use support::Rng;

mod transformer {
    nnc::include_model!("transformer");
}

/// `n` sequences of 16 digits as token ids, and their reversals.
fn sequences(rng: &mut Rng, n: usize) -> Dataset {
    let mut x = Vec::new();
    let mut y = vec![0; n * 16];
    for s in 0..n {
        for i in 0..16 {
            let d = rng.below(10) as u32;
            x.push(d);
            y[s * 16 + 15 - i] = d;
        }
    }
    Dataset::new(vec![
        Column::classes("tokens", &[16], x, 10),
        Column::classes("target", &[16], y, 10),
    ])
    .unwrap()
}

#[test]
fn transformer_learns_to_reverse_sequences() {
    let (batch, steps) = (32, 80);
    let mut model = transformer::Transformer::new(batch);
    let train = sequences(&mut Rng(1), batch * steps);
    let test = sequences(&mut Rng(99), batch);
    let before = evaluate(&mut model, &test).unwrap();
    let opts = FitOptions {
        batch: Some(BatchSpec::Size(batch)),
        epochs: Some(1),
        schedule: Some(ScheduleSpec::Constant),
        warmup: Some(0),
        ..FitOptions::quiet()
    };
    let h = fit(&mut model, &TrainData::new(&train), &opts).unwrap();
    assert_eq!(h.steps, steps as u64);
    let after = evaluate(&mut model, &test).unwrap();
    assert!(
        before.loss > 2.0 && after.loss < 0.5 * before.loss,
        "held-out loss {} → {}",
        before.loss,
        after.loss
    );
    let (b, a) = (before.accuracy().unwrap(), after.accuracy().unwrap());
    assert!(
        b < 0.3 && a > 0.6,
        "held-out token accuracy {b} → {a} after {steps} steps"
    );
}
