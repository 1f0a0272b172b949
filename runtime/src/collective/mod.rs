//! The seam between training and the processes it runs on: a
//! [`Collective`] is the group of ranks (processes) that train one model
//! together, and the few collective operations data-parallel training needs.
//!
//! * [`Local`]: one process, size 1; every operation is a no-op. The
//!   in-process parallelism (rayon threads over shards of the batch, see
//!   [`crate::parallel`]) lives inside a rank and is the same either way.
//! * `Mpi` (cargo feature `mpi`): the ranks of an MPI job started by
//!   `mpirun`, through the `mpi` crate (rsmpi) over the system's MPI
//!   library (OpenMPI on Debian/Ubuntu), or a group split off them
//!   (`Mpi::split`). Default builds need no MPI.
//! * [`Threads`]: ranks that are threads of one process, over shared
//!   memory (tests, and one-process references of multi-rank runs).
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
        /// The first rank (in rank order) that differs from the group's
        /// first, by its number in the job.
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
    /// The number of this group's rank `rank` in the whole job, by which
    /// messages name it: the same number for a group that is the whole
    /// job; for a group split off an MPI job (`Mpi::split`), the member's
    /// rank in `MPI_COMM_WORLD`, the number `mpirun` reports.
    fn job_rank(&self, rank: usize) -> usize {
        rank
    }
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
                    format!(
                        "{what} {} (rank {}: {})",
                        v.show(b),
                        self.job_rank(0),
                        v.show(a)
                    )
                })
                .collect();
            if !differences.is_empty() {
                return Err(CollectiveError::Mismatch {
                    rank: self.job_rank(rank),
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

mod threads;
pub use threads::Threads;

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "mpi")]
pub use self::mpi::{Mpi, DEFAULT_TIMEOUT, TIMEOUT_ENV};

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
