//! `nnc train`, `nnc eval` and `nnc predict` end to end: a `.nn` file and
//! a CSV are all it takes — a classifier and a regression, trained,
//! evaluated and run, their files checked — and every mistake a user can
//! make gets a message that says where.
//!
//! The models' programs are built (`--debug`) in a cache under the
//! workspace's target directory, shared by every test here and with later
//! runs, so the runtime is compiled once.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::cli::{command, nnc, ok, pairs, temp_dir, text};

/// `pairs.csv` and `pairs.nn` (40 epochs).
fn classification(dir: &Path) {
    pairs(dir, 7, 40);
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the compiler crate lives in the workspace")
        .to_path_buf()
}

#[test]
fn a_classifier_trains_evaluates_and_predicts_from_a_nn_file_and_a_csv() {
    let dir = temp_dir("classifier");
    classification(&dir);
    let out = ok(&nnc(&dir, &["train", "pairs.nn", "--debug", "--quiet"]));
    let run = dir.join("runs/Pairs");
    for f in [
        "weights.safetensors",
        "best.safetensors",
        "last.safetensors",
        "metrics.csv",
        "curves.svg",
    ] {
        assert!(run.join(f).is_file(), "{f} missing; stdout:\n{out}");
    }
    // Where everything went is said at the end.
    for f in [
        "weights.safetensors",
        "last.safetensors",
        "metrics.csv",
        "curves.svg",
    ] {
        assert!(
            out.contains(&format!("runs/Pairs/{f}")),
            "{f} not reported:\n{out}"
        );
    }
    let log = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(
        log.starts_with("epoch,steps,train_loss,val_loss,val_accuracy,lr,"),
        "{log}"
    );
    assert_eq!(log.lines().count(), 41, "a header and one row per epoch");
    let svg = std::fs::read_to_string(run.join("curves.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("validation accuracy"),
        "{}",
        &svg[..200]
    );

    // Evaluating the best weights on the file: the classes by name.
    let eval = ok(&nnc(&dir, &["eval", "pairs.nn", "--debug"]));
    let acc: f64 = eval
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("accuracy ")?
                .strip_suffix('%')?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no accuracy in:\n{eval}"));
    assert!(acc > 90.0, "{eval}");
    assert!(
        eval.contains("big_a") && eval.contains("confusion matrix"),
        "{eval}"
    );

    // Predicting on rows without the label column: a class and its
    // probabilities per row.
    std::fs::write(dir.join("new.csv"), "a,b,noise\n0.9,0.1,0.5\n0.1,0.9,0.5\n").unwrap();
    let out = ok(&nnc(
        &dir,
        &[
            "predict", "pairs.nn", "--debug", "--data", "new.csv", "-o", "pred.csv",
        ],
    ));
    let _ = out;
    let pred = std::fs::read_to_string(dir.join("pred.csv")).unwrap();
    let rows: Vec<&str> = pred.lines().collect();
    assert_eq!(rows[0], "class,p(big_a),p(big_b)");
    assert!(
        rows[1].starts_with("big_a,") && rows[2].starts_with("big_b,"),
        "{pred}"
    );
    // Rows with the label column predict the same (it is skipped).
    let out = ok(&nnc(
        &dir,
        &["predict", "pairs.nn", "--debug", "--data", "pairs.csv"],
    ));
    assert_eq!(out.lines().count(), 301, "{}", &out[..200.min(out.len())]);

    // A second run in the same directory is refused; --resume of a
    // finished run trains nothing more; --overwrite starts over.
    let again = nnc(&dir, &["train", "pairs.nn", "--debug", "--quiet"]);
    let (_, err) = text(&again);
    assert_ne!(again.status.code(), Some(0));
    assert!(
        err.contains("already holds another run") && err.contains("--overwrite"),
        "{err}"
    );
    ok(&nnc(
        &dir,
        &["train", "pairs.nn", "--debug", "--quiet", "--resume"],
    ));
    ok(&nnc(
        &dir,
        &[
            "train",
            "pairs.nn",
            "--debug",
            "--quiet",
            "--overwrite",
            "--epochs",
            "2",
        ],
    ));
    let log = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(log.lines().count(), 3, "the overwritten run's log:\n{log}");
}

#[test]
fn a_regression_trains_and_predicts_its_target_from_the_command_line() {
    let dir = temp_dir("regression");
    let mut csv = String::from("x1,x2,price\n");
    for i in 0..200 {
        let (a, b) = ((i % 17) as f32 / 17.0, (i % 13) as f32 / 13.0);
        csv.push_str(&format!("{a},{b},{}\n", 2.0 * a - b + 0.5));
    }
    std::fs::write(dir.join("prices.csv"), csv).unwrap();
    // No data in the model: everything from the command line.
    std::fs::write(
        dir.join("prices.nn"),
        "network Prices {
    input  x: f32[batch, 2];
    input  price: f32[batch, 1];
    output p = dense(dense(x, 8, activation: tanh), 1);
    loss mse(p, price);
}
train Prices { optimizer: adam(lr: 1e-2); batch: 20; epochs: 60; seed: 1; }
",
    )
    .unwrap();
    ok(&nnc(
        &dir,
        &[
            "train",
            "prices.nn",
            "--debug",
            "--quiet",
            "--data",
            "prices.csv",
            "--label",
            "price",
            "--out",
            "out",
        ],
    ));
    let log = std::fs::read_to_string(dir.join("out/metrics.csv")).unwrap();
    assert!(
        log.lines()
            .next()
            .unwrap()
            .contains("val_mae,val_rmse,val_r2"),
        "{log}"
    );
    let eval = ok(&nnc(
        &dir,
        &[
            "eval",
            "prices.nn",
            "--debug",
            "--weights",
            "out/weights.safetensors",
            "--data",
            "prices.csv",
            "--label",
            "price",
        ],
    ));
    let r2: f64 = eval
        .lines()
        .find_map(|l| l.trim().strip_prefix("r2 ")?.parse().ok())
        .unwrap_or_else(|| panic!("no r2 in:\n{eval}"));
    assert!(r2 > 0.9, "{eval}");
    // The target column is not needed to predict.
    std::fs::write(dir.join("x.csv"), "x1,x2\n0.5,0.5\n").unwrap();
    let out = ok(&nnc(
        &dir,
        &[
            "predict",
            "prices.nn",
            "--debug",
            "--weights",
            "out/weights.safetensors",
            "--data",
            "x.csv",
        ],
    ));
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows[0], "price");
    let p: f64 = rows[1].parse().unwrap();
    assert!(
        (p - 1.0).abs() < 0.2,
        "2·0.5 − 0.5 + 0.5 = 1, predicted {p}"
    );
}

#[test]
fn mistakes_are_reported_where_they_are() {
    let dir = temp_dir("mistakes");
    classification(&dir);
    // A data file that is not there: at the `data:` line of the model.
    let model = std::fs::read_to_string(dir.join("pairs.nn")).unwrap();
    std::fs::write(
        dir.join("missing.nn"),
        model.replace("pairs.csv", "nowhere.csv"),
    )
    .unwrap();
    let o = nnc(&dir, &["train", "missing.nn", "--debug"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("missing.nn:9:15") && err.contains("nowhere.csv` does not exist"),
        "{err}"
    );

    // A column that does not fit the input: the input, the file, the column.
    std::fs::write(dir.join("narrow.csv"), "a,b,kind\n1,2,big_a\n2,1,big_b\n").unwrap();
    let o = nnc(
        &dir,
        &[
            "train",
            "pairs.nn",
            "--debug",
            "--data",
            "narrow.csv",
            "--out",
            "narrow",
        ],
    );
    let (_, err) = text(&o);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        err.contains("input `x` (3 real values) takes 3 values per sample, column `x` of narrow.csv (columns 1-2) has 2"),
        "{err}"
    );

    // Weights of another model: which tensor differs.
    ok(&nnc(
        &dir,
        &["train", "pairs.nn", "--debug", "--quiet", "--epochs", "1"],
    ));
    std::fs::write(
        dir.join("wider.nn"),
        model.replace("dense(x, 16", "dense(x, 8"),
    )
    .unwrap();
    let o = nnc(
        &dir,
        &[
            "eval",
            "wider.nn",
            "--debug",
            "--weights",
            "runs/Pairs/weights.safetensors",
        ],
    );
    let (_, err) = text(&o);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        err.contains("tensor `logits.weight` is [3, 16] in the file, the model's is [3, 8]"),
        "{err}"
    );

    // A model error stops before anything is built.
    std::fs::write(
        dir.join("bad.nn"),
        model.replace("dense(x, 16", "dense(y, 16"),
    )
    .unwrap();
    let o = nnc(&dir, &["train", "bad.nn", "--debug"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("unknown name `y`") && err.contains("bad.nn:4:"),
        "{err}"
    );

    // No data anywhere.
    std::fs::write(
        dir.join("nodata.nn"),
        model.replace("    data: csv(\"pairs.csv\", label: kind);\n", ""),
    )
    .unwrap();
    let o = nnc(&dir, &["train", "nodata.nn", "--debug"]);
    let (_, err) = text(&o);
    assert!(err.contains("no data: name it in the train block"), "{err}");
}

#[test]
fn a_failing_build_shows_the_compiler_message_and_the_generated_file() {
    // A runtime whose `app::main` does not compile stands in for a bug in
    // the generated code: what the user sees is rustc's message and where
    // the code is, not a bare "cargo failed".
    let dir = temp_dir("build-failure");
    classification(&dir);
    let runtime = dir.join("broken-runtime");
    std::fs::create_dir_all(runtime.join("src")).unwrap();
    std::fs::write(
        runtime.join("Cargo.toml"),
        "[package]\nname = \"nnc-runtime\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
         [features]\napp = []\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        runtime.join("src/lib.rs"),
        "pub mod app { pub fn main<M>() -> std::process::ExitCode { \
         compile_error!(\"the stand-in runtime does not build\") } }\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["train", "pairs.nn", "--debug"])
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .env("NNC_CACHE_DIR", dir.join("cache"))
        .env("NNC_TARGET_DIR", dir.join("target"))
        .env("NNC_RUNTIME_DIR", &runtime)
        .output()
        .expect("nnc runs");
    let (_, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("building the generated code failed")
            && err.contains("the stand-in runtime does not build")
            && err.contains("src/model.rs"),
        "{err}"
    );
    let generated = err
        .split_whitespace()
        .find(|w| w.ends_with("model.rs;"))
        .map(|w| PathBuf::from(w.trim_end_matches(';')))
        .expect("the generated file is named");
    assert!(
        std::fs::read_to_string(&generated).is_ok_and(|code| code.contains("struct Pairs")),
        "{} holds the model's code",
        generated.display()
    );
    assert!(!dir.join("runs").exists(), "nothing was trained");
}

#[test]
fn help_says_what_nnc_does_and_lists_its_commands() {
    let o = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .arg("--help")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().next().unwrap_or("").contains("trains"), "{out}");
    for cmd in ["train", "eval", "predict", "check", "compile", "graph"] {
        assert!(
            out.contains(&format!("  {cmd} ")),
            "`{cmd}` missing from:\n{out}"
        );
    }
}

/// `nnc ARGS` in `dir` as a child in its own process group, not waited for.
fn spawn(dir: &Path, args: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    command(dir, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("nnc starts")
}

/// Sends `sig` to the process group `pgid`, as a terminal's Ctrl-C does.
fn signal(sig: &str, pgid: &str) {
    let status = Command::new("kill")
        .args(["-s", sig, "--", &format!("-{pgid}")])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -s {sig} -- -{pgid} failed");
}

/// Waits until `path` exists (or a minute passes).
fn wait_for(path: &Path) {
    let t = std::time::Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed().as_secs() < 60,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_stops_after_a_step_with_a_resumable_checkpoint_and_kill_loses_nothing() {
    let dir = temp_dir("interrupt");
    let model = root().join("examples/models/mnist_mlp.nn");
    let model = model.to_str().unwrap();
    // Build first, so the interrupted runs are training, not compiling.
    ok(&nnc(
        &dir,
        &[
            "train", model, "--debug", "--quiet", "--epochs", "1", "--out", "warm",
        ],
    ));

    // Ctrl-C (SIGINT to the whole group, as a terminal sends it) once the
    // first epoch is logged: the program finishes its step, saves
    // last.safetensors and says how to resume.
    let child = spawn(
        &dir,
        &[
            "train", model, "--debug", "--quiet", "--epochs", "500", "--out", "int",
        ],
    );
    wait_for(&dir.join("int/metrics.csv"));
    let pid = child.id().to_string();
    signal("INT", &pid);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("stopped at step") && stdout.contains("--resume"),
        "{stdout}"
    );
    // --resume continues it (here to a shorter end, so the test ends).
    ok(&nnc(
        &dir,
        &[
            "train", model, "--debug", "--quiet", "--epochs", "3", "--out", "int", "--resume",
        ],
    ));
    let log = std::fs::read_to_string(dir.join("int/metrics.csv")).unwrap();
    assert!(log.lines().count() >= 2, "{log}");

    // kill -9 at any time leaves every file whole: the log parses, the
    // checkpoints load (the program would refuse them otherwise).
    let child = spawn(
        &dir,
        &[
            "train", model, "--debug", "--quiet", "--epochs", "500", "--out", "kill",
        ],
    );
    wait_for(&dir.join("kill/metrics.csv"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal("KILL", &child.id().to_string());
    let _ = child.wait_with_output();
    let log = std::fs::read_to_string(dir.join("kill/metrics.csv")).unwrap();
    assert!(
        log.starts_with("epoch,") && log.ends_with('\n'),
        "a half-written log:\n{log}"
    );
    ok(&nnc(
        &dir,
        &[
            "train", model, "--debug", "--quiet", "--epochs", "2", "--out", "kill", "--resume",
        ],
    ));
}

#[test]
fn concurrent_runs_share_the_cache_safely() {
    let dir = temp_dir("concurrent");
    classification(&dir);
    // Two models new to the cache, built and trained at once.
    let model = std::fs::read_to_string(dir.join("pairs.nn")).unwrap();
    std::fs::write(
        dir.join("one.nn"),
        model.replace("dense(x, 16", "dense(x, 12"),
    )
    .unwrap();
    std::fs::write(
        dir.join("two.nn"),
        model.replace("dense(x, 16", "dense(x, 20"),
    )
    .unwrap();
    let a = spawn(
        &dir,
        &[
            "train", "one.nn", "--debug", "--quiet", "--epochs", "2", "--out", "one",
        ],
    );
    let b = spawn(
        &dir,
        &[
            "train", "two.nn", "--debug", "--quiet", "--epochs", "2", "--out", "two",
        ],
    );
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    assert!(
        dir.join("one/weights.safetensors").is_file()
            && dir.join("two/weights.safetensors").is_file()
    );
}
