//! The parts of a generated network that only a student with a teacher
//! compiled in (`teacher:` in its `train` block) has: the table of the
//! teacher's tensors, the process-wide buffer they are loaded into once,
//! and `teacher_weights`, which every entry point reading them calls. The
//! buffer is read-only and shared: the teacher is a constant of the
//! compiled model, not trained, saved or given to the optimizer.

use super::layout::frozen_names;
use super::{codegen_error, spec, usize_lit};
use crate::diagnostic::{CompileError, SourceFile};
use crate::ir::{Network, TrainConfig, TrainingGraph};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use std::path::Path;

/// The teacher's statics and inherent methods (empty without a teacher).
pub(super) struct Teacher {
    pub(super) statics: TokenStream,
    pub(super) methods: TokenStream,
}

/// The teacher items of `net`, after checking that every graph lays the
/// teacher's tensors out in `net.frozen`'s order.
pub(super) fn teacher(
    source: &SourceFile,
    net: &Network,
    cfg: &TrainConfig,
    graphs: &[&TrainingGraph],
    rt: &TokenStream,
) -> Result<Teacher, CompileError> {
    let Some(t) = cfg.teacher.as_ref().filter(|_| !net.frozen.is_empty()) else {
        return Ok(Teacher {
            statics: quote!(),
            methods: quote!(),
        });
    };
    let names: Vec<&str> = net.frozen.iter().map(|f| f.name.as_str()).collect();
    for tg in graphs {
        let laid = frozen_names(tg);
        if laid.iter().any(|n| !names.contains(n)) || laid.len() > names.len() {
            return Err(codegen_error(
                t.span,
                format!(
                    "the teacher's tensors are laid out as {laid:?}, the network declares {names:?}"
                ),
            ));
        }
    }
    // The weights file as the `.nn` file names it, relative to that file.
    let path = {
        let p = Path::new(&t.path);
        let joined = match Path::new(&source.name).parent() {
            Some(dir) if !p.is_absolute() => dir.join(p),
            _ => p.to_path_buf(),
        };
        std::path::absolute(&joined)
            .unwrap_or(joined)
            .to_string_lossy()
            .into_owned()
    };
    let screaming = spec::screaming(&net.name);
    let table: Ident = format_ident!("{}_TEACHER", screaming);
    let buffer: Ident = format_ident!("{}_TEACHER_WEIGHTS", screaming);
    let entries: Vec<TokenStream> = net
        .frozen
        .iter()
        .map(|f| {
            let name = &f.tensor;
            let dims: Vec<_> = f.shape.resolve(1).into_iter().map(usize_lit).collect();
            quote!((#name, &[#(#dims),*]))
        })
        .collect();
    let table_doc = format!(
        " The tensors of teacher `{}` compiled into `{}`: each one's name in its weights file and its shape, in the order of the teacher buffer.",
        t.network, net.name
    );
    let buffer_doc = format!(
        " The weights of teacher `{}`, loaded once per process by `{}::teacher_weights`.",
        t.network, net.name
    );
    let path_doc = format!(
        " The weights file of teacher `{}` (`teacher:` in the train block), resolved against the `.nn` file.",
        t.network
    );
    Ok(Teacher {
        statics: quote! {
            #[doc = #table_doc]
            pub static #table: &[(&str, &[usize])] = &[#(#entries),*];
            #[doc = #buffer_doc]
            static #buffer: ::std::sync::OnceLock<::std::vec::Vec<f32>> = ::std::sync::OnceLock::new();
        },
        methods: quote! {
            #[doc = #path_doc]
            pub const TEACHER_PATH: &'static str = #path;
            /// The teacher's weights: read from [`Self::TEACHER_PATH`] on the
            /// first call (names, shapes and finiteness checked), then kept
            /// for the process. Every entry point that runs the teacher calls
            /// it, so a missing or mismatched file is the first step's error.
            pub fn teacher_weights() -> ::core::result::Result<&'static [f32], #rt::StepError> {
                if let ::core::option::Option::Some(w) = #buffer.get() {
                    return ::core::result::Result::Ok(w);
                }
                let w = #rt::checkpoint::load_frozen(Self::TEACHER_PATH, #table)
                    .map_err(|e| #rt::StepError::Teacher { reason: e.to_string() })?;
                ::core::result::Result::Ok(#buffer.get_or_init(|| w))
            }
        },
    })
}
