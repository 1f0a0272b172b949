//! [`Threads`]: ranks that are threads of one process, a [`Collective`]
//! over shared memory. What tests and one-process references use to run
//! several ranks without MPI: data parallelism across ranks, and the
//! replicas of a hybrid data × pipeline run, whose gradients it sums in
//! rank order, as MPI does for two ranks (`a + b = b + a` exactly).

use super::{Collective, CollectiveError};
use std::collections::VecDeque;
use std::sync::{Arc, Barrier, Condvar, Mutex, PoisonError};

/// What the ranks of one group share.
struct Shared {
    size: usize,
    f32s: Mutex<Vec<Vec<f32>>>,
    u64s: Mutex<Vec<Vec<u64>>>,
    barrier: Barrier,
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
            barrier: Barrier::new(size),
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
            mail = self
                .shared
                .posted
                .wait(mail)
                .unwrap_or_else(PoisonError::into_inner);
        }
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
        self.shared.barrier.wait();
        {
            let all = self.f32s();
            buf.copy_from_slice(&all[0]);
            for other in &all[1..] {
                for (b, &x) in buf.iter_mut().zip(other) {
                    *b += x;
                }
            }
        }
        self.shared.barrier.wait();
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
        self.shared.barrier.wait();
        buf.copy_from_slice(&self.f32s()[root]);
        self.shared.barrier.wait();
        Ok(())
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        self.shared.barrier.wait();
        Ok(())
    }

    fn all_gather_u64(&self, local: &[u64], out: &mut [u64]) -> Result<(), CollectiveError> {
        self.u64s()[self.rank] = local.to_vec();
        self.shared.barrier.wait();
        for (o, v) in out.chunks_mut(local.len().max(1)).zip(self.u64s().iter()) {
            o.copy_from_slice(v);
        }
        self.shared.barrier.wait();
        Ok(())
    }

    /// A thread cannot end the other threads' work: it panics, naming the
    /// rank (a test then fails with the message).
    fn abort(&self, code: i32) -> ! {
        panic!("rank {} aborted with status {code}", self.rank)
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
}
