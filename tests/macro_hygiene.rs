//! `network!` expansions are hygienic: every name the generated code uses
//! is fully qualified (`::core::result::Result::Ok`, `::std::vec::Vec`,
//! the runtime's path) or the network's own, so a network may be named like
//! a prelude type, a module may shadow the prelude, and several `network!`
//! calls share one module. That this file compiles is most of the test.

#![allow(dead_code, non_camel_case_types)]

use nnc::runtime::Model;

/// Networks named like the prelude's types, one `network!` call each, in
/// one module. `Vec` is modal (dropout), whose code keeps state buffers.
mod named_like_the_prelude {
    nnc::network! {
        network Vec {
            input x: f32[batch, 4];
            input t: f32[batch, 2];
            h = dense(x, 8) |> relu |> dropout(0.5);
            loss mse(dense(h, 2), t);
        }
    }
    nnc::network! {
        network Option {
            input x: f32[batch, 4];
            label y: class[batch] of 3;
            loss cross_entropy(dense(x, 3), y);
        }
    }
    nnc::network! {
        network String {
            input x: f32[batch, 4];
            h = batch_norm(dense(x, 4));
            loss mean(h * h);
        }
    }
    nnc::network! {
        network Box {
            input x: f32[batch, 4];
            output y = dense(x, 2);
            loss mean(y * y);
        }
        network Result {
            input x: f32[batch, 4];
            loss mean(x);
        }
    }
}

/// A module whose own items shadow the prelude's names (and `core`'s and
/// `std`'s as relative paths).
mod shadowed {
    struct Ok;
    struct Err;
    struct Some;
    struct None;
    type Vec = ();
    type Result = ();
    type Option = ();
    mod core {}
    mod std {}
    nnc::network! {
        network Shadowed {
            input x: f32[batch, 4];
            label y: class[batch] of 3;
            h = dense(x, 8) |> relu |> dropout(0.25);
            output p = softmax(dense(h, 3));
            loss cross_entropy(dense(h, 3), y);
        }
    }
}

#[test]
fn networks_named_like_prelude_types_train() {
    use named_like_the_prelude as n;
    let x: ::std::vec::Vec<f32> = (0..8).map(|i| i as f32 / 8.0).collect();
    let mut v = n::Vec::new(2);
    assert!(v.train_step(&x, &[0.5; 4]).unwrap().is_finite());
    let mut o = n::Option::new(2);
    assert!(o.train_step(&x, &[0, 2]).unwrap().is_finite());
    let mut s = n::String::new(2);
    assert!(s.train_step(&x).unwrap().is_finite());
    let mut b = n::Box::new(2);
    assert!(b.train_step(&x).unwrap().is_finite());
    let mut r = n::Result::new(2);
    assert!(r.train_step(&x).unwrap().is_finite());
    assert_eq!(n::VEC_SPEC.name, "Vec");
    assert_eq!(n::RESULT_SPEC.name, "Result");
    assert_eq!(v.spec().name, "Vec");
}

#[test]
fn a_module_that_shadows_the_prelude_still_trains() {
    let x: ::std::vec::Vec<f32> = (0..8).map(|i| i as f32 / 8.0).collect();
    let mut m = shadowed::Shadowed::new(2);
    assert!(m.train_step(&x, &[1, 2]).unwrap().is_finite());
    let mut out = [0.0f32; 6];
    m.predict(&x, &mut out).unwrap();
    assert!((out[..3].iter().sum::<f32>() - 1.0).abs() < 1e-5, "{out:?}");
}
