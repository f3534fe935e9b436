//! Argument checks every backend makes before it touches memory, so a bad call fails the same
//! way — with the same [`BackendError`] — on every backend.

use fedotp_core::ot::BatchLayout;

use super::{BackendError, BackendResult};

/// Checks that buffer `buffer` of operation `op`, holding `len` values, holds at least `needed`.
pub(crate) fn check_len(
    op: &'static str,
    buffer: &'static str,
    len: usize,
    needed: usize,
) -> BackendResult<()> {
    if len < needed {
        return Err(BackendError::BufferTooSmall {
            op,
            buffer,
            len,
            needed,
        });
    }
    Ok(())
}

/// Checks that every index is below `bound`.
pub(crate) fn check_indices(
    op: &'static str,
    what: &'static str,
    indices: &[u32],
    bound: usize,
) -> BackendResult<()> {
    match indices.iter().find(|&&i| i as usize >= bound) {
        Some(&index) => Err(BackendError::IndexOutOfRange {
            op,
            what,
            index: index as usize,
            bound,
        }),
        None => Ok(()),
    }
}

/// Checks that an index array has one entry per sequence (or token).
pub(crate) fn check_count(
    op: &'static str,
    what: &'static str,
    indices: &[u32],
    n: usize,
) -> BackendResult<()> {
    if indices.len() != n {
        return Err(BackendError::IndexCount {
            op,
            what,
            len: indices.len(),
            expected: n,
        });
    }
    Ok(())
}

/// Checks buffers shaped like a batch of OT problems (`sim`, `plans`: `(name, length)` pairs)
/// against `layout`; returns the number of elements they need.
pub(crate) fn check_layout(
    op: &'static str,
    buffers: &[(&'static str, usize)],
    layout: BatchLayout,
) -> BackendResult<usize> {
    let len = layout
        .elements()
        .map_err(|source| BackendError::Ot { op, source })?;
    for &(name, found) in buffers {
        check_len(op, name, found, len)?;
    }
    Ok(len)
}
