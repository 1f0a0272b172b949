//! The seam between training and the processes it runs on: a
//! [`Collective`] is the group of ranks (processes) that train one model
//! together, and the few collective operations data-parallel training needs.
//!
//! * [`Local`]: one process, size 1; every operation is a no-op. The
//!   in-process parallelism (rayon threads over shards of the batch, see
//!   [`crate::parallel`]) lives inside a rank and is the same either way.
//! * `Mpi` (cargo feature `mpi`): the ranks of an MPI job started by
//!   `mpirun`, through the `mpi` crate (rsmpi) over the system's MPI
//!   library (OpenMPI on Debian/Ubuntu). Default builds need no MPI.
//!
//! nnc does not define a cluster protocol of its own: launching, placement,
//! transport and failure detection are MPI's. What nnc adds is the
//! *agreement check* ([`Collective::check_agreement`]): before ranks start
//! exchanging gradients they compare what must be equal (model hash,
//! parameter count, batch, options, data size) and all stop with the same
//! error naming the first rank that differs, instead of exchanging buffers of
//! different lengths and hanging or corrupting each other.
//!
//! Failures MPI reports are MPI's: with OpenMPI, a rank that dies (or exits
//! without finalising) makes `mpirun` terminate the whole job and print which
//! rank failed. A rank whose training returns an error must therefore end
//! the job with [`Collective::abort`] rather than simply return, or the
//! other ranks would wait in the next collective forever.

use thiserror::Error;

/// Why a collective operation could not be done.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CollectiveError {
    /// The message-passing library could not start.
    #[error("cannot start MPI: {0}")]
    Init(String),
    /// Ranks disagree on values that must be equal on every rank.
    #[error("ranks disagree: rank {rank} has {differences}; every rank must run the same model on the same configuration")]
    Mismatch {
        /// The first rank (in rank order) that differs from rank 0.
        rank: usize,
        /// Every differing value of that rank, as `what X (rank 0: Y)`.
        differences: String,
    },
    /// A buffer longer than MPI's `int` element count.
    #[error("buffer of {len} values exceeds MPI's limit of {max} per call")]
    TooLarge {
        /// Values given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A root rank that is not in the group.
    #[error("root rank {root} is not in a group of {size}")]
    NoSuchRank {
        /// The rank asked for.
        root: usize,
        /// Ranks in the group.
        size: usize,
    },
}

/// A group of ranks training together. Every rank must call the same
/// collective operations in the same order with buffers of the same length;
/// [`Collective::check_agreement`] exists to verify the inputs that decide
/// this before the first exchange.
///
/// Methods take `&self` and implementations are `Sync` so a collective can be
/// borrowed by a training loop running on a worker thread; the loop calls
/// them from one thread at a time.
pub trait Collective: Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Replaces `buf` on every rank by the element-wise sum of every rank's
    /// `buf`. One call per training step, on the whole flat gradient buffer.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CollectiveError>;
    /// Copies `buf` of rank `root` into `buf` on every other rank.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<(), CollectiveError>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<(), CollectiveError>;
    /// Every rank's `local` (all of the same length), rank after rank:
    /// `out[r * local.len()..][..local.len()]` is rank `r`'s.
    fn all_gather_u64(&self, local: &[u64], out: &mut [u64]) -> Result<(), CollectiveError>;
    /// Ends every rank of the job with exit status `code`; for a rank whose
    /// work failed, so that the others do not wait for it forever.
    fn abort(&self, code: i32) -> !;

    /// Checks that every rank has the same `values` (name, value) and
    /// returns the same error on every rank otherwise, naming the first rank
    /// that differs and each of its differing values next to rank 0's.
    /// `values` must have the same length on every rank.
    fn check_agreement(&self, values: &[(&str, Value)]) -> Result<(), CollectiveError> {
        let size = self.size();
        if size <= 1 {
            return Ok(());
        }
        let local: Vec<u64> = values.iter().map(|(_, v)| v.raw()).collect();
        let mut all = vec![0u64; local.len() * size];
        self.all_gather_u64(&local, &mut all)?;
        let root = &all[..local.len()];
        for rank in 1..size {
            let theirs = &all[rank * local.len()..(rank + 1) * local.len()];
            let differences: Vec<String> = values
                .iter()
                .zip(root.iter().zip(theirs))
                .filter(|(_, (a, b))| a != b)
                .map(|((what, v), (&a, &b))| {
                    format!("{what} {} (rank 0: {})", v.show(b), v.show(a))
                })
                .collect();
            if !differences.is_empty() {
                return Err(CollectiveError::Mismatch {
                    rank,
                    differences: differences.join(", "),
                });
            }
        }
        Ok(())
    }
}

/// A value compared by [`Collective::check_agreement`]: the kind only
/// decides how it is printed in the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// A count or number, printed in decimal.
    Count(u64),
    /// A hash, printed as 16 hex digits.
    Hash(u64),
}

impl Value {
    fn raw(self) -> u64 {
        match self {
            Value::Count(v) | Value::Hash(v) => v,
        }
    }

    fn show(self, v: u64) -> String {
        match self {
            Value::Count(_) => v.to_string(),
            Value::Hash(_) => format!("{v:016x}"),
        }
    }
}

pub use nnc_spec::hash::{fnv1a, fnv1a_f32 as hash_f32};

/// One process on its own: rank 0 of 1. Reductions and broadcasts leave the
/// buffer as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Local;

impl Collective for Local {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn broadcast(&self, _buf: &mut [f32], root: usize) -> Result<(), CollectiveError> {
        match root {
            0 => Ok(()),
            _ => Err(CollectiveError::NoSuchRank { root, size: 1 }),
        }
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn all_gather_u64(&self, local: &[u64], out: &mut [u64]) -> Result<(), CollectiveError> {
        out[..local.len()].copy_from_slice(local);
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

#[cfg(feature = "mpi")]
pub use self::mpi_impl::{Mpi, DEFAULT_TIMEOUT, TIMEOUT_ENV};

#[cfg(feature = "mpi")]
mod mpi_impl {
    use super::{Collective, CollectiveError};
    use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
    use mpi::environment::Universe;
    use mpi::point_to_point::{Destination, Source};
    use mpi::request::{LocalScope, Request, Scope};
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::Threading;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// How long a collective may wait for the other ranks before the job is
    /// aborted, unless `NNC_MPI_TIMEOUT` says otherwise: long enough for a
    /// rank writing a large checkpoint or evaluating a large validation set
    /// while the others wait, short enough that a hung job is noticed.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

    /// Environment variable with the watchdog's deadline in seconds.
    pub const TIMEOUT_ENV: &str = "NNC_MPI_TIMEOUT";

    /// Tag of the arrival messages (see [`Mpi`]); any tag works, as no other
    /// point-to-point messages are sent on the communicator.
    const ARRIVAL_TAG: i32 = 0x6e6e;

    /// Tag of the messages of a roll call ([`Mpi::roll_call`]).
    const PING_TAG: i32 = ARRIVAL_TAG + 1;

    /// How long a collective polls without sleeping.
    const SPIN: Duration = Duration::from_millis(50);

    /// Exit status of a job the watchdog aborts (as `timeout(1)`'s).
    const TIMEOUT_STATUS: i32 = 124;

    /// The ranks of the MPI job this process belongs to (`MPI_COMM_WORLD`).
    ///
    /// MPI is initialised with `MPI_THREAD_SERIALIZED`: the training loop may
    /// run on a rayon worker rather than the main thread, and every call goes
    /// through one mutex, so calls never overlap. Dropping the value
    /// finalises MPI; create one per process, before any other MPI use.
    ///
    /// # Watchdog
    /// A rank that stops (SIGSTOP, a hung file system, a deadlock) would
    /// leave the others waiting in their next collective forever: MPI notices
    /// dead processes, not silent ones. So every collective is started
    /// non-blocking and polled against a deadline ([`Mpi::timeout`], from
    /// `NNC_MPI_TIMEOUT` in seconds, default [`DEFAULT_TIMEOUT`]); with it,
    /// each rank sends every other rank a tiny *arrival* message carrying the
    /// collective's sequence number. When the deadline passes, the waiting
    /// ranks know exactly which ranks never arrived, print them, and end the
    /// job with `MPI_Abort` (exit status 124); when every rank arrived, a
    /// roll call (each waiting rank pings the others) finds the ranks that
    /// went silent inside the exchange. The arrivals cost `2 (size - 1)`
    /// 8-byte messages per collective and rank, nothing beside a
    /// gradient all-reduce for the tens of ranks data parallelism uses.
    pub struct Mpi {
        /// Finalises MPI on drop.
        _universe: Universe,
        rank: usize,
        size: usize,
        timeout: Duration,
        state: Mutex<State>,
    }

    /// What the collectives reuse from call to call.
    struct State {
        /// Send-side copy for all-reduce (rsmpi has no in-place all-reduce);
        /// grows once to the gradient's length, then is reused every step.
        scratch: Vec<f32>,
        /// Sequence number of the next collective (the same on every rank:
        /// all call the same collectives in the same order).
        seq: u64,
        /// The arrival received from each rank for the current collective
        /// (`size` values), then each rank's ping of a roll call (`size`).
        arrivals: Vec<u64>,
    }

    impl std::fmt::Debug for Mpi {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Mpi")
                .field("rank", &self.rank)
                .field("size", &self.size)
                .field("timeout", &self.timeout)
                .finish()
        }
    }

    /// Largest element count of one MPI call (`int`).
    const MAX_COUNT: usize = i32::MAX as usize;

    /// The deadline `NNC_MPI_TIMEOUT` sets, or the default when unset.
    fn timeout_from_env() -> Result<Duration, CollectiveError> {
        let Some(v) = std::env::var_os(TIMEOUT_ENV) else {
            return Ok(DEFAULT_TIMEOUT);
        };
        let text = v.to_string_lossy();
        match text.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
            _ => Err(CollectiveError::Init(format!(
                "{TIMEOUT_ENV}=`{text}` is not a number of seconds > 0"
            ))),
        }
    }

    impl Mpi {
        /// Initialises MPI. Fails if it was already initialised, cannot
        /// give serialized threading, or `NNC_MPI_TIMEOUT` is not a number
        /// of seconds.
        pub fn init() -> Result<Mpi, CollectiveError> {
            let timeout = timeout_from_env()?;
            let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
                .ok_or_else(|| CollectiveError::Init("MPI was already initialised".into()))?;
            if threading < Threading::Serialized {
                return Err(CollectiveError::Init(format!(
                    "the MPI library provides {threading:?} threading, serialized is needed"
                )));
            }
            let world = universe.world();
            let size = world.size() as usize;
            Ok(Mpi {
                rank: world.rank() as usize,
                size,
                timeout,
                _universe: universe,
                state: Mutex::new(State {
                    scratch: Vec::new(),
                    seq: 0,
                    // Arrivals, then the pings of a roll call.
                    arrivals: vec![0; 2 * size],
                }),
            })
        }

        /// True when this process was started by an MPI launcher (`mpirun`,
        /// `mpiexec`, `srun`): the environment variables OpenMPI, MPICH and
        /// PMIx set for their ranks. Lets one binary train alone when run
        /// plainly and join the job when launched.
        pub fn launched() -> bool {
            ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
                .iter()
                .any(|v| std::env::var_os(v).is_some())
        }

        /// How long a collective waits for the other ranks before the
        /// watchdog aborts the job.
        pub fn timeout(&self) -> Duration {
            self.timeout
        }

        /// Sets the watchdog's deadline (every rank should use the same).
        pub fn set_timeout(&mut self, timeout: Duration) {
            self.timeout = timeout;
        }

        fn world(&self) -> SimpleCommunicator {
            SimpleCommunicator::world()
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, State> {
            // A panic while holding the lock left no MPI state behind.
            self.state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        /// The next collective's sequence number.
        fn next(state: &mut State) -> u64 {
            state.seq += 1;
            state.seq - 1
        }

        /// Waits for `op`, collective number `seq`, under the watchdog:
        /// exchanges arrivals (into `arrivals`) with every other rank, polls
        /// everything until done, and aborts the job naming the ranks that
        /// never arrived once [`Mpi::timeout`] has passed.
        fn watch<'a, 's, D: ?Sized>(
            &self,
            scope: &'s LocalScope<'a>,
            what: &str,
            seq: &'a u64,
            arrivals: &'a mut [u64],
            op: Request<'a, D, &'s LocalScope<'a>>,
        ) {
            let world = self.world();
            let me = self.rank;
            let (arrivals, pings) = arrivals.split_at_mut(self.size);
            let mut sends = Vec::with_capacity(self.size);
            let mut recvs = Vec::with_capacity(self.size);
            for (peer, slot) in arrivals.iter_mut().enumerate() {
                if peer == me {
                    continue;
                }
                let p = world.process_at_rank(peer as i32);
                recvs.push((
                    peer,
                    Some(p.immediate_receive_into_with_tag(scope, slot, ARRIVAL_TAG)),
                ));
                sends.push(Some(p.immediate_send_with_tag(scope, seq, ARRIVAL_TAG)));
            }
            let mut op = Some(op);
            let began = Instant::now();
            loop {
                let mut done = poll(&mut op);
                for (_, r) in &mut recvs {
                    done &= poll(r);
                }
                for s in &mut sends {
                    done &= poll(s);
                }
                if done {
                    return;
                }
                let waited = began.elapsed();
                if waited > self.timeout {
                    let silent: Vec<usize> = recvs
                        .iter()
                        .filter(|(_, r)| r.is_some())
                        .map(|(p, _)| *p)
                        .collect();
                    if silent.is_empty() {
                        // Everyone arrived, so someone stopped inside the
                        // exchange: ask who is still alive and waiting.
                        self.roll_call(scope, what, seq, pings, waited);
                    }
                    self.give_up(
                        what,
                        *seq,
                        waited,
                        &silent,
                        "never reached it (stopped, hung or far behind?)",
                    );
                }
                // Poll eagerly at first, as MPI's blocking calls do (an
                // exchange takes microseconds to milliseconds); a longer
                // wait (rank 0 writing a checkpoint) is polled every
                // millisecond, leaving the core to the ranks still working.
                if waited < SPIN {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }

        /// Every rank still waiting in collective `seq` when its deadline
        /// passes says so to all others (a *ping*), and listens for theirs
        /// for one more timeout: ranks alive in the exchange reach their own
        /// deadline within that time (they arrived before this rank's ran
        /// out), so the ranks that stay quiet are the ones that stopped
        /// inside it. Never returns: the exchange is past its deadline.
        fn roll_call<'a>(
            &self,
            scope: &LocalScope<'a>,
            what: &str,
            seq: &'a u64,
            pings: &'a mut [u64],
            waited: Duration,
        ) -> ! {
            let world = self.world();
            let me = self.rank;
            let mut sends = Vec::with_capacity(self.size);
            let mut recvs = Vec::with_capacity(self.size);
            for (peer, slot) in pings.iter_mut().enumerate() {
                if peer == me {
                    continue;
                }
                let p = world.process_at_rank(peer as i32);
                recvs.push((
                    peer,
                    Some(p.immediate_receive_into_with_tag(scope, slot, PING_TAG)),
                ));
                sends.push(Some(p.immediate_send_with_tag(scope, seq, PING_TAG)));
            }
            let began = Instant::now();
            loop {
                let mut heard = true;
                for (_, r) in &mut recvs {
                    heard &= poll(r);
                }
                for s in &mut sends {
                    poll(s);
                }
                if heard || began.elapsed() > self.timeout {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let quiet: Vec<usize> = recvs
                .iter()
                .filter(|(_, r)| r.is_some())
                .map(|(p, _)| *p)
                .collect();
            if quiet.is_empty() {
                self.give_up(
                    what,
                    *seq,
                    waited,
                    &[],
                    "every rank reached it and is waiting: the exchange itself hangs",
                )
            }
            self.give_up(
                what,
                *seq,
                waited,
                &quiet,
                "reached it but went silent inside it (stopped or hung?)",
            )
        }

        /// Prints why collective `seq` is abandoned, naming the `silent`
        /// ranks (those of which `why` holds), and aborts the job.
        fn give_up(
            &self,
            what: &str,
            seq: u64,
            waited: Duration,
            silent: &[usize],
            why: &str,
        ) -> ! {
            let list: Vec<String> = silent.iter().map(usize::to_string).collect();
            let who = if list.is_empty() {
                String::new()
            } else {
                format!("rank(s) {} ", list.join(", "))
            };
            eprintln!(
                "error on rank {}: {what} (collective #{seq}) waited {:.1} s, more than the \
                 {:.1} s allowed ({TIMEOUT_ENV}): {who}{why}; \
                 aborting the job",
                self.rank,
                waited.as_secs_f64(),
                self.timeout.as_secs_f64()
            );
            self.world().abort(TIMEOUT_STATUS)
        }

        /// Ends the job if a rank's arrival was for another collective than
        /// this rank's `seq`th (the ranks' calls went out of step).
        fn check_arrivals(&self, what: &str, seq: u64, arrivals: &[u64]) {
            let me = self.rank;
            if let Some((peer, at)) = arrivals
                .iter()
                .enumerate()
                .find(|&(p, &a)| p != me && a != seq)
            {
                eprintln!(
                    "error on rank {me}: rank {peer} is at collective #{at}, this rank at #{seq} \
                     ({what}): the ranks no longer run the same program; aborting the job"
                );
                self.world().abort(1);
            }
        }
    }

    /// Tests the request in `slot` once; true when it is (or was) complete.
    fn poll<'a, D: ?Sized, S: Scope<'a>>(slot: &mut Option<Request<'a, D, S>>) -> bool {
        if let Some(r) = slot.take() {
            if let Err(r) = r.test() {
                *slot = Some(r);
            }
        }
        slot.is_none()
    }

    fn check_len(len: usize) -> Result<(), CollectiveError> {
        if len > MAX_COUNT {
            return Err(CollectiveError::TooLarge {
                len,
                max: MAX_COUNT,
            });
        }
        Ok(())
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
            check_len(buf.len())?;
            if self.size == 1 {
                return Ok(());
            }
            let mut guard = self.lock();
            let seq = Self::next(&mut guard);
            let State {
                scratch, arrivals, ..
            } = &mut *guard;
            if scratch.len() != buf.len() {
                scratch.resize(buf.len(), 0.0);
            }
            scratch.copy_from_slice(buf);
            let world = self.world();
            mpi::request::scope(|scope| {
                let op = world.immediate_all_reduce_into(
                    scope,
                    &scratch[..],
                    buf,
                    SystemOperation::sum(),
                );
                self.watch(scope, "all-reduce", &seq, arrivals, op);
            });
            self.check_arrivals("all-reduce", seq, &arrivals[..self.size]);
            Ok(())
        }

        fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<(), CollectiveError> {
            check_len(buf.len())?;
            if root >= self.size {
                return Err(CollectiveError::NoSuchRank {
                    root,
                    size: self.size,
                });
            }
            let mut guard = self.lock();
            let seq = Self::next(&mut guard);
            let arrivals = &mut guard.arrivals;
            let world = self.world();
            mpi::request::scope(|scope| {
                let op = world
                    .process_at_rank(root as i32)
                    .immediate_broadcast_into(scope, buf);
                self.watch(scope, "broadcast", &seq, arrivals, op);
            });
            self.check_arrivals("broadcast", seq, &arrivals[..self.size]);
            Ok(())
        }

        fn barrier(&self) -> Result<(), CollectiveError> {
            let mut guard = self.lock();
            let seq = Self::next(&mut guard);
            let arrivals = &mut guard.arrivals;
            let world = self.world();
            // A one-number all-reduce: complete once every rank has joined,
            // as a barrier, and scoped like the other collectives.
            let (one, mut sum) = (1u64, 0u64);
            mpi::request::scope(|scope| {
                let op =
                    world.immediate_all_reduce_into(scope, &one, &mut sum, SystemOperation::sum());
                self.watch(scope, "barrier", &seq, arrivals, op);
            });
            self.check_arrivals("barrier", seq, &arrivals[..self.size]);
            Ok(())
        }

        fn all_gather_u64(&self, local: &[u64], out: &mut [u64]) -> Result<(), CollectiveError> {
            check_len(out.len())?;
            let mut guard = self.lock();
            let seq = Self::next(&mut guard);
            let arrivals = &mut guard.arrivals;
            let world = self.world();
            mpi::request::scope(|scope| {
                let op = world.immediate_all_gather_into(scope, local, out);
                self.watch(scope, "all-gather", &seq, arrivals, op);
            });
            self.check_arrivals("all-gather", seq, &arrivals[..self.size]);
            Ok(())
        }

        fn abort(&self, code: i32) -> ! {
            self.world().abort(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_is_rank_zero_of_one_and_leaves_buffers() {
        let mut buf = [1.0f32, -2.5];
        Local.all_reduce_sum(&mut buf).unwrap();
        Local.broadcast(&mut buf, 0).unwrap();
        Local.barrier().unwrap();
        assert_eq!(buf, [1.0, -2.5]);
        assert_eq!((Local.rank(), Local.size()), (0, 1));
        assert_eq!(
            Local.broadcast(&mut buf, 1),
            Err(CollectiveError::NoSuchRank { root: 1, size: 1 })
        );
        let mut out = [0u64; 2];
        Local.all_gather_u64(&[7, 9], &mut out).unwrap();
        assert_eq!(out, [7, 9]);
    }

    #[test]
    fn fnv1a_matches_published_vectors() {
        // Test vectors of the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
        assert_ne!(hash_f32(&[0.0]), hash_f32(&[-0.0]));
    }
}
