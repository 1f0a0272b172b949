//! `nnc`: the facade crate users depend on.
//!
//! It re-exports the compiler library (for build scripts and tools) and the
//! runtime that generated code links against.

pub use nnc_compiler as compiler;
pub use nnc_runtime as runtime;
