//! The transformer of `examples/models/transformer.nn` really learns to
//! reverse digit sequences: a few dozen Adam steps take its held-out token
//! accuracy far above chance (10%). The full run is `cargo run --release
//! -p sequence` (README).

use nnc::runtime::{Batch, Model};

mod support;
use support::Rng;

mod transformer {
    nnc::include_model!("transformer");
}

/// `n` sequences of 16 digits as token ids, and their reversals.
fn sequences(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::new();
    let mut y = vec![0; n * 16];
    for s in 0..n {
        for i in 0..16 {
            let d = rng.digit();
            x.push(d as f32);
            y[s * 16 + 15 - i] = d;
        }
    }
    (x, y)
}

#[test]
fn transformer_learns_to_reverse_sequences() {
    let (batch, steps) = (32, 80);
    let mut model = transformer::Transformer::new(batch);
    let spec = &transformer::TRANSFORMER_SPEC;
    let mut adam = spec.train.optimizer.build(spec.param_count).unwrap();
    let mut grads = vec![0.0f32; spec.param_count];
    let mut rng = Rng(1);
    let (test_x, test_y) = sequences(&mut Rng(99), batch);
    let accuracy = |model: &mut transformer::Transformer| {
        let mut logits = vec![0.0f32; batch * 16 * 10];
        model.predict(&test_x, &mut logits).unwrap();
        let correct = logits
            .chunks(10)
            .zip(&test_y)
            .filter(|(row, &want)| {
                let best = (0..10).fold(0, |b, i| if row[i] > row[b] { i } else { b });
                best as u32 == want
            })
            .count();
        correct as f64 / test_y.len() as f64
    };
    let before = accuracy(&mut model);
    let mut first_loss = None;
    let mut last_loss = 0.0;
    for _ in 0..steps {
        let (x, y) = sequences(&mut rng, batch);
        let loss = Model::train_step(
            &mut model,
            &Batch {
                inputs: &[&x],
                labels: &[&y],
            },
        )
        .unwrap();
        first_loss.get_or_insert(loss);
        last_loss = loss;
        grads.copy_from_slice(Model::grads(&model));
        adam.step(model.params_mut(), &grads, 2e-3).unwrap();
    }
    let after = accuracy(&mut model);
    let first = first_loss.unwrap();
    assert!(
        first > 2.0 && last_loss < 0.5 * first,
        "loss {first} → {last_loss}"
    );
    assert!(
        before < 0.3 && after > 0.6,
        "held-out token accuracy {before} → {after} after {steps} steps"
    );
}
