//! [`Threads`]: ranks that are threads of one process, a [`Collective`]
//! over shared memory. What tests and one-process references use to run
//! several ranks without MPI: data parallelism across ranks, and the
//! replicas of a hybrid data × pipeline run, whose gradients it sums in
//! rank order, as MPI does for two ranks (`a + b = b + a` exactly).
//!
//! A rank that aborts or panics stops the others, as `MPI_Abort` ends a
//! job: every rank waiting in a collective, or for a message, panics naming
//! the rank that stopped, so a failing test fails instead of hanging. A
//! rank whose handle is dropped (its thread returned, an error included)
//! has left: a collective, which can never complete without it, and a wait
//! for a message it never sent panic the same way.

use super::{Collective, CollectiveError};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// A reusable barrier that a stopping rank can break.
struct Gate {
    state: Mutex<GateState>,
    turned: Condvar,
}

struct GateState {
    /// Ranks waiting in the current round.
    arrived: usize,
    /// Completed rounds, so a waiter knows its round has passed.
    round: u64,
    /// The first rank that aborted or panicked.
    stopped: Option<usize>,
    /// The ranks whose handles were dropped without a panic, by rank.
    left: Vec<bool>,
}

impl GateState {
    /// The first rank that has left the group, if any.
    fn first_left(&self) -> Option<usize> {
        self.left.iter().position(|&l| l)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stopped_by(me: usize, rank: usize) -> ! {
    panic!("rank {me} stops: rank {rank} of its group aborted or panicked")
}

fn left_by(me: usize, rank: usize) -> ! {
    panic!("rank {me} stops: rank {rank} of its group returned while this rank still waits for it")
}

/// What the ranks of one group share.
struct Shared {
    size: usize,
    f32s: Mutex<Vec<Vec<f32>>>,
    u64s: Mutex<Vec<Vec<u64>>>,
    gate: Gate,
    /// Point-to-point messages in flight, by `from · size + to`, in order.
    mail: Mutex<Vec<VecDeque<Vec<f32>>>>,
    /// Signalled whenever a message is posted.
    posted: Condvar,
}

/// One rank of a group of threads: give each thread its own (from
/// [`Threads::group`]); every rank must call the same collectives in the
/// same order, as under MPI, or the group deadlocks.
pub struct Threads {
    rank: usize,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads")
            .field("rank", &self.rank)
            .field("size", &self.shared.size)
            .finish()
    }
}

impl Threads {
    /// The handles of a group of `size` ranks, rank after rank.
    pub fn group(size: usize) -> Vec<Threads> {
        let shared = Arc::new(Shared {
            size,
            f32s: Mutex::new(vec![Vec::new(); size]),
            u64s: Mutex::new(vec![Vec::new(); size]),
            gate: Gate {
                state: Mutex::new(GateState {
                    arrived: 0,
                    round: 0,
                    stopped: None,
                    left: vec![false; size],
                }),
                turned: Condvar::new(),
            },
            mail: Mutex::new(vec![VecDeque::new(); size * size]),
            posted: Condvar::new(),
        });
        (0..size)
            .map(|rank| Threads {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    /// Posts a copy of `data` to rank `to` (the pipeline's send: buffered,
    /// so it returns at once).
    pub(crate) fn post(&self, to: usize, data: &[f32]) {
        let n = self.shared.size;
        let mut mail = self
            .shared
            .mail
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        mail[self.rank * n + to].push_back(data.to_vec());
        self.shared.posted.notify_all();
    }

    /// Waits for the next message from rank `from` (in the order posted).
    pub(crate) fn take(&self, from: usize) -> Vec<f32> {
        let n = self.shared.size;
        let mut mail = self
            .shared
            .mail
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(m) = mail[from * n + self.rank].pop_front() {
                return m;
            }
            {
                let st = lock(&self.shared.gate.state);
                if let Some(rank) = st.stopped {
                    drop(st);
                    stopped_by(self.rank, rank);
                }
                if st.left[from] {
                    drop(st);
                    left_by(self.rank, from);
                }
            }
            mail = self
                .shared
                .posted
                .wait(mail)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits until every rank of the group has arrived.
    fn wait(&self) {
        let gate = &self.shared.gate;
        let mut st = lock(&gate.state);
        if let Some(rank) = st.stopped {
            drop(st);
            stopped_by(self.rank, rank);
        }
        if let Some(rank) = st.first_left() {
            drop(st);
            left_by(self.rank, rank);
        }
        st.arrived += 1;
        if st.arrived == self.shared.size {
            st.arrived = 0;
            st.round += 1;
            gate.turned.notify_all();
            return;
        }
        let round = st.round;
        while st.round == round && st.stopped.is_none() && st.first_left().is_none() {
            st = gate.turned.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        if st.round == round {
            if let Some(rank) = st.stopped {
                drop(st);
                stopped_by(self.rank, rank);
            }
            let rank = st.first_left().unwrap_or(self.rank);
            drop(st);
            left_by(self.rank, rank);
        }
    }

    /// Marks this rank as stopped and wakes every waiter, at the gate and
    /// at the mailboxes.
    fn stop(&self) {
        lock(&self.shared.gate.state)
            .stopped
            .get_or_insert(self.rank);
        self.wake_all();
    }

    /// Marks this rank as gone without a panic (its handle dropped) and
    /// wakes every waiter: whoever still needs it panics instead of
    /// waiting forever; messages it posted stay readable.
    fn leave(&self) {
        lock(&self.shared.gate.state).left[self.rank] = true;
        self.wake_all();
    }

    fn wake_all(&self) {
        self.shared.gate.turned.notify_all();
        // Under the mail lock, so a rank between its check and its wait
        // cannot miss the wake-up.
        let _mail = lock(&self.shared.mail);
        self.shared.posted.notify_all();
    }

    fn f32s(&self) -> std::sync::MutexGuard<'_, Vec<Vec<f32>>> {
        self.shared
            .f32s
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn u64s(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u64>>> {
        self.shared
            .u64s
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.f32s()[self.rank] = buf.to_vec();
        self.wait();
        {
            let all = self.f32s();
            buf.copy_from_slice(&all[0]);
            for other in &all[1..] {
                for (b, &x) in buf.iter_mut().zip(other) {
                    *b += x;
                }
            }
        }
        self.wait();
        Ok(())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<(), CollectiveError> {
        if root >= self.shared.size {
            return Err(CollectiveError::NoSuchRank {
                root,
                size: self.shared.size,
            });
        }
        if self.rank == root {
            self.f32s()[root] = buf.to_vec();
        }
        self.wait();
        buf.copy_from_slice(&self.f32s()[root]);
        self.wait();
        Ok(())
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        self.wait();
        Ok(())
    }

    fn all_gather_u64(&self, local: &[u64], out: &mut [u64]) -> Result<(), CollectiveError> {
        self.u64s()[self.rank] = local.to_vec();
        self.wait();
        for (o, v) in out.chunks_mut(local.len().max(1)).zip(self.u64s().iter()) {
            o.copy_from_slice(v);
        }
        self.wait();
        Ok(())
    }

    /// A thread cannot end the other threads' work: it stops the group (the
    /// others panic at their next wait) and panics, naming the rank.
    fn abort(&self, code: i32) -> ! {
        self.stop();
        panic!("rank {} aborted with status {code}", self.rank)
    }
}

impl Drop for Threads {
    /// A rank whose thread panics stops the group, as an abort does; one
    /// that returns leaves it.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.stop();
        } else {
            self.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_sum_in_rank_order_and_gather_rank_after_rank() {
        let got: Vec<(Vec<f32>, Vec<u64>)> = std::thread::scope(|s| {
            let hs: Vec<_> = Threads::group(3)
                .into_iter()
                .map(|t| {
                    s.spawn(move || {
                        let r = t.rank() as f32;
                        let mut buf = vec![r, 1.0];
                        t.all_reduce_sum(&mut buf).unwrap();
                        let mut out = vec![0u64; 3];
                        t.all_gather_u64(&[t.rank() as u64 * 10], &mut out).unwrap();
                        (buf, out)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (buf, out) in got {
            assert_eq!(buf, [3.0, 3.0]);
            assert_eq!(out, [0, 10, 20]);
        }
    }

    /// A rank that panics, or aborts, before a collective must not leave
    /// the others waiting forever: they panic, naming it.
    #[test]
    fn a_stopping_rank_stops_the_others_instead_of_hanging() {
        for abort in [false, true] {
            let msgs: Vec<String> = std::thread::scope(|s| {
                let hs: Vec<_> = Threads::group(3)
                    .into_iter()
                    .map(|t| {
                        s.spawn(move || {
                            if t.rank() == 1 {
                                if abort {
                                    t.abort(3);
                                }
                                panic!("rank 1 fails");
                            }
                            if t.rank() == 2 {
                                // Waits for a message rank 1 never sends.
                                t.take(1);
                            }
                            let mut buf = vec![1.0];
                            t.all_reduce_sum(&mut buf).unwrap();
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        let e = h.join().expect_err("every rank must stop");
                        e.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default()
                    })
                    .collect()
            });
            assert_eq!(
                msgs[0],
                "rank 0 stops: rank 1 of its group aborted or panicked"
            );
            assert_eq!(
                msgs[2],
                "rank 2 stops: rank 1 of its group aborted or panicked"
            );
        }
    }

    /// A rank that returns (an early `Err`, say) before a collective the
    /// others enter leaves them unable to finish it: they panic, naming it.
    /// A message it posted before returning is still delivered.
    #[test]
    fn a_rank_that_returns_early_stops_the_others_but_its_messages_arrive() {
        let outcomes: Vec<Result<f32, String>> = std::thread::scope(|s| {
            let hs: Vec<_> = Threads::group(4)
                .into_iter()
                .map(|t| {
                    s.spawn(move || match t.rank() {
                        // Posts to rank 3, then returns without the collective.
                        1 => {
                            t.post(3, &[7.0]);
                            0.0
                        }
                        // Waits for a message rank 1 never sends.
                        2 => t.take(1)[0],
                        // Receives what rank 1 posted before it left.
                        3 => t.take(1)[0],
                        _ => {
                            let mut buf = vec![1.0];
                            t.all_reduce_sum(&mut buf).unwrap();
                            buf[0]
                        }
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().map_err(|e| {
                        e.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default()
                    })
                })
                .collect()
        });
        let left = |me| {
            format!(
                "rank {me} stops: rank 1 of its group returned while this rank still waits for it"
            )
        };
        assert_eq!(outcomes[0], Err(left(0)));
        assert_eq!(outcomes[1], Ok(0.0));
        assert_eq!(outcomes[2], Err(left(2)));
        assert_eq!(outcomes[3], Ok(7.0));
    }
}
