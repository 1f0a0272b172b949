//! [`PointToPoint`] over MPI: each message a non-blocking send or receive
//! polled under the same deadline as the collectives' watchdog
//! (`NNC_MPI_TIMEOUT`), so a neighbour that dies or stops ends the job with
//! an error naming it instead of a hang.

use super::{PipelineError, PointToPoint};
use crate::collective::{Collective, Mpi, TIMEOUT_ENV};
use mpi::point_to_point::{Destination, Source};
use mpi::request::{LocalScope, Request};
use mpi::topology::Communicator;
use std::time::{Duration, Instant};

/// Tag of the pipeline's messages (the collectives' watchdog uses its own).
const PIPE_TAG: i32 = 0x7069;

/// Exit status of a job aborted by the deadline (as the collectives').
const TIMEOUT_STATUS: i32 = 124;

/// Largest element count of one MPI call (`int`).
const MAX_COUNT: usize = i32::MAX as usize;

impl Mpi {
    /// Polls `op` until it completes; past the deadline, prints which rank
    /// never matched it and aborts the job.
    fn wait_p2p<'a, D: ?Sized>(
        &self,
        mut op: Request<'a, D, &LocalScope<'a>>,
        what: &str,
        peer: usize,
    ) {
        let began = Instant::now();
        loop {
            match op.test() {
                Ok(_) => return,
                Err(r) => op = r,
            }
            let waited = began.elapsed();
            if waited > self.timeout() {
                let (me, peer) = (self.job_rank(self.rank()), self.job_rank(peer));
                eprintln!(
                    "error on rank {me}: pipeline {what} rank {peer} waited {:.1} s, more than the \
                     {:.1} s allowed ({TIMEOUT_ENV}): rank {peer} never matched it (dead, \
                     stopped, hung or far behind?); aborting the job",
                    waited.as_secs_f64(),
                    self.timeout().as_secs_f64()
                );
                Mpi::abort_job(TIMEOUT_STATUS);
            }
            if waited < Duration::from_millis(50) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn check(what: &'static str, peer: usize, me: &Mpi, len: usize) -> Result<(), PipelineError> {
    let why = if peer >= me.size() || peer == me.rank() {
        format!("no such peer in a group of {}", me.size())
    } else if len > MAX_COUNT {
        format!("{len} values exceed MPI's limit of {MAX_COUNT} per call")
    } else {
        return Ok(());
    };
    Err(PipelineError::Message { what, peer, why })
}

impl PointToPoint for Mpi {
    fn send(&self, to: usize, data: &[f32]) -> Result<(), PipelineError> {
        check("to", to, self, data.len())?;
        let _serial = self.lock();
        let world = self.comm();
        mpi::request::scope(|scope| {
            let op = world
                .process_at_rank(to as i32)
                .immediate_send_with_tag(scope, data, PIPE_TAG);
            self.wait_p2p(op, "send to", to);
        });
        Ok(())
    }

    fn exchange(
        &self,
        to: usize,
        data: &[f32],
        from: usize,
        into: &mut [f32],
    ) -> Result<(), PipelineError> {
        check("to", to, self, data.len())?;
        check("from", from, self, into.len())?;
        let _serial = self.lock();
        let world = self.comm();
        mpi::request::scope(|scope| {
            let sent = world
                .process_at_rank(to as i32)
                .immediate_send_with_tag(scope, data, PIPE_TAG);
            let got = world
                .process_at_rank(from as i32)
                .immediate_receive_into_with_tag(scope, into, PIPE_TAG);
            // Both are in flight; the order of the waits does not matter.
            self.wait_p2p(got, "receive from", from);
            self.wait_p2p(sent, "send to", to);
        });
        Ok(())
    }

    fn recv(&self, from: usize, data: &mut [f32]) -> Result<(), PipelineError> {
        check("from", from, self, data.len())?;
        let _serial = self.lock();
        let world = self.comm();
        mpi::request::scope(|scope| {
            let op = world
                .process_at_rank(from as i32)
                .immediate_receive_into_with_tag(scope, data, PIPE_TAG);
            self.wait_p2p(op, "receive from", from);
        });
        Ok(())
    }
}
