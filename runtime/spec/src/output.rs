//! How nnc writes a file it produces — generated code, a graph, a
//! checkpoint, the metrics log, curves, predictions — in one place, so the
//! compiler's `nnc compile -o` and the runtime's writers follow one rule:
//!
//! - a regular file (or a path that does not exist yet) is replaced
//!   atomically: written to a temporary sibling `.NAME.tmp-PID-N`, synced,
//!   renamed over it, so a crash or a full disk never leaves half a file;
//! - a symlink is followed to the file it names, which is replaced the same
//!   way: the link stays a link;
//! - anything else — a device such as `/dev/null` or `/dev/full`, a FIFO, a
//!   terminal, `/dev/stdout` — is opened for writing and written in place,
//!   never renamed over, never truncated, never read;
//! - `-` is standard output.
//!
//! Nothing here reads an existing output beyond its metadata, except
//! [`write_if_changed`], which compares a regular file of the same length.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Whether `path` is `-`, which nnc's command lines read as standard output.
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Writes `bytes` to `path` by the rule of this module's docs.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, bytes, |_| Ok(()))
}

/// [`write()`], running `before_rename` on the temporary file of an atomic
/// replacement just before the rename (a seam for tests to inject a crash).
/// On any failure the temporary file is removed and the old file is intact.
pub fn write_with(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    if is_stdout(path) {
        let mut out = io::stdout().lock();
        return out.write_all(bytes).and_then(|()| out.flush());
    }
    // The kernel follows the links (`/dev/stdout` → `/proc/self/fd/1` →
    // a pipe, which no path names); only a regular file is looked up by path.
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            // No `truncate` and no `create`: a device or FIFO is written as
            // it is; a directory fails to open ("Is a directory").
            let mut f = OpenOptions::new().write(true).open(path)?;
            f.write_all(bytes).and_then(|()| f.flush())
        }
        Ok(_) => replace(&std::fs::canonicalize(path)?, bytes, before_rename),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            replace(&resolve(path)?, bytes, before_rename)
        }
        Err(e) => Err(e),
    }
}

/// [`write()`], unless `path` names a regular file that already holds exactly
/// `bytes` (compared only when the lengths agree); whether it wrote. Build
/// scripts use it so an unchanged output does not trigger a rebuild.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    if !is_stdout(path) {
        let unchanged = std::fs::metadata(path)
            .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
            && std::fs::read(path).is_ok_and(|old| old == bytes);
        if unchanged {
            return Ok(false);
        }
    }
    write(path, bytes)?;
    Ok(true)
}

/// Whether `a` and `b` name the same existing file (after symlinks; on Unix
/// the same device and inode, so a hard link counts too).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        ma.dev() == mb.dev() && ma.ino() == mb.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (ma, mb);
        matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
    }
}

/// A path that does not exist, or a dangling symlink followed to the path
/// it names (which is then created; the link is kept).
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    // The kernel's own limit on links in a path.
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) => dir.join(link),
                    None => link,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(io::Error::other(format!(
        "too many levels of symbolic links at {}",
        path.display()
    )))
}

/// Replaces the regular file (or new file) `path` atomically.
fn replace(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        before_rename(&tmp)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable. Directories cannot be opened for
    // syncing on every platform, so failure here is not an error.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nnc-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn regular_files_are_replaced_and_links_followed() {
        let dir = temp_dir("regular");
        let file = dir.join("out.rs");
        std::fs::write(&file, "old contents that are longer").unwrap();
        write(&file, b"new").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        // A link, and a dangling link: both stay links; their targets change.
        let target = dir.join("target.rs");
        std::fs::write(&target, "old").unwrap();
        let link = dir.join("link.rs");
        std::os::unix::fs::symlink("target.rs", &link).unwrap();
        write(&link, b"through").unwrap();
        let dangling = dir.join("dangling.rs");
        std::os::unix::fs::symlink("later.rs", &dangling).unwrap();
        write(&dangling, b"created").unwrap();
        for l in [&link, &dangling] {
            let m = std::fs::symlink_metadata(l).unwrap();
            assert!(m.file_type().is_symlink(), "{} replaced", l.display());
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"through");
        assert_eq!(std::fs::read(dir.join("later.rs")).unwrap(), b"created");
        // Unchanged content is not rewritten (same inode); changed is.
        assert!(!write_if_changed(&file, b"new").unwrap());
        assert!(write_if_changed(&file, b"newer").unwrap());
        assert_eq!(
            names(&dir),
            ["dangling.rs", "later.rs", "link.rs", "out.rs", "target.rs"]
        );
        assert!(same_file(&link, &target) && !same_file(&file, &target));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_replacement_keeps_the_old_file_and_no_temporary() {
        let dir = temp_dir("failed");
        let file = dir.join("out.rs");
        std::fs::write(&file, "old").unwrap();
        let e = write_with(&file, b"new", |_| Err(io::Error::other("crash"))).unwrap_err();
        assert_eq!(e.to_string(), "crash");
        assert_eq!(std::fs::read(&file).unwrap(), b"old");
        assert_eq!(names(&dir), ["out.rs"]);
        // A directory is not a file to write.
        assert!(write(&dir, b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_are_written_in_place() {
        write(Path::new("/dev/null"), b"discarded").unwrap();
        let m = std::fs::metadata("/dev/null").unwrap();
        assert!(m.file_type().is_char_device(), "/dev/null was replaced");
        if Path::new("/dev/full").exists() {
            let e = write(Path::new("/dev/full"), b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(28), "{e}");
            let m = std::fs::metadata("/dev/full").unwrap();
            assert!(m.file_type().is_char_device(), "/dev/full was replaced");
        }
    }
}
