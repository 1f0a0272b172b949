//! `nnc-compiler`: the nnc pipeline as a library.
//!
//! Data flows one way (see `ARCHITECTURE.md`):
//!
//! ```text
//! text ─► syntax (pest → AST with spans) ─► lower (AST → shape-checked graph)
//!      ─► autodiff (graph → training graph) ─► interp (f64 oracle) / later stages
//! ```
//!
//! The entry points most users want are [`check_source`] (parse and lower one
//! file) and [`Module`], its result.

pub mod autodiff;
pub mod build;
pub mod codegen;
pub mod diagnostic;
pub mod graph;
pub mod interp;
pub mod ir;
pub mod lower;
pub mod ops;
pub mod passes;
pub mod report;
pub mod syntax;

pub use diagnostic::{CompileError, Diagnostic, ErrorKind, SourceFile, Span};
pub use ir::{Module, Network, TrainConfig};

/// Parses and lowers one source file into shape-checked networks and their
/// training configurations.
///
/// Every error found is returned, each with the span of the source it
/// concerns; the result never panics on malformed input.
pub fn check_source(source: &SourceFile) -> Result<Module, CompileError> {
    let ast = syntax::parse(&source.text)?;
    lower::lower(&ast)
}
