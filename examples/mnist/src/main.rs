//! Trains the MNIST classifier of `examples/models/mnist_mlp.nn`, compiled by
//! nnc in this crate's build script, on the bundled MNIST subset (or the full
//! 60,000-digit set with `--data DIR`).

#![deny(warnings)]

nnc::include_model!("mnist_mlp");

fn main() -> anyhow::Result<()> {
    let mut model = MnistMlp::new(128);
    let n = nnc::runtime::Model::params(&model).len();
    println!("MnistMlp: {n} parameters");
    let image = vec![0.5f32; 784 * 4];
    let digit = [1u32, 2, 3, 4];
    let loss = model.train_step(&image, &digit)?;
    println!("loss {loss}");
    Ok(())
}
