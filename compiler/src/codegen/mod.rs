//! Code generation: finished, optimised graphs become plain, readable Rust
//! that links `nnc-runtime` — shape constants, one function per kernel
//! (each commented with the graph node and source line it came from), a
//! `train_step` that calls them in schedule order on one preallocated
//! workspace, `loss`, `predict`, and an `impl Model` so the runtime can
//! drive it.
//!
//! Codegen is the last stage: it is handed an [`Input`] (a network's
//! declarations, its `train` block, its optimised training graph and, for a
//! modal network, its optimised inference graph) and calls no earlier stage.
//! `network.rs` emits the struct and its entry points, `modal.rs` the parts
//! only modal networks have, `kernels.rs` the kernel functions and the calls
//! to them, `layout.rs` places every value (planned by `memory.rs`),
//! `fuse.rs` decides fusion, `int8.rs` the int8 inference plan, `spec.rs` emits the `ModelSpec`, `stats.rs`
//! measures a step for `--stats` and `--explain-fusion`, and `target.rs`
//! is the seam below which a [`Target`] writes each kernel's body;
//! `teacher.rs` loads a teacher network's weights for its student.

mod backprop;
mod emit;
mod explain;
mod format;
mod fuse;
mod int8;
mod kernels;
mod layout;
pub mod memory;
mod modal;
mod network;
mod spec;
mod stats;
pub mod surface;
pub mod target;
mod teacher;
mod template;

use crate::diagnostic::{CompileError, Diagnostic, ErrorKind, SourceFile};
use crate::graph::{Dim, NodeId};
use crate::ir::{Network, OptLevel, TrainConfig, TrainingGraph};
use proc_macro2::{Ident, Literal, Span as PSpan, TokenStream};
use quote::format_ident;
use std::sync::Arc;

pub use emit::Emit;
pub use int8::{int8, Int8Plan};
pub use network::{network, network_with};
pub use spec::{model_hash, screaming};
pub use stats::{explain_fusion, stats, Stats};
pub use target::{RustRuntime, Target};

/// How to generate.
#[derive(Clone, Debug)]
pub struct Options {
    /// The path generated code uses for the runtime crate. Users depend on
    /// the facade, so the default is `::nnc::runtime`.
    pub runtime: String,
    /// How much to optimise.
    pub opt_level: OptLevel,
    /// Graph passes to skip (by name, see `nnc compile --list-passes`).
    pub disabled_passes: Vec<String>,
    /// What kernel bodies are written as ([`RustRuntime`] unless a
    /// second target is plugged in).
    pub target: Arc<dyn Target>,
    /// Also generate `input_gradient`, the gradient of the loss's
    /// prediction with respect to the float inputs (for attributions).
    pub explain: bool,
    /// Also generate an int8 inference plan (`int8_plan`, `quantize_int8`,
    /// `load_int8`; `nnc compile --quantize int8`).
    pub quantize: Option<Quantize>,
}

/// A quantized inference form to generate next to the f32 model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantize {
    /// Post-training int8: u8 activations, per-channel 7-bit weights.
    Int8,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runtime: "::nnc::runtime".to_string(),
            opt_level: OptLevel::default(),
            disabled_passes: Vec::new(),
            target: Arc::new(RustRuntime),
            explain: false,
            quantize: None,
        }
    }
}

/// What codegen compiles one network from: everything the earlier stages
/// produced for it.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The network's declarations (inputs, parameters and their
    /// initializers, outputs, state) and its forward graph as declared.
    pub net: &'a Network,
    /// Its `train` block (or the defaults).
    pub config: &'a TrainConfig,
    /// The optimised training graph: `train_step` is generated from it.
    pub train: &'a TrainingGraph,
    /// For a modal network (dropout, batch norm), the optimised graph of
    /// its inference form, which `loss` and `predict` run; `None` for any
    /// other network, whose training graph serves every entry point.
    pub inference: Option<&'a TrainingGraph>,
    /// With [`Options::explain`], the optimised explanation graph
    /// (`autodiff::input_gradient_graph`) `input_gradient` is generated from.
    pub explain: Option<&'a TrainingGraph>,
    /// For a pipeline stage, the hash of the whole pipeline's layout (the
    /// network and every stage), which the generated `Model::layout_hash`
    /// returns so that ranks compare it at start-up; `None` otherwise.
    pub layout: Option<u64>,
}

/// The runtime path of `opts` as tokens, or the error for a path that is
/// not one.
pub fn runtime_path(opts: &Options) -> Result<TokenStream, CompileError> {
    opts.runtime.parse().map_err(|_| {
        Diagnostic::new(
            ErrorKind::Invalid,
            Default::default(),
            format!("`{}` is not a Rust path", opts.runtime),
        )
        .into()
    })
}

/// The generated items of a source file as formatted Rust, with an
/// `@generated` header.
pub fn format(source: &SourceFile, items: TokenStream) -> Result<String, CompileError> {
    let mut body = header(source);
    format_into(&mut body, items, &mut Emit::tokens())?;
    Ok(body)
}

/// The `@generated` header of a source file's generated Rust.
pub fn header(source: &SourceFile) -> String {
    format!(
        "// @generated by nnc {} from {}. Do not edit: edit the model and rebuild.\n\n",
        env!("CARGO_PKG_VERSION"),
        source.name,
    )
}

/// Formats generated items onto `out`, their placeholders replaced by the
/// texts `emit` holds for them (see [`Emit`]); every text is used, once.
pub fn format_into(
    out: &mut String,
    items: TokenStream,
    emit: &mut Emit,
) -> Result<(), CompileError> {
    let internal = |message: String| -> CompileError {
        Diagnostic::new(ErrorKind::Internal, Default::default(), message).into()
    };
    // Item by item: one item's syntax tree alive at a time (see format.rs).
    format::items(items, out, emit)
        .map_err(|e| internal(format!("generated code does not parse: {e}")))?;
    if !emit.all_taken() {
        return Err(internal("generated text left out of the file".into()));
    }
    Ok(())
}

/// A name usable as a Rust identifier for a user's input or output.
fn var(name: &str) -> Ident {
    // Every name generated code binds next to the user's slices.
    const TAKEN: &[&str] = &[
        "b",
        "mb",
        "ws",
        "p",
        "g",
        "st",
        "tw",
        "src",
        "key",
        "stats",
        "scores",
        "params",
        "grads",
        "max_batch",
        "batch",
        "inputs",
        "outputs",
        "model",
    ];
    if TAKEN.contains(&name) {
        return format_ident!("{}_", name);
    }
    rust_ident(name)
}

/// `name` (a user's input or output, the network's type) as an identifier:
/// itself, a raw identifier for a Rust keyword the language allows as a
/// name (`static`, `type`, ...: `r#static`), or with a `_` for the four
/// keywords that cannot be raw.
fn rust_ident(name: &str) -> Ident {
    if matches!(name, "self" | "Self" | "super" | "crate") {
        return format_ident!("{}_", name);
    }
    syn::parse_str::<Ident>(name).unwrap_or_else(|_| Ident::new_raw(name, PSpan::call_site()))
}

fn usize_lit(n: usize) -> Literal {
    Literal::usize_suffixed(n)
}

/// The nodes `targets` depend on, in index (topological) order.
fn ancestors(tg: &TrainingGraph, targets: &[NodeId]) -> Vec<NodeId> {
    let seen = tg.graph.ancestors(targets);
    tg.graph
        .ids()
        .filter(|id| seen.contains(&id.index()))
        .collect()
}

fn codegen_error(span: crate::diagnostic::Span, message: String) -> CompileError {
    Diagnostic::new(ErrorKind::Invalid, span, message).into()
}

/// Whether a dimension list mentions the batch more than once (unsupported
/// by the workspace layout).
pub(crate) fn batch_power_ok(dims: &[Dim]) -> bool {
    dims.iter().filter(|d| **d == Dim::Batch).count() <= 1
}
