//! The build-script API (the prost-build / tonic-build convention): compile
//! `.nn` files into `OUT_DIR` from `build.rs`, pull them in with
//! `nnc::include_model!`.
//!
//! In `build.rs`, `fn main` calls:
//!
//! ```no_run
//! nnc_compiler::build::compile("models/mnist_mlp.nn").unwrap();
//! ```

use crate::codegen::Options;
use crate::diagnostic::{CompileError, SourceFile};
use crate::driver;
use std::path::{Path, PathBuf};

/// Why a build-script compilation failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The model could not be read. (The message leaves the cause to the
    /// error's source, so an error chain prints it once.)
    #[error("cannot read {}", path.display())]
    Read {
        /// The model file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The output could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The model has errors; the text is rendered like rustc's.
    #[error("nnc could not compile {path}:\n{rendered}")]
    Compile {
        /// The model file.
        path: PathBuf,
        /// The rendered diagnostics.
        rendered: String,
    },
    /// `OUT_DIR` is not set (not running under cargo).
    #[error("OUT_DIR is not set: call nnc's build API from a build script")]
    NoOutDir,
}

/// Compiles a model file to Rust source text (the library function behind
/// `nnc compile` and [`compile`]).
pub fn compile_to_string(path: &Path, opts: &Options) -> Result<String, BuildError> {
    let text = std::fs::read_to_string(path).map_err(|source| BuildError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let src = SourceFile::new(path.display().to_string(), text);
    driver::compile_source(&src, opts).map_err(|e: CompileError| BuildError::Compile {
        path: path.to_path_buf(),
        rendered: src.render(&e.diagnostics, false),
    })
}

/// The file name a model compiles to: `models/mnist_mlp.nn` → `mnist_mlp.rs`.
pub fn output_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy());
    format!("{stem}.rs")
}

/// Compiles `path` into `$OUT_DIR/<stem>.rs` and tells cargo to rerun the
/// build script when the model changes. The file is only rewritten when its
/// content changes, so an unchanged model does not trigger a rebuild.
pub fn compile(path: impl AsRef<Path>) -> Result<PathBuf, BuildError> {
    compile_with(path, &Options::default())
}

/// [`compile`] with explicit options.
pub fn compile_with(path: impl AsRef<Path>, opts: &Options) -> Result<PathBuf, BuildError> {
    let path = path.as_ref();
    println!("cargo:rerun-if-changed={}", path.display());
    let out_dir = std::env::var_os("OUT_DIR").ok_or(BuildError::NoOutDir)?;
    let code = compile_to_string(path, opts)?;
    let out = Path::new(&out_dir).join(output_name(path));
    write_if_changed(&out, &code)?;
    Ok(out)
}

/// Writes `code` to `out` unless it already holds exactly that, the way
/// every nnc output is written ([`nnc_spec::output`]): a regular file is
/// replaced through a temporary file and a rename, a symlink's target
/// likewise, a device or FIFO written in place.
pub fn write_if_changed(out: &Path, code: &str) -> Result<(), BuildError> {
    nnc_spec::output::write_if_changed(out, code.as_bytes())
        .map(drop)
        .map_err(|source| BuildError::Write {
            path: out.to_path_buf(),
            source,
        })
}
