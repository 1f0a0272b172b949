//! `nnc`: the facade crate users depend on.
//!
//! It re-exports the runtime that generated code links against, the compiler
//! library, the build-script API and the `network!` macro. A model is
//! compiled either from a `.nn` file in a build script:
//!
//! ```ignore
//! // build.rs
//! fn main() {
//!     nnc::build::compile("models/mnist_mlp.nn").unwrap();
//! }
//!
//! // src/main.rs
//! nnc::include_model!("mnist_mlp");
//! ```
//!
//! or from the same text inside the crate, with errors on its tokens:
//!
//! ```ignore
//! nnc::network! {
//!     network MnistMlp { /* ... */ }
//!     train MnistMlp { /* ... */ }
//! }
//! ```

pub use nnc_compiler as compiler;
pub use nnc_compiler::build;
pub use nnc_macros::network;
pub use nnc_runtime as runtime;

/// Includes the Rust code that `nnc::build::compile` generated into
/// `OUT_DIR` for a model, by the model file's stem.
#[macro_export]
macro_rules! include_model {
    ($stem:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $stem, ".rs"));
    };
}
