//! The two vector kernels the solver and the head are made of.

/// `y += alpha · x`.
#[inline]
pub(crate) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// `Σ x·y` with eight independent partial sums, so the compiler can keep them in SIMD lanes
/// (a single running sum is a serial chain it may not reorder).
#[inline]
pub(crate) fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut partial = [0.0f32; 8];
    let (x_chunks, y_chunks) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = x_chunks
        .remainder()
        .iter()
        .zip(y_chunks.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (xc, yc) in x_chunks.zip(y_chunks) {
        for k in 0..8 {
            partial[k] += xc[k] * yc[k];
        }
    }
    partial.iter().sum::<f32>() + tail
}
