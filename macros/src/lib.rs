//! `nnc-macros`: the `network!` procedural macro, the nnc language inside any
//! Rust crate. Users reach it through the facade as `nnc::network!`.
//!
//! The macro is a thin shell over `nnc-compiler`, in the shape of
//! thiserror's macro crate:
//!
//! - `render`: the input tokens become the text of a `.nn` file, laid out
//!   at the tokens' own lines and columns, with a map from byte ranges back
//!   to token spans;
//! - `expand`: that text goes through `nnc_compiler::check_source` and
//!   `driver::generate_tokens` — the code path of `nnc compile` and of
//!   build scripts;
//! - `error`: each diagnostic becomes a `compile_error!` on the tokens its
//!   byte range covers;
//! - `fallback`: on error, a stand-in with the network's public surface,
//!   so that one mistake in the model gives one error, not a cascade in the
//!   code that uses it.

mod error;
mod expand;
mod fallback;
mod render;

/// Declares networks in the nnc language and expands to the Rust training
/// code `nnc compile` generates for the same text:
///
/// ```ignore
/// nnc::network! {
///     network MnistMlp {
///         input  image: f32[batch, 784];
///         label  digit: class[batch] of 10;
///         h1     = dense(image, 128) |> relu;
///         logits = dense(h1, 10);
///         output probs = softmax(logits);
///         loss   cross_entropy(logits, digit);
///     }
///     train MnistMlp { optimizer: adam(lr: 1e-3); batch: 128; }
/// }
///
/// let mut model = MnistMlp::new(128);
/// ```
///
/// Each network `Foo` becomes `FOO_SPEC` (its `ModelSpec`) and `struct Foo`
/// with `new`, `train_step`, `loss`, `predict` and `impl Model`. Generated
/// code refers to the runtime as `::nnc::runtime`, so the crate depends on
/// the `nnc` facade. Errors point at the offending tokens.
#[proc_macro]
pub fn network(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand::expand(input.into(), None).into()
}
