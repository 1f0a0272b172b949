//! Test-only: the `mnist` binary with failure injection, for
//! `tests/mpi.rs` (built only with feature `mpi`, never installed for
//! users). Takes every flag of `mnist`, plus hooks that make one rank of an
//! MPI job misbehave, so the tests can check that the job ends with the
//! cause instead of hanging.

#![deny(warnings)]

use clap::Parser;
use nnc_example_mnist::{main_with, run, Net, TrainArgs};

/// The `mnist` example with test hooks that make one rank of an MPI job fail.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    train: TrainArgs,
    /// This rank exits abruptly (status 3, without leaving MPI cleanly)
    /// `--test-die-after-ms` after training starts.
    #[arg(long)]
    test_die_rank: Option<usize>,
    /// Milliseconds before `--test-die-rank` exits or `--test-stop-rank`
    /// stops.
    #[arg(long, default_value_t = 1000)]
    test_die_after_ms: u64,
    /// This rank stops itself with SIGSTOP `--test-die-after-ms` after
    /// training starts: alive, but silent, as a hung rank.
    #[arg(long)]
    test_stop_rank: Option<usize>,
    /// The last rank trains this network instead of --model.
    #[arg(long, value_enum)]
    test_last_rank_model: Option<Net>,
}

fn main() -> std::process::ExitCode {
    let Args {
        mut train,
        test_die_rank,
        test_die_after_ms,
        test_stop_rank,
        test_last_rank_model,
    } = Args::parse();
    main_with(|comm| {
        if let Some(other) = test_last_rank_model {
            if comm.size() > 1 && comm.rank() + 1 == comm.size() {
                train.model = other;
            }
        }
        let die = test_die_rank == Some(comm.rank());
        let stop = test_stop_rank == Some(comm.rank());
        run(train, comm, move || {
            let after = std::time::Duration::from_millis(test_die_after_ms);
            if die {
                std::thread::spawn(move || {
                    std::thread::sleep(after);
                    eprintln!("test hook: rank exits abruptly");
                    std::process::exit(3);
                });
            }
            if stop {
                std::thread::spawn(move || {
                    std::thread::sleep(after);
                    eprintln!("test hook: rank stops (SIGSTOP)");
                    let pid = std::process::id().to_string();
                    let _ = std::process::Command::new("kill")
                        .args(["-STOP", &pid])
                        .status();
                });
            }
        })
    })
}
