//! Data-parallel training across processes: this example's binary under
//! `mpirun` (OpenMPI), compared with the same binary run alone. The fault
//! tests run `mpi-fault`, the same training with test hooks, which only
//! this feature builds.
//!
//! Only with feature `mpi` (`.ci/run` installs OpenMPI and runs
//! `cargo test -p nnc-example-mnist --features mpi --test mpi`); without the
//! feature this file is empty. Every child process runs under a deadline and
//! is killed (and the test failed) when it passes it, so a hang is a failure,
//! not a stuck CI job.

#![cfg(feature = "mpi")]

use nnc::runtime::checkpoint::load_tensors;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any run may take (the training runs take seconds).
const DEADLINE: Duration = Duration::from_secs(60);

/// Flags every run shares: 512-sample batches cut into 8 data-parallel
/// shards of 64, so two ranks run 4 shards each; one thread per rank.
const COMMON: [&str; 7] = [
    "--quiet",
    "--batch",
    "512",
    "--threads",
    "1",
    "--parallel",
    "data",
];

fn mnist() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mnist"))
}

/// `mpirun` starting `ranks` copies of `exe`.
fn mpirun_exe(ranks: usize, exe: &str) -> Command {
    let mut c = Command::new("mpirun");
    // Root in CI containers; more ranks than cores on small machines.
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string())
        .arg(exe);
    c
}

/// `mpirun` starting `ranks` copies of the example's binary.
fn mpirun(ranks: usize) -> Command {
    mpirun_exe(ranks, env!("CARGO_BIN_EXE_mnist"))
}

/// `mpirun` starting `ranks` copies of the test binary with fault hooks.
fn mpirun_fault(ranks: usize) -> Command {
    mpirun_exe(ranks, env!("CARGO_BIN_EXE_mpi-fault"))
}

struct Outcome {
    success: bool,
    code: Option<i32>,
    /// stdout and stderr of every rank and of mpirun.
    output: String,
    elapsed: Duration,
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nnc-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `cmd` with output to files (no pipe can fill up and block it),
/// killing it and failing the test after [`DEADLINE`].
fn run(mut cmd: Command, dir: &Path, tag: &str) -> Outcome {
    let (out, err) = (
        dir.join(format!("{tag}.out")),
        dir.join(format!("{tag}.err")),
    );
    cmd.stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .stdin(Stdio::null());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?} (is OpenMPI installed?): {e}"));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {DEADLINE:?}: killed.\n{}{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out).unwrap() + &std::fs::read_to_string(&err).unwrap();
    Outcome {
        success: status.success(),
        code: status.code(),
        output,
        elapsed: start.elapsed(),
    }
}

/// Runs `cmd` and fails the test unless it succeeds.
fn ok(cmd: Command, dir: &Path, tag: &str) {
    let o = run(cmd, dir, tag);
    assert!(o.success, "{tag} failed ({:?}):\n{}", o.code, o.output);
}

/// Every tensor of a checkpoint (parameters and optimizer moments), as bits.
fn tensors(ckpt: &Path) -> Vec<(String, Vec<u32>)> {
    let (tensors, _) = load_tensors(ckpt).unwrap();
    tensors
        .into_iter()
        .map(|t| (t.name, t.data.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

/// Largest |a - b| / max|a| over all tensors.
fn max_rel_diff(a: &[(String, Vec<u32>)], b: &[(String, Vec<u32>)]) -> f64 {
    let mut worst = 0.0f64;
    for ((na, a), (nb, b)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert_eq!(a.len(), b.len());
        let scale = a
            .iter()
            .map(|&x| f64::from(f32::from_bits(x)).abs())
            .fold(1e-30, f64::max);
        for (&x, &y) in a.iter().zip(b) {
            let d = (f64::from(f32::from_bits(x)) - f64::from(f32::from_bits(y))).abs();
            worst = worst.max(d / scale);
        }
    }
    worst
}

fn with_steps(mut cmd: Command, steps: u64, ckpt: &Path) -> Command {
    cmd.args(COMMON)
        .arg("--max-steps")
        .arg(steps.to_string())
        .arg("--checkpoint-dir")
        .arg(ckpt);
    cmd
}

#[test]
fn two_ranks_train_bit_for_bit_as_one_and_resume_across_rank_counts() {
    let dir = scratch("equal");
    let (one, two, two_short, resumed) = (
        dir.join("one"),
        dir.join("two"),
        dir.join("two-short"),
        dir.join("resumed"),
    );
    ok(with_steps(mnist(), 4, &one), &dir, "one-rank");
    ok(with_steps(mpirun(2), 4, &two), &dir, "two-ranks");
    let reference = tensors(&one.join("last.safetensors"));
    let distributed = tensors(&two.join("last.safetensors"));
    assert_eq!(reference.len(), distributed.len());
    assert!(
        reference == distributed,
        "2 ranks differ from 1 rank after 4 steps: max relative difference {:e}",
        max_rel_diff(&reference, &distributed)
    );

    // Stop a 2-rank run after 2 steps, resume it alone for the other 2.
    ok(
        with_steps(mpirun(2), 2, &two_short),
        &dir,
        "two-ranks-short",
    );
    let halfway = tensors(&two_short.join("last.safetensors"));
    // Not vacuous: steps 3 and 4 changed every tensor.
    assert!(halfway
        .iter()
        .zip(&reference)
        .all(|((_, a), (_, b))| a != b));
    let mut cmd = with_steps(mnist(), 4, &resumed);
    cmd.arg("--resume").arg(two_short.join("last.safetensors"));
    ok(cmd, &dir, "resumed-alone");
    assert!(
        tensors(&resumed.join("last.safetensors")) == reference,
        "a 2-rank checkpoint resumed on 1 rank differs from the uninterrupted run"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rank_that_dies_ends_the_job_with_an_error() {
    let dir = scratch("death");
    let mut cmd = mpirun_fault(2);
    // Long enough that rank 1 dies mid-training, 1.5 s in.
    cmd.args(COMMON).args([
        "--epochs",
        "200",
        "--test-die-rank",
        "1",
        "--test-die-after-ms",
        "1500",
    ]);
    let o = run(cmd, &dir, "death");
    assert!(
        !o.success,
        "the job succeeded although rank 1 died:\n{}",
        o.output
    );
    assert!(o.elapsed < DEADLINE);
    // mpirun names the cause and the failed process, `[[job,1],rank]`.
    for needle in ["exited with non-zero status", "],1]\n  Exit code:    3"] {
        assert!(
            o.output.contains(needle),
            "no `{needle}` naming the dead rank:\n{}",
            o.output
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_silent_rank_ends_the_job_naming_it() {
    let dir = scratch("stop");
    let mut cmd = mpirun_fault(2);
    // Rank 1 stops (SIGSTOP) 1.5 s into training: alive to MPI, silent to
    // rank 0, which must give up after the watchdog's 2 s and name it.
    cmd.env("NNC_MPI_TIMEOUT", "2").args(COMMON).args([
        "--epochs",
        "200",
        "--test-stop-rank",
        "1",
        "--test-die-after-ms",
        "1500",
    ]);
    let o = run(cmd, &dir, "stop");
    assert!(
        !o.success,
        "the job succeeded although rank 1 stopped:\n{}",
        o.output
    );
    // Rank 1 stops outside a collective (rank 0 waits for its arrival) or
    // inside one (rank 0's roll call gets no answer from it); either way
    // rank 0 names it.
    assert!(
        o.output.contains("more than the 2.0 s allowed (NNC_MPI_TIMEOUT): rank(s) 1 never reached it")
            || o.output.contains("more than the 2.0 s allowed (NNC_MPI_TIMEOUT): rank(s) 1 reached it but went silent inside it"),
        "rank 1 not named as the silent rank:\n{}",
        o.output
    );
    for needle in ["error on rank 0: ", "aborting the job"] {
        assert!(
            o.output.contains(needle),
            "no `{needle}` naming the silent rank:\n{}",
            o.output
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ranks_with_different_models_stop_with_the_cause() {
    let dir = scratch("mismatch");
    let mut cmd = mpirun_fault(2);
    cmd.args(COMMON)
        .args(["--max-steps", "2", "--test-last-rank-model", "lenet"]);
    let o = run(cmd, &dir, "mismatch");
    assert!(
        !o.success,
        "ranks with different models trained:\n{}",
        o.output
    );
    for needle in [
        "ranks disagree: rank 1 has model hash",
        "parameter count 61706 (rank 0: 118282)",
    ] {
        assert!(
            o.output.contains(needle),
            "missing `{needle}` in:\n{}",
            o.output
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// Model parallelism (issue #24): `mnist-pipeline`, the MNIST MLP cut into
// stages, and `mnist-split`, its split layers, each run alone and under
// `mpirun`, and compared.

/// A file of f32 bit patterns, one a line, as the drivers' `--out` writes.
fn bits(path: &Path) -> Vec<f32> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| f32::from_bits(u32::from_str_radix(l, 16).unwrap()))
        .collect()
}

/// What [`launch_and_compare`] ran: its directory, the whole network's
/// outcome and each ranked run's, in order.
struct Compared {
    dir: PathBuf,
    whole: Outcome,
    ranked: Vec<Outcome>,
}

/// Runs the driver `exe` (`mnist-pipeline` or `mnist-split`) with `args`
/// three ways, each writing its results under its tag (`--out DIR/TAG`):
/// alone with `--whole` (`whole`, the reference), alone (`one`), and under
/// `mpirun` for each `(tag, ranks, extra flags)` of `ranked`. Asserts that
/// every run succeeds, that each ranked run's losses and `files` equal
/// `one`'s bit for bit, and that they equal the whole network's to float
/// precision: the losses within 1e-5 relative (and falling), the
/// parameters within `max_param_diff` absolute (1e-4 for the MNIST
/// networks), at most one in a thousand beyond 1e-4 (Adam moves a
/// parameter by about lr = 1e-3 a step whatever its gradient's size:
/// rounding in a gradient that is itself rounding noise shows at that
/// scale, and among millions of parameters a few such exist).
fn launch_and_compare(
    exe: &str,
    name: &str,
    args: &[&str],
    files: &[&str],
    ranked: &[(&str, usize, &[&str])],
    max_param_diff: f32,
) -> Compared {
    let dir = scratch(name);
    let with = |mut cmd: Command, tag: &str| {
        cmd.args(args).arg("--out").arg(dir.join(tag));
        cmd
    };
    let mut whole = with(Command::new(exe), "whole");
    whole.arg("--whole");
    let whole = run(whole, &dir, "whole");
    assert!(whole.success, "the whole network failed:\n{}", whole.output);
    ok(with(Command::new(exe), "one"), &dir, "one");
    let mut outcomes = Vec::new();
    for &(tag, ranks, extra) in ranked {
        let mut cmd = with(mpirun_exe(ranks, exe), tag);
        cmd.args(extra);
        let o = run(cmd, &dir, tag);
        assert!(o.success, "{tag} ({ranks} ranks) failed:\n{}", o.output);
        outcomes.push(o);
    }
    for what in std::iter::once(&"losses").chain(files) {
        let one = bits(&dir.join(format!("one.{what}")));
        assert!(!one.is_empty(), "one.{what} is empty");
        for &(tag, ..) in ranked {
            let b = bits(&dir.join(format!("{tag}.{what}")));
            assert!(
                one.len() == b.len() && one.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{what}: {tag} differs from the same run on one process"
            );
        }
    }
    let (wl, l) = (
        bits(&dir.join("whole.losses")),
        bits(&dir.join("one.losses")),
    );
    assert_eq!(wl.len(), l.len());
    for (step, (a, b)) in wl.iter().zip(&l).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "step {step}: loss {a} vs {b}"
        );
    }
    assert!(wl[wl.len() - 1] < wl[0], "training did not move: {wl:?}");
    for what in files {
        let (w, p) = (
            bits(&dir.join(format!("whole.{what}"))),
            bits(&dir.join(format!("one.{what}"))),
        );
        assert_eq!(w.len(), p.len());
        let d = w
            .iter()
            .zip(&p)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            d <= max_param_diff,
            "{what}: parameters differ from the whole network's by {d}"
        );
        // Beyond 1e-4: at most one parameter in a thousand (a gradient
        // that is rounding noise, which Adam's step normalises to ~lr).
        let far = w
            .iter()
            .zip(&p)
            .filter(|(a, b)| (*a - *b).abs() > 1e-4)
            .count();
        assert!(
            far * 1000 <= w.len(),
            "{what}: {far} of {} parameters differ from the whole network's by more than 1e-4",
            w.len()
        );
    }
    Compared {
        dir,
        whole,
        ranked: outcomes,
    }
}

const PIPELINE: &str = env!("CARGO_BIN_EXE_mnist-pipeline");

#[test]
fn two_pipeline_ranks_equal_one_process_bit_for_bit_and_the_whole_network_closely() {
    // GPipe on 2 ranks too, with messages too large for MPI to buffer
    // (64 KB).
    let c = launch_and_compare(
        PIPELINE,
        "pipeline",
        &["--batch", "128", "--micro", "4", "--steps", "10"],
        &["stage0", "stage1"],
        &[("two", 2, &[]), ("gpipe", 2, &["--schedule", "gpipe"])],
        1e-4,
    );
    let o = &c.ranked[0].output;
    assert!(
        o.contains("bubble 20.0%") && o.contains("65536 sent by this rank"),
        "no report (4 micro-batches, 2 stages: 1/5 idle; 128 × 128 floats each way):\n{o}"
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[test]
fn four_stages_on_4_and_2_ranks_equal_one_process_bit_for_bit_under_a_memory_cap() {
    // `mnist_pipeline4.nn`, cut after h1, h2 and h3: one stage per rank on
    // 4 ranks (oversubscribed on a 2-core machine) under 1F1B and GPipe,
    // and two stages per rank on 2 ranks, each equal to the same four
    // stages on one process bit for bit.
    let c = launch_and_compare(
        PIPELINE,
        "pipeline4",
        &[
            "--stages", "4", "--batch", "64", "--micro", "6", "--steps", "3",
        ],
        &["stage0", "stage1", "stage2", "stage3"],
        &[
            ("four", 4, &[]),
            ("gpipe", 4, &["--schedule", "gpipe"]),
            ("two", 2, &[]),
        ],
        1e-4,
    );
    // (S − 1)/(M + S − 1) = 3/9 idle.
    assert!(
        c.ranked[0]
            .output
            .contains("rank 3: 4 stages, 6 micro-batches, 1f1b, bubble 33.3%"),
        "no report:\n{}",
        c.ranked[0].output
    );
    // The memory cap: the network's parameters, gradients and Adam state
    // exceed it on one process, each rank's (its two stages') on 2 ranks
    // stay under it.
    let state = |text: &str, who: &str| reported(text, who, "optimizer state ");
    let one_process = state(&c.whole.output, "whole network:");
    let cap = one_process * 55 / 100;
    assert!(one_process > cap);
    for rank in ["rank 0:", "rank 1:"] {
        let bytes = state(&c.ranked[2].output, rank);
        assert!(
            bytes <= cap,
            "{rank} holds {bytes} bytes of state, over the cap of {cap} (one process: {one_process})"
        );
    }
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// The number before `unit` after `key` on the line of `text` that starts
/// with `who` (the drivers' report lines).
fn reported(text: &str, who: &str, key: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(who))
        .unwrap_or_else(|| panic!("no `{who}` line in:\n{text}"));
    let after = line
        .split(key)
        .nth(1)
        .unwrap_or_else(|| panic!("no `{key}` in `{line}`"));
    after.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn two_stage_ranks_of_a_large_network_each_peak_at_about_half_its_memory() {
    // `wide_pipeline.nn`: 9.5 M parameters, whose parameters, gradients
    // and Adam state (190 MB) dominate a process; synthetic data of a few
    // kB. Each rank builds only its stage, so its state is half the
    // network's, and so (within the process's fixed costs: code, MPI) is
    // its peak resident set. The cap is set between the two: one process
    // exceeds it, each rank stays under it.
    let c = launch_and_compare(
        env!("CARGO_BIN_EXE_wide-pipeline"),
        "wide",
        &["--batch", "16", "--micro", "4", "--steps", "4"],
        &["stage0", "stage1"],
        &[("two", 2, &[])],
        // Adam's bound: about lr (1e-3) a step, 4 steps.
        4e-3,
    );
    let state = "parameters + gradients + optimizer state ";
    let rss = "peak RSS ";
    let whole_state = reported(&c.whole.output, "whole network:", state);
    let whole_rss = 1024 * reported(&c.whole.output, "whole network:", rss);
    // The cap: 60% of one process's peak memory, which the network's state
    // alone exceeds.
    let cap = whole_rss * 60 / 100;
    assert!(
        whole_state > cap,
        "the state ({whole_state} B) does not exceed the cap ({cap} B): the test shows nothing"
    );
    let o = &c.ranked[0].output;
    for rank in ["rank 0:", "rank 1:"] {
        let (st, peak) = (reported(o, rank, state), 1024 * reported(o, rank, rss));
        assert!(
            st <= whole_state * 51 / 100,
            "{rank} holds {st} B of state, over half the network's {whole_state} B"
        );
        assert!(
            peak <= cap,
            "{rank} peaked at {peak} B, over the cap of {cap} B (one process: {whole_rss} B)"
        );
        eprintln!(
            "{rank} peak RSS {peak} B, state {st} B; one process {whole_rss} B, {whole_state} B"
        );
    }
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[test]
fn two_replicas_of_two_stages_equal_two_threads_bit_for_bit() {
    // Hybrid data × pipeline parallelism, 2 × 2 ranks: each replica's two
    // stages on two ranks, each on half of every batch in 2 micro-batches,
    // each stage's gradients all-reduced across the 2 replicas; equal bit
    // for bit to the 2 replicas as threads of one process (each sums its
    // micro-batches in order, the all-reduce adds two sums: exact in
    // either order), and to the whole network within float precision.
    let c = launch_and_compare(
        PIPELINE,
        "hybrid",
        &[
            "--replicas",
            "2",
            "--batch",
            "128",
            "--micro",
            "2",
            "--steps",
            "10",
        ],
        &["stage0", "stage1"],
        &[("hybrid", 4, &[])],
        1e-4,
    );
    // Stage 0 all-reduces h1's 784 × 128 + 128 parameters' gradients and
    // the loss, stage 1 h2's and the logits' 128 × 128 + 128 + 128 × 10
    // + 10: 4 bytes each.
    let o = &c.ranked[0].output;
    for (rank, bytes) in [(0, 401_924), (1, 71_212), (2, 401_924), (3, 71_212)] {
        let line = format!("2 replica(s), {bytes} bytes all-reduced a step");
        assert!(
            o.lines()
                .any(|l| l.starts_with(&format!("rank {rank}:")) && l.contains(&line)),
            "no report of rank {rank} with `{line}`:\n{o}"
        );
    }
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[test]
fn pipeline_ranks_that_disagree_or_die_stop_the_job_naming_the_rank() {
    let dir = scratch("pipeline-faults");
    let exe = PIPELINE;
    let mut cmd = mpirun_exe(2, exe);
    cmd.args(["--steps", "2", "--test-last-rank-micro", "3"]);
    let o = run(cmd, &dir, "disagree");
    assert!(
        !o.success,
        "ranks with different schedules trained:\n{}",
        o.output
    );
    assert!(
        o.output
            .contains("ranks disagree: rank 1 has micro-batches 3 (rank 0: 4)"),
        "{}",
        o.output
    );
    let mut cmd = mpirun_exe(2, exe);
    cmd.args(["--steps", "2", "--test-die-rank", "1"]);
    let o = run(cmd, &dir, "die");
    assert!(
        !o.success,
        "the job succeeded although rank 1 died:\n{}",
        o.output
    );
    assert!(
        o.output.contains("Exit code:    3") && o.output.contains(",1]"),
        "mpirun names neither the rank nor its status:\n{}",
        o.output
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_split_ranks_equal_one_process_bit_for_bit_and_the_whole_network_closely() {
    let c = launch_and_compare(
        env!("CARGO_BIN_EXE_mnist-split"),
        "split",
        &["--batch", "128", "--steps", "10"],
        &["params"],
        &[("two", 2, &[])],
        1e-4,
    );
    assert!(
        c.ranked[0]
            .output
            .contains("65536 bytes a step into the all-reduce"),
        "no report (128 samples × h2's 128 partial sums):\n{}",
        c.ranked[0].output
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[test]
fn split_ranks_with_another_layout_stop_the_job_naming_the_rank() {
    let dir = scratch("split-disagree");
    let mut cmd = mpirun_exe(2, env!("CARGO_BIN_EXE_mnist-split"));
    cmd.args(["--steps", "2", "--test-last-rank-ranks", "4"]);
    let o = run(cmd, &dir, "disagree");
    assert!(
        !o.success,
        "ranks with different split layouts trained:\n{}",
        o.output
    );
    assert!(
        o.output
            .contains("ranks disagree: rank 1 has split ranks 4 (rank 0: 2)"),
        "{}",
        o.output
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sliced_checkpoints_resume_on_two_ranks_bit_for_bit() {
    // Each driver on 2 ranks: 10 steps straight, against 5 steps saved as
    // a sliced checkpoint (each rank writing its slice) and 5 more resumed
    // from it, saving again into the same directory: the same losses and
    // parameters, bit for bit, and the directory left holding one
    // generation.
    let runs: [(&str, &str, &[&str], &[&str]); 2] = [
        (
            PIPELINE,
            "pipeline",
            &["--batch", "64", "--micro", "2"],
            &["stage0", "stage1"],
        ),
        (
            env!("CARGO_BIN_EXE_mnist-split"),
            "split",
            &["--batch", "64"],
            &["params"],
        ),
    ];
    for (exe, name, args, files) in runs {
        let dir = scratch(&format!("resume-{name}"));
        let ckpt = dir.join("ckpt");
        let launch = |tag: &str, steps: &str, extra: &[&std::ffi::OsStr]| {
            let mut cmd = mpirun_exe(2, exe);
            cmd.args(args)
                .args(["--steps", steps, "--out"])
                .arg(dir.join(tag))
                .args(extra);
            ok(cmd, &dir, tag);
        };
        launch("straight", "10", &[]);
        launch("half", "5", &["--checkpoint".as_ref(), ckpt.as_os_str()]);
        launch(
            "resumed",
            "10",
            &[
                "--resume".as_ref(),
                ckpt.as_os_str(),
                "--checkpoint".as_ref(),
                ckpt.as_os_str(),
            ],
        );
        let same = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        let losses = bits(&dir.join("straight.losses"));
        let mut resumed = bits(&dir.join("half.losses"));
        resumed.extend(bits(&dir.join("resumed.losses")));
        assert_eq!(losses.len(), 10, "{name}");
        assert!(
            same(&losses, &resumed),
            "{name}: losses differ after resuming"
        );
        for f in files {
            let (a, b) = (
                bits(&dir.join(format!("straight.{f}"))),
                bits(&dir.join(format!("resumed.{f}"))),
            );
            assert!(
                !a.is_empty() && same(&a, &b),
                "{name}: {f} differs after resuming"
            );
        }
        let mut left: Vec<String> = std::fs::read_dir(&ckpt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let kind = if name == "split" { "shard" } else { "stage" };
        assert_eq!(
            left,
            [
                "manifest.txt".to_string(),
                format!("{kind}-0.gen-2.safetensors"),
                format!("{kind}-1.gen-2.safetensors"),
            ],
            "{name}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
