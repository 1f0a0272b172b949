//! Where `nnc compile -o` and `nnc graph -o` write (issue 22: a rename over
//! `/dev/null` once replaced the device with a regular file): a regular file
//! is replaced, a symlink followed (it stays a link), a device or FIFO
//! written in place and never read, `-` is standard output, and the model
//! file itself is refused. And error chains name their cause once.

#![cfg(unix)]

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::cli::{nnc, stderr, with_model};

/// A fresh directory holding a copy of the MNIST model as `m.nn`.
fn workdir(name: &str) -> PathBuf {
    with_model(name, "mnist_mlp")
}

/// The code `nnc compile m.nn` prints.
fn expected_code(dir: &Path) -> Vec<u8> {
    let out = nnc(dir, &["compile", "m.nn"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.starts_with(b"// @generated"));
    out.stdout
}

fn is_char_device(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

#[test]
fn regular_files_and_symlinks_get_the_code_and_links_stay_links() {
    let dir = workdir("regular");
    let code = expected_code(&dir);
    std::fs::write(dir.join("out.rs"), "stale contents").unwrap();
    let out = nnc(&dir, &["compile", "m.nn", "-o", "out.rs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.join("out.rs")).unwrap(), code);
    // A link to a file, and a dangling link: the targets get the code.
    std::fs::write(dir.join("target.rs"), "old").unwrap();
    std::os::unix::fs::symlink("target.rs", dir.join("link.rs")).unwrap();
    std::os::unix::fs::symlink("later.rs", dir.join("dangling.rs")).unwrap();
    for (link, target) in [("link.rs", "target.rs"), ("dangling.rs", "later.rs")] {
        let out = nnc(&dir, &["compile", "m.nn", "-o", link]);
        assert!(out.status.success(), "{}", stderr(&out));
        let m = std::fs::symlink_metadata(dir.join(link)).unwrap();
        assert!(m.file_type().is_symlink(), "{link} was replaced by a file");
        assert_eq!(std::fs::read(dir.join(target)).unwrap(), code);
    }
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dash_is_standard_output() {
    let dir = workdir("dash");
    let code = expected_code(&dir);
    let out = nnc(&dir, &["compile", "m.nn", "-o", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, code);
    let out = nnc(&dir, &["graph", "m.nn", "-o", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("digraph"));
    assert!(!dir.join("-").exists(), "a file named `-` was written");
    // `/dev/stdout` is a link to a pipe here, which no path names: written
    // in place (it was once looked up as a path, and not found).
    if Path::new("/dev/stdout").exists() {
        let out = nnc(&dir, &["compile", "m.nn", "-o", "/dev/stdout"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(out.stdout, code);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_model_file_is_never_overwritten() {
    let dir = workdir("input");
    let model = std::fs::read(dir.join("m.nn")).unwrap();
    std::os::unix::fs::symlink("m.nn", dir.join("alias.rs")).unwrap();
    std::fs::hard_link(dir.join("m.nn"), dir.join("hard.rs")).unwrap();
    for args in [
        ["compile", "m.nn", "-o", "m.nn"],
        ["compile", "m.nn", "-o", "./m.nn"],
        ["compile", "m.nn", "-o", "alias.rs"],
        ["compile", "alias.rs", "-o", "hard.rs"],
        ["graph", "m.nn", "-o", "m.nn"],
    ] {
        let out = nnc(&dir, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?} was accepted");
        assert!(
            stderr(&out).contains("is the input file"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(std::fs::read(dir.join("m.nn")).unwrap(), model, "{args:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn devices_are_written_in_place_and_a_full_one_is_a_clean_error() {
    let dir = workdir("devices");
    for cmd in ["compile", "graph"] {
        let out = nnc(&dir, &[cmd, "m.nn", "-o", "/dev/null"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(is_char_device(Path::new("/dev/null")), "/dev/null replaced");
    }
    if Path::new("/dev/full").exists() {
        // Earlier, `-o` read the old output first: /dev/full never ends.
        let out = nnc(&dir, &["compile", "m.nn", "-o", "/dev/full"]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains("cannot write /dev/full"), "{err}");
        assert_eq!(err.matches("No space left").count(), 1, "{err}");
        assert!(is_char_device(Path::new("/dev/full")), "/dev/full replaced");
    }
    // A device node of our own (the case that destroyed /dev/null): only
    // root may make one, and only in a temporary directory.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let node = dir.join("null-node");
    let made = root
        && Command::new("mknod")
            .arg(&node)
            .args(["c", "1", "3"])
            .status()
            .is_ok_and(|s| s.success());
    if made {
        let out = nnc(&dir, &["compile", "m.nn", "-o", "null-node"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(is_char_device(&node), "the device node was replaced");
    } else {
        eprintln!("note: not root (or no mknod): the device-node case is skipped");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fifo_is_written_to_its_reader() {
    let dir = workdir("fifo");
    let code = expected_code(&dir);
    let fifo = dir.join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("note: mkfifo is not available: the FIFO case is skipped");
        return;
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).expect("read the FIFO"))
    };
    let out = nnc(&dir, &["compile", "m.nn", "-o", "pipe"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(reader.join().unwrap(), code);
    let m = std::fs::symlink_metadata(&fifo).unwrap();
    assert!(m.file_type().is_fifo(), "the FIFO was replaced");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The error chain's causes, each expected exactly once in `text`.
fn assert_once(text: &str, cause: &str) {
    assert_eq!(text.matches(cause).count(), 1, "`{cause}` in: {text}");
}

#[test]
fn error_chains_print_their_cause_once() {
    let dir = workdir("chains");
    // The command line: an unreadable model, an unwritable output.
    let out = nnc(&dir, &["check", "missing.nn"]);
    assert_eq!(out.status.code(), Some(2));
    assert_once(&stderr(&out), "No such file or directory");
    assert_once(&stderr(&out), "missing.nn");
    let out = nnc(&dir, &["compile", "m.nn", "-o", "no/such/dir/out.rs"]);
    assert_eq!(out.status.code(), Some(2));
    assert_once(&stderr(&out), "No such file or directory");
    assert_once(&stderr(&out), "no/such/dir/out.rs");
    // The build-script API's error, rendered as anyhow's chain.
    let opts = nnc_compiler::codegen::Options::default();
    let e = nnc_compiler::build::compile_to_string(&dir.join("missing.nn"), &opts).unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(e));
    assert_once(&chain, "No such file or directory");
    assert_once(&chain, "missing.nn");
    let e = nnc_compiler::build::write_if_changed(&dir.join("no/out.rs"), "x").unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(e));
    assert!(chain.starts_with("cannot write "), "{chain}");
    assert_once(&chain, "No such file or directory");
    assert_once(&chain, "no/out.rs");
    std::fs::remove_dir_all(&dir).unwrap();
}
