//! What the fuzz targets share: the front end's invariants, the model
//! generator of the structure-aware target, the `network!` expansion, and
//! scratch files for the readers that take a path.
//!
//! Every target asserts the same promise (docs/reliability.md): no panic,
//! no hang, no runaway allocation on any input; every error a user can
//! cause is a diagnostic pointing into the input, never an internal error.

pub mod model;

use nnc_compiler::codegen::Options;
use nnc_compiler::driver;
use nnc_compiler::ir::OptLevel;
use nnc_compiler::{check_source, report, CompileError, ErrorKind, SourceFile};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The name inputs are checked under; diagnostics must cite it.
pub const SOURCE_NAME: &str = "fuzz.nn";

/// Runs `text` through the whole front end as `nnc check` and `nnc compile
/// -O{opt}` do, and checks the invariants: errors are well-formed
/// diagnostics; a model that checks also differentiates, summarises and
/// compiles, and the Rust it compiles to parses.
///
/// One input in [`FORMAT_EVERY`] (by a hash of its text, so a crash
/// reproduces) is compiled to formatted text as `nnc compile` writes it,
/// and the text is parsed again; the others stop at the token stream
/// (`driver::generate_tokens`, what `network!` expands to), parsed as a
/// Rust file by `syn`. Formatting and parsing the text again took over
/// half of an execution (`perf`, docs/reliability.md), and the formatter
/// has its own tests (`compiler/tests/generate.rs`, the snapshots).
pub fn frontend(text: &str, opt: OptLevel) {
    let source = SourceFile::new(SOURCE_NAME, text);
    let module = match check_source(&source) {
        Ok(module) => module,
        Err(e) => return diagnostics(&source, &e),
    };
    for net in &module.networks {
        assert_eq!(net.graph.verify(), Ok(()), "network `{}`", net.name);
        // What `nnc check` prints.
        let tg = driver::training_graph(&module, net).unwrap_or_else(|d| {
            panic!(
                "network `{}` checks but does not differentiate: {}",
                net.name,
                source.locate(&d)
            )
        });
        assert_eq!(tg.graph.verify(), Ok(()));
        let summary = report::summary(net, &tg);
        assert!(summary.starts_with(&format!("network {}\n", net.name)));
    }
    let opts = Options {
        opt_level: opt,
        ..Options::default()
    };
    if fnv1a(text.as_bytes()) % FORMAT_EVERY == 0 {
        match driver::generate(&source, &module, &opts) {
            Ok(code) => {
                if let Err(e) = syn::parse_file(&code) {
                    panic!("generated code does not parse: {e}\n{code}");
                }
            }
            Err(e) => diagnostics(&source, &e),
        }
    } else {
        match driver::generate_tokens(&source, &module, &opts) {
            Ok(tokens) => {
                if let Err(e) = syn::parse2::<syn::File>(tokens.clone()) {
                    panic!("generated code does not parse: {e}\n{tokens}");
                }
            }
            Err(e) => diagnostics(&source, &e),
        }
    }
}

/// One input in this many goes through formatting ([`frontend`]).
pub const FORMAT_EVERY: u64 = 8;

/// FNV-1a (64 bit): which inputs [`frontend`] formats.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The invariants of a failed compilation: at least one diagnostic, each
/// with a message, spans inside the text on character boundaries, none
/// blaming nnc itself, and a rendering that cites the file.
pub fn diagnostics(source: &SourceFile, e: &CompileError) {
    let text = source.text.as_str();
    assert!(!e.diagnostics.is_empty(), "an error without diagnostics");
    for d in &e.diagnostics {
        let spans = std::iter::once(d.span).chain(d.notes.iter().map(|n| n.0));
        for s in spans {
            assert!(
                s.start <= s.end && s.end <= text.len(),
                "span {s:?} outside a text of {} bytes: {}",
                text.len(),
                d.message
            );
            assert!(
                text.is_char_boundary(s.start) && text.is_char_boundary(s.end),
                "span {s:?} splits a character: {}",
                d.message
            );
        }
        assert_ne!(d.kind, ErrorKind::Internal, "{}", source.locate(d));
        assert!(!d.message.is_empty());
    }
    let rendered = source.render(&e.diagnostics, false);
    assert!(rendered.contains(SOURCE_NAME), "{rendered}");
}

/// Whether the readers' targets (`csv`, `idx`, `checkpoint`) read each
/// input through a scratch file, as `nnc train` reads a path, instead of
/// from memory: `NNC_FUZZ_FILES=1`. From memory by default: a file per
/// execution cost most of these targets' time, and the file readers only
/// open the file and call the in-memory ones (the runtime's tests check
/// that both read alike, `runtime/src/data/tests.rs`, `checkpoint/tests.rs`).
pub fn through_files() -> bool {
    static FILES: OnceLock<bool> = OnceLock::new();
    *FILES.get_or_init(|| std::env::var_os("NNC_FUZZ_FILES").is_some_and(|v| v == "1"))
}

/// A scratch file private to this process, for readers that take a path
/// (the checkpoint loader, `read_csv`, IDX pairs); `tag` tells several
/// apart. Under the system's temporary directory, rewritten on every use.
pub fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nnc-fuzz-{}-{tag}", std::process::id()))
}

/// Writes `bytes` to the scratch file `tag` and returns its path.
pub fn scratch_file(tag: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch(tag);
    std::fs::write(&path, bytes).expect("cannot write a scratch file");
    path
}

// The `network!` macro's own modules, compiled into this crate: the proc
// macro crate can export nothing but the macro, and these modules use only
// proc-macro2, which works outside a macro too (as the macro's unit tests
// run them). They sit at the crate root because they name each other
// `crate::render` and so on.
#[allow(dead_code, unreachable_pub)]
#[path = "../../macros/src/error.rs"]
mod error;
#[allow(dead_code, unreachable_pub)]
#[path = "../../macros/src/expand.rs"]
mod expand;
#[allow(dead_code, unreachable_pub)]
#[path = "../../macros/src/fallback.rs"]
mod fallback;
#[allow(dead_code, unreachable_pub)]
#[path = "../../macros/src/render.rs"]
mod render;

/// Expands `network! { text }` as the macro does and checks the
/// expansion: Rust items that parse, or `compile_error!`s followed by the
/// stand-ins. `None` when `text` does not tokenize as Rust (rustc would
/// reject the macro call before the macro sees it).
pub fn network_macro(text: &str) -> Option<()> {
    let tokens: proc_macro2::TokenStream = text.parse().ok()?;
    // The text the macro compiles, checked as a `.nn` file's would be.
    let rendered = render::render(tokens.clone());
    if let Err(e) = expand::check(&rendered, Some(SOURCE_NAME)) {
        diagnostics(&SourceFile::new(SOURCE_NAME, rendered.text.as_str()), &e);
    }
    let out = expand::expand(tokens, Some(SOURCE_NAME));
    if let Err(e) = syn::parse2::<syn::File>(out.clone()) {
        panic!("network! expands to something that does not parse: {e}\n{out}");
    }
    Some(())
}
