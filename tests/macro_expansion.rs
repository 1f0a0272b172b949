//! `network!` inside a crate compiles the same network as the build script
//! does from `examples/models/mnist_mlp.nn`: the same model hash, parameter
//! table and `train` block, and bit-identical initial parameters, loss and
//! gradients on the same batch. (That the expansion is token for token what
//! `nnc compile` emits is checked in `nnc-macros`' unit tests.)

use nnc::runtime::Model;

mod from_file {
    nnc::include_model!("mnist_mlp");
}

mod from_macro {
    nnc::network! {
        // The classic MNIST classifier: 784 → 128 → 128 → 10, ReLU, Adam,
        // sparse categorical cross-entropy.
        network MnistMlp {
            input  image: f32[batch, 784];
            label  digit: class[batch] of 10;

            h1     = dense(image, 128) |> relu;
            h2     = dense(h1, 128) |> relu;
            logits = dense(h2, 10);

            output probs = softmax(logits);
            loss   cross_entropy(logits, digit);
        }

        train MnistMlp {
            optimizer: adam(lr: 1e-3);
            batch: 128;
            epochs: 10;
            seed: 42;
        }
    }
}

#[test]
fn the_macro_compiles_the_network_of_the_nn_file() {
    let (file, mac) = (&from_file::MNIST_MLP_SPEC, &from_macro::MNIST_MLP_SPEC);
    assert_eq!(mac.name, file.name);
    assert_eq!(mac.hash, file.hash);
    assert_eq!(mac.params, file.params);
    assert_eq!(mac.inputs, file.inputs);
    assert_eq!(mac.outputs, file.outputs);
    assert_eq!(mac.train, file.train);
    // Generated code cites the Rust file of the macro call as its source
    // (where Rust, 1.88 and later, tells proc macros where tokens are).
    assert!(
        mac.source.ends_with("macro_expansion.rs") || mac.source == "network!",
        "{}",
        mac.source
    );

    let batch = 5;
    let images: Vec<f32> = (0..batch * 784).map(|i| (i % 17) as f32 / 17.0).collect();
    let labels: Vec<u32> = (0..batch as u32).map(|i| (i * 3) % 10).collect();
    let mut a = from_file::MnistMlp::new(batch);
    let mut b = from_macro::MnistMlp::new(batch);
    assert_eq!(a.params(), b.params());
    let la = a.train_step(&images, &labels).unwrap();
    let lb = b.train_step(&images, &labels).unwrap();
    assert_eq!(la.to_bits(), lb.to_bits());
    assert_eq!(a.grads(), b.grads());
}
