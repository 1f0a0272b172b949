//! Where `nnc compile` and `nnc graph` put what they produce: standard
//! output (no `-o`, or `-o -`), or a file written by the one rule every nnc
//! output follows ([`nnc_spec::output`]: a regular file replaced atomically,
//! a symlink followed, a device or FIFO written in place, nothing read but a
//! regular file's size), never the model the text came from.

use anyhow::{bail, Context};
use nnc_spec::output;
use std::io::ErrorKind;
use std::path::Path;

/// Writes `text`, generated from the model file `input`, to `dest` (`None`
/// or `-`: standard output). A regular file holding exactly `text` is left
/// alone, so a build that depends on it does not rerun.
pub fn write(dest: Option<&Path>, input: &Path, text: &str) -> anyhow::Result<()> {
    let dest = dest.unwrap_or(Path::new("-"));
    if output::is_stdout(dest) {
        return match output::write(dest, text.as_bytes()) {
            // The reader stopped reading (`nnc compile m.nn | head`): what it
            // wanted it has.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
            r => r.context("cannot write to standard output"),
        };
    }
    if output::same_file(dest, input) {
        bail!(
            "refusing to write over the model {}: -o {} is the input file",
            input.display(),
            dest.display()
        );
    }
    output::write_if_changed(dest, text.as_bytes())
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}
