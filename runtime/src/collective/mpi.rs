//! The [`Collective`] over MPI (feature `mpi`): `MPI_COMM_WORLD`, or a
//! group of its ranks split off it ([`Mpi::split`]), every collective
//! non-blocking under the watchdog.

use super::{Collective, CollectiveError};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::request::{LocalScope, Request, Scope};
use mpi::topology::{Color, Communicator, SimpleCommunicator};
use mpi::Threading;
use std::sync::{Arc, Mutex};
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

/// The ranks of the MPI job this process belongs to (`MPI_COMM_WORLD`), or
/// a group of them split off it ([`Mpi::split`]: the ranks of one pipeline
/// replica, or of one stage across replicas). A group numbers its ranks
/// `0..size()` among themselves; its messages and its agreement check name
/// ranks by their number in the job ([`Collective::job_rank`]).
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
    /// The communicator: the world, or a split-off group's (freed on drop,
    /// under the process's lock, before the universe below).
    comm: std::mem::ManuallyDrop<Comm>,
    /// Each member's rank in the job, by its rank here.
    job_ranks: Vec<usize>,
    rank: usize,
    size: usize,
    timeout: Duration,
    state: Mutex<State>,
    /// The process's one MPI lock, shared by the world and every group
    /// split off it: `MPI_THREAD_SERIALIZED` forbids overlapping calls
    /// anywhere in the process, not only on one communicator. Two threads
    /// using two groups at once take turns; if each waits for a peer the
    /// other holds up, the watchdog ends the job naming the silent ranks.
    serial: Arc<Mutex<()>>,
    /// Finalises MPI when the world and every group split off it are gone.
    _universe: Arc<Universe>,
}

/// A communicator handle (an opaque pointer in OpenMPI). MPI runs with
/// `MPI_THREAD_SERIALIZED`: any thread may call it as long as no two calls
/// overlap, and every call on a handle goes through the process's lock
/// (`Mpi::lock`: collectives, the pipeline's messages and the handle's
/// release alike).
struct Comm(SimpleCommunicator);

// SAFETY: see `Comm`: the handle is only used under `Mpi::lock`, one call
// at a time, which `MPI_THREAD_SERIALIZED` allows from any thread.
unsafe impl Send for Comm {}
// SAFETY: as for `Send`; `&Comm` gives no access but under the lock.
unsafe impl Sync for Comm {}

/// What the collectives reuse from call to call.
pub(crate) struct State {
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

/// [`Mpi::lock`]'s guard: the process's MPI lock and the group's state.
pub(crate) struct Locked<'a> {
    state: std::sync::MutexGuard<'a, State>,
    _serial: std::sync::MutexGuard<'a, ()>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        let _serial = self
            .serial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: `comm` is dropped once, here, and never used after.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.comm) };
    }
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
        Ok(Self::member(
            world,
            (0..size).collect(),
            timeout,
            Arc::new(universe),
            Arc::new(Mutex::new(())),
        ))
    }

    /// This process's handle on `comm`, whose members are the job's ranks
    /// `job_ranks`.
    fn member(
        comm: SimpleCommunicator,
        job_ranks: Vec<usize>,
        timeout: Duration,
        universe: Arc<Universe>,
        serial: Arc<Mutex<()>>,
    ) -> Mpi {
        let size = comm.size() as usize;
        Mpi {
            rank: comm.rank() as usize,
            size,
            timeout,
            comm: std::mem::ManuallyDrop::new(Comm(comm)),
            job_ranks,
            serial,
            _universe: universe,
            state: Mutex::new(State {
                scratch: Vec::new(),
                seq: 0,
                // Arrivals, then the pings of a roll call.
                arrivals: vec![0; 2 * size],
            }),
        }
    }

    /// Splits this group into groups by `color`, a collective call on every
    /// rank of it: the ranks that pass the same `color` form one new group,
    /// numbered by `key` (ties by their rank here). For hybrid data ×
    /// pipeline parallelism the job splits twice: by replica (the point-to-
    /// point chain of one pipeline) and by stage (the gradient all-reduce
    /// across replicas). A barrier under the watchdog comes first, so a
    /// silent rank is named rather than waited for.
    pub fn split(&self, color: usize, key: usize) -> Result<Mpi, CollectiveError> {
        let (Ok(color), Ok(key)) = (i32::try_from(color), i32::try_from(key)) else {
            return Err(CollectiveError::Init(format!(
                "group color {color} or key {key} exceeds MPI's int"
            )));
        };
        self.barrier()?;
        let _guard = self.lock();
        let comm = self
            .comm()
            .split_by_color_with_key(Color::with_value(color), key)
            .ok_or_else(|| CollectiveError::Init("MPI_Comm_split gave no group".into()))?;
        // Every member's job rank, by its rank in the new group (blocking:
        // every member has just left the barrier above).
        let mine = self.job_ranks[self.rank] as u64;
        let mut all = vec![0u64; comm.size() as usize];
        comm.all_gather_into(&mine, &mut all[..]);
        let job_ranks = all.into_iter().map(|r| r as usize).collect();
        Ok(Self::member(
            comm,
            job_ranks,
            self.timeout,
            Arc::clone(&self._universe),
            Arc::clone(&self.serial),
        ))
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

    /// The group's communicator (use it under [`Mpi::lock`]).
    pub(crate) fn comm(&self) -> &SimpleCommunicator {
        &self.comm.0
    }

    /// Ends the whole job (every group's ranks) with exit status `code`.
    pub(crate) fn abort_job(code: i32) -> ! {
        SimpleCommunicator::world().abort(code)
    }

    /// Serialises every MPI call of the process (see `serial`), and gives
    /// the group's reused state.
    pub(crate) fn lock(&self) -> Locked<'_> {
        // A panic while holding the lock left no MPI state behind.
        let serial = self
            .serial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Locked {
            state,
            _serial: serial,
        }
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
        let world = self.comm();
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
        let world = self.comm();
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
    fn give_up(&self, what: &str, seq: u64, waited: Duration, silent: &[usize], why: &str) -> ! {
        let list: Vec<String> = silent
            .iter()
            .map(|&r| self.job_ranks[r].to_string())
            .collect();
        let who = if list.is_empty() {
            String::new()
        } else {
            format!("rank(s) {} ", list.join(", "))
        };
        eprintln!(
            "error on rank {}: {what} (collective #{seq}) waited {:.1} s, more than the \
             {:.1} s allowed ({TIMEOUT_ENV}): {who}{why}; \
             aborting the job",
            self.job_ranks[self.rank],
            waited.as_secs_f64(),
            self.timeout.as_secs_f64()
        );
        Self::abort_job(TIMEOUT_STATUS)
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
            let (me, peer) = (self.job_ranks[me], self.job_ranks[peer]);
            eprintln!(
                "error on rank {me}: rank {peer} is at collective #{at}, this rank at #{seq} \
                 ({what}): the ranks no longer run the same program; aborting the job"
            );
            Self::abort_job(1);
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

    fn job_rank(&self, rank: usize) -> usize {
        self.job_ranks.get(rank).copied().unwrap_or(rank)
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
        let world = self.comm();
        mpi::request::scope(|scope| {
            let op =
                world.immediate_all_reduce_into(scope, &scratch[..], buf, SystemOperation::sum());
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
        let world = self.comm();
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
        let world = self.comm();
        // A one-number all-reduce: complete once every rank has joined,
        // as a barrier, and scoped like the other collectives.
        let (one, mut sum) = (1u64, 0u64);
        mpi::request::scope(|scope| {
            let op = world.immediate_all_reduce_into(scope, &one, &mut sum, SystemOperation::sum());
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
        let world = self.comm();
        mpi::request::scope(|scope| {
            let op = world.immediate_all_gather_into(scope, local, out);
            self.watch(scope, "all-gather", &seq, arrivals, op);
        });
        self.check_arrivals("all-gather", seq, &arrivals[..self.size]);
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        Self::abort_job(code)
    }
}
