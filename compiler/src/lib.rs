//! `nnc-compiler`: the nnc pipeline as a library.
//!
//! Data flows one way (see `ARCHITECTURE.md`), and [`driver`] runs it:
//!
//! ```text
//! text ─► syntax (pest → AST with spans) ─► lower (AST → shape-checked graph)
//!      ─► autodiff (graph → training graph) ─► passes (graph → graph)
//!      ─► codegen (graphs → Rust)
//! ```
//!
//! The stages share the types of [`ir`], [`graph`] and [`ops`] and never
//! call one another; `interp` is the f64 oracle every stage is tested
//! against. The entry points most users want are [`check_source`] (parse
//! and lower one file), [`Module`], its result, and [`driver::generate`].

pub mod autodiff;
pub mod build;
pub mod codegen;
pub mod diagnostic;
pub mod driver;
pub mod graph;
pub mod interp;
pub mod ir;
pub mod lower;
pub mod ops;
pub mod passes;
pub mod report;
pub mod syntax;

pub use diagnostic::{CompileError, Diagnostic, ErrorKind, SourceFile, Span};
pub use driver::check_source;
pub use ir::{Module, Network, TrainConfig};
