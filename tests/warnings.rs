//! Generated code compiles warning-free in a user's crate: every example
//! and test model (and every model the diagnostics suite says must check
//! cleanly), at -O2 and -O0, included in a crate that denies warnings. A
//! warning here fails the build of this test.

#![deny(warnings)]

mod all {
    include!(concat!(env!("OUT_DIR"), "/all_models.rs"));
}

#[test]
fn every_model_compiles_without_a_warning() {
    // Reaching this line means the crate compiled under `deny(warnings)`;
    // check that the models are really in it.
    use nnc::runtime::Model;
    let m = all::mnist_mlp::MnistMlp::default();
    assert_eq!(m.spec().name, "MnistMlp");
    let t = all::two_inputs::TwoInputs::default();
    assert!(
        t.spec().outputs.is_empty(),
        "a network without outputs is in the crate"
    );
}
