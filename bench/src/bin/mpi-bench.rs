//! Data-parallel step time across MPI ranks, and all-reduce time against
//! buffer size (feature `mpi`):
//!
//! ```sh
//! cargo build --release -p nnc-bench --features mpi --bin mpi-bench
//! target/release/mpi-bench                      # 1 rank, no MPI
//! mpirun -np 2 target/release/mpi-bench         # 2 ranks
//! ```
//!
//! Times W2 (bench/models/mlp_wide.nn, 784-2048-2048-10, global batch 512)
//! training steps — each rank's share of forward and backward, the one
//! all-reduce of the gradient, and Adam — on synthetic data, one thread per
//! rank by default; then `MPI_Allreduce` of f32 buffers of each size. Rank 0
//! prints the results.

use clap::Parser;
use nnc::runtime::collective::{Collective, Local, Mpi};
use nnc::runtime::parallel::Strategy;
use nnc::runtime::rng::Rng;
use nnc::runtime::{Batch, Model, Trainer};
use std::time::Instant;

mod w2 {
    nnc::include_model!("mlp_wide");
}

/// Step time of W2 and all-reduce time on the ranks of this MPI job.
#[derive(Parser)]
struct Args {
    /// Timed steps (after 3 untimed ones).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Threads per rank.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Buffer sizes (f32 values) to time all-reduce on.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000, 1_000_000, 5_824_522, 10_000_000])]
    sizes: Vec<usize>,
    /// All-reduces timed per size.
    #[arg(long, default_value_t = 20)]
    reps: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let comm: Box<dyn Collective> = if Mpi::launched() {
        Box::new(Mpi::init()?)
    } else {
        Box::new(Local)
    };
    let comm = comm.as_ref();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build()?;
    pool.install(|| run(&args, comm))
}

fn run(args: &Args, comm: &dyn Collective) -> anyhow::Result<()> {
    let (rank, ranks) = (comm.rank(), comm.size());
    let batch = 512;
    let mut model = w2::MlpWide::new(batch);
    model.init_params(w2::MLP_WIDE_SPEC.train.seed)?;
    comm.broadcast(model.params_mut(), 0)?;
    // The step `fit` takes, on this rank, through the same `Trainer`.
    let train = w2::MLP_WIDE_SPEC.train;
    let mut trainer = Trainer::new(&model, &train, batch, u64::MAX, Strategy::Auto, rank, ranks)?;
    let own = trainer.rank_rows(batch);
    // Every rank makes the same synthetic global batch and uses its rows.
    let mut rng = Rng::new(1);
    let x: Vec<f32> = (0..batch * 784).map(|_| rng.next_f32()).collect();
    let y: Vec<u32> = (0..batch).map(|_| rng.next_u32() % 10).collect();
    let xs = [&x[own.start * 784..own.end * 784]];
    let ys = [&y[own.clone()]];
    let local = Batch {
        inputs: &xs,
        labels: &ys,
    };
    let spec = model.spec();
    let mut step = |model: &mut w2::MlpWide| -> anyhow::Result<f32> {
        Ok(trainer.step_rank(model, &local, batch, comm)?)
    };
    for _ in 0..3 {
        step(&mut model)?;
    }
    comm.barrier()?;
    let t = Instant::now();
    let mut loss = 0.0;
    for _ in 0..args.steps {
        loss = step(&mut model)?;
    }
    comm.barrier()?;
    let step_ms = t.elapsed().as_secs_f64() * 1e3 / args.steps as f64;
    if rank == 0 {
        println!(
            "W2 (mlp_wide, {} params, batch {batch}, {:?}): {ranks} rank(s) x {} thread(s): {step_ms:.1} ms/step, {:.0} samples/s (loss {loss:.4})",
            spec.param_count,
            trainer.mode(),
            args.threads,
            batch as f64 * 1e3 / step_ms
        );
        if ranks == 1 {
            println!("(one rank: all-reduce is a no-op, not timed)");
            return Ok(());
        }
        println!("all-reduce on {ranks} rank(s):");
        println!("| f32 values | MB | ms per all-reduce | GB/s (buffer / time) |");
        println!("|---:|---:|---:|---:|");
    }
    for &n in args.sizes.iter().filter(|_| ranks > 1) {
        let mut buf = vec![1.0f32; n];
        comm.all_reduce_sum(&mut buf)?;
        comm.barrier()?;
        let t = Instant::now();
        for _ in 0..args.reps {
            comm.all_reduce_sum(&mut buf)?;
        }
        comm.barrier()?;
        let ms = t.elapsed().as_secs_f64() * 1e3 / args.reps as f64;
        if rank == 0 {
            let mb = n as f64 * 4.0 / 1e6;
            println!("| {n} | {mb:.2} | {ms:.3} | {:.2} |", mb / 1e3 / (ms / 1e3));
        }
    }
    Ok(())
}
