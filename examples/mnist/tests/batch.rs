//! A batch size larger than the data is not an allocation of its size: the
//! example, like `fit`, trains on all the data as one batch (2^64 − 1 and
//! 10^11 both), where before it panicked with "capacity overflow" or aborted
//! in the allocator. The generated `try_new` refusing a batch that does not
//! fit in memory is tested in the crate (src/lib.rs).

use std::process::Command;

fn run(batch: &str) -> (Option<i32>, String, String) {
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
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_batch_larger_than_the_data_trains_on_all_of_it_at_once() {
    for batch in ["18446744073709551615", "100000000000"] {
        let (code, out, err) = run(batch);
        assert_eq!(code, Some(0), "--batch {batch}: {err}");
        // One step saw every training digit (7,200 of the bundled 10k after
        // the validation and test parts).
        assert!(
            out.contains("(1 steps, 7200 samples)"),
            "--batch {batch}: {out}"
        );
    }
}
