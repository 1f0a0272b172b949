// A misspelt name: the error is on the name, and the code using `Net`
// still type-checks against the stand-in (one error, not a cascade).
nnc::network! {
    network Net {
        input  image: f32[batch, 4];
        label  digit: class[batch] of 3;
        logits = dense(imag, 3);
        loss   cross_entropy(logits, digit);
    }
}

fn train(data: &nnc::runtime::TrainData<'_>) -> Result<(), Box<dyn std::error::Error>> {
    let mut model = Net::new(8);
    let _: f32 = model.train_step(&[0.0; 4], &[1])?;
    nnc::runtime::fit(&mut model, data, &Default::default())?;
    assert_eq!(NET_SPEC.train.seed, 0);
    Ok(())
}

fn main() {
    let _ = train;
}
