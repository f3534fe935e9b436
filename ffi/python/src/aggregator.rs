//! `fedotp.Aggregator`: the server's weighted average of one round's updates
//! (`FedotpAggregator`, `fedotp_core::protocol`'s rule).

use fedotp::FedotpAggregator;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::failure::{check, Failure};
use crate::message::{empty_header, encode_global_prompt, with_prompt, UpdateHeader};

/// Collects one round's client updates and averages them, weighted by training-set size
/// (`fedotp_core::protocol`'s rule), as libfedotp's `FedotpAggregator`.
///
/// >>> import numpy as np, fedotp
/// >>> aggregator = fedotp.Aggregator(n_ctx=2, width=3, round=0)
/// >>> aggregator.add_update(0, client=1, samples=1, prompt=np.zeros((2, 3), np.float32))
/// >>> aggregator.add_update(0, client=2, samples=3, prompt=np.ones((2, 3), np.float32))
/// >>> aggregator.average()[0]
/// array([0.75, 0.75, 0.75], dtype=float32)
/// >>> fedotp.decode_global_prompt(aggregator.finish(), 2, 3)[0]
/// 1
#[pyclass(module = "fedotp", frozen)]
pub(crate) struct Aggregator {
    handle: usize,
    n_ctx: usize,
    width: usize,
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        // A handle libfedotp issued, freed once (here); freeing a live handle cannot fail.
        fedotp::fedotp_aggregator_free(self.ptr());
    }
}

impl Aggregator {
    fn ptr(&self) -> *mut FedotpAggregator {
        self.handle as *mut FedotpAggregator
    }

    /// `(round, clients, total_samples)`.
    fn state(&self) -> PyResult<(u32, usize, u64)> {
        let (mut round, mut clients, mut samples) = (0, 0, 0);
        // SAFETY: a live handle and three distinct writable locals.
        check(unsafe {
            fedotp::fedotp_aggregator_progress(self.ptr(), &mut round, &mut clients, &mut samples)
        })?;
        Ok((round, clients, samples))
    }
}

#[pymethods]
impl Aggregator {
    /// An aggregator of round `round` for `n_ctx x width` prompts, counting at most `max_clients`.
    #[new]
    #[pyo3(signature = (n_ctx, width, round=0, max_clients=1024))]
    fn new(n_ctx: usize, width: usize, round: u32, max_clients: usize) -> PyResult<Aggregator> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: a writable local.
        check(unsafe {
            fedotp::fedotp_aggregator_new(n_ctx, width, round, max_clients, &mut handle)
        })?;
        Ok(Aggregator {
            handle: handle as usize,
            n_ctx,
            width,
        })
    }

    /// Decodes a client's update message and counts it; returns its header.
    fn add_message(&self, message: &[u8]) -> PyResult<UpdateHeader> {
        let mut header = empty_header();
        // SAFETY: a live slice of its length; a writable local apart from it.
        check(unsafe {
            fedotp::fedotp_aggregator_add_message(
                self.ptr(),
                message.as_ptr(),
                message.len(),
                &mut header,
            )
        })?;
        Ok(header.into())
    }

    /// Counts an update given as values.
    fn add_update(
        &self,
        round: u32,
        client: u32,
        samples: u32,
        prompt: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        with_prompt(prompt, |values, n_ctx, width| {
            // SAFETY: `values` holds `n_ctx * width` floats.
            Ok(check(unsafe {
                fedotp::fedotp_aggregator_add_update(
                    self.ptr(),
                    round,
                    client,
                    samples,
                    values.as_ptr(),
                    n_ctx,
                    width,
                )
            })?)
        })
    }

    /// The weighted average so far, `(n_ctx, width)` float32.
    fn average<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut average = vec![0.0f32; self.n_ctx * self.width];
        // SAFETY: `average` holds `n_ctx * width` writable floats.
        check(unsafe {
            fedotp::fedotp_aggregator_finish(
                self.ptr(),
                average.as_mut_ptr(),
                self.n_ctx,
                self.width,
            )
        })?;
        Ok(PyArray1::from_vec(py, average)
            .reshape([self.n_ctx, self.width])?
            .into_any())
    }

    /// The global-prompt message of the average, opening the next round (`round + 1`).
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let average = self.average(py)?;
        let (round, _, _) = self.state()?;
        let next = round.checked_add(1).ok_or_else(|| Failure {
            status: fedotp::FEDOTP_ERR_TOO_LARGE,
            message: format!("round {round} is the last: there is no next round to open"),
        })?;
        encode_global_prompt(py, next, &average)
    }

    /// Forgets every update and collects round `round`.
    fn start_round(&self, round: u32) -> PyResult<()> {
        Ok(check(fedotp::fedotp_aggregator_start_round(
            self.ptr(),
            round,
        ))?)
    }

    #[getter]
    fn round(&self) -> PyResult<u32> {
        Ok(self.state()?.0)
    }

    /// Clients counted this round.
    #[getter]
    fn clients(&self) -> PyResult<usize> {
        Ok(self.state()?.1)
    }

    /// Their total sample count (the average's denominator).
    #[getter]
    fn total_samples(&self) -> PyResult<u64> {
        Ok(self.state()?.2)
    }

    #[getter]
    fn prompt_shape(&self) -> (usize, usize) {
        (self.n_ctx, self.width)
    }
}
