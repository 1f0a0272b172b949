//! A batch size too large for memory is an error from `mnist`, not a
//! panic or an allocation abort: 2^64 − 1 overflows the workspace's size
//! (the generated `try_new` refuses it), 10^11 passes that check and is
//! refused by the allocator when the step's buffers are sized.

use std::process::Command;

fn run(batch: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mnist"))
        .args([
            "--quiet",
            "--epochs",
            "1",
            "--max-steps",
            "1",
            "--batch",
            batch,
        ])
        .output()
        .expect("mnist runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_batch_of_2_to_the_64_is_an_error() {
    let (code, err) = run("18446744073709551615");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot allocate the workspace"), "{err}");
}

#[test]
fn a_batch_of_10_to_the_11_is_an_error() {
    let (code, err) = run("100000000000");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot allocate the workspace"), "{err}");
}
