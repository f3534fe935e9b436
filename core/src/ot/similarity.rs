//! A read-only view of one M × N similarity matrix inside a larger buffer.

use super::OtError;

/// One problem's similarity matrix: `rows` patches × `cols` prompts, read with strides so a
/// problem can be solved where it lies inside a batch's similarity tensor, without a copy.
#[derive(Clone, Copy, Debug)]
pub struct Similarity<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Similarity<'a> {
    /// A contiguous row-major `rows × cols` matrix; `data` must hold exactly `rows·cols` values.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, OtError> {
        let len = checked_area(rows, cols)?;
        if data.len() != len {
            return Err(OtError::BufferLength {
                name: "similarity",
                expected: len,
                found: data.len(),
            });
        }
        Ok(Similarity {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        })
    }

    /// Element `(i, j)` at `data[i·row_stride + j·col_stride]`; every element must lie in `data`.
    pub fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, OtError> {
        checked_area(rows, cols)?;
        let last = (rows - 1)
            .checked_mul(row_stride)
            .and_then(|r| {
                (cols - 1)
                    .checked_mul(col_stride)
                    .and_then(|c| r.checked_add(c))
            })
            .ok_or(OtError::SizeOverflow)?;
        if last >= data.len() {
            return Err(OtError::BufferLength {
                name: "similarity",
                expected: last + 1,
                found: data.len(),
            });
        }
        Ok(Similarity {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// Number of patches, M.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of prompts, N.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The elements as one row-major slice, when the matrix is laid out that way.
    fn contiguous(&self) -> Option<&'a [f32]> {
        (self.col_stride == 1 && self.row_stride == self.cols)
            .then(|| &self.data[..self.rows * self.cols])
    }

    /// Similarity of patch `i` and prompt `j`.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// What the solver reads of a problem's similarity matrix.
///
/// [`Similarity`] is one such matrix; with the `nalgebra` feature, any nalgebra matrix or view is
/// another. The solver is generic over this rather than copying, so a matrix is read where it
/// lies, whatever its strides, and every kind of matrix gets the same arithmetic.
pub(crate) trait SimilarityEntries {
    /// Number of patches, M.
    fn rows(&self) -> usize;
    /// Number of prompts, N.
    fn cols(&self) -> usize;
    /// Similarity of patch `i` and prompt `j`.
    fn get(&self, i: usize, j: usize) -> f32;

    /// The first non-finite element, as a row-major index `i·cols + j`.
    fn first_non_finite(&self) -> Option<usize> {
        first_non_finite_entry(self)
    }

    /// The largest magnitude `max |S[i,j]|` (the elements known finite).
    fn largest_magnitude(&self) -> f32 {
        largest_entry_magnitude(self)
    }
}

/// [`SimilarityEntries::first_non_finite`] entry by entry, for any layout.
fn first_non_finite_entry<S: SimilarityEntries + ?Sized>(sim: &S) -> Option<usize> {
    (0..sim.rows())
        .flat_map(|i| (0..sim.cols()).map(move |j| (i, j)))
        .find(|&(i, j)| !sim.get(i, j).is_finite())
        .map(|(i, j)| i * sim.cols() + j)
}

/// [`SimilarityEntries::largest_magnitude`] entry by entry, for any layout.
fn largest_entry_magnitude<S: SimilarityEntries + ?Sized>(sim: &S) -> f32 {
    (0..sim.rows())
        .flat_map(|i| (0..sim.cols()).map(move |j| (i, j)))
        .fold(0.0, |largest: f32, (i, j)| largest.max(sim.get(i, j).abs()))
}

impl SimilarityEntries for Similarity<'_> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    #[inline]
    fn get(&self, i: usize, j: usize) -> f32 {
        Similarity::get(self, i, j)
    }

    #[inline]
    fn first_non_finite(&self) -> Option<usize> {
        match self.contiguous() {
            Some(data) => data.iter().position(|x| !x.is_finite()),
            None => first_non_finite_entry(self),
        }
    }

    #[inline]
    fn largest_magnitude(&self) -> f32 {
        match self.contiguous() {
            // The elements are known finite: plain comparisons suffice, and vectorise.
            Some(data) => data.iter().fold(0.0, |largest, x| {
                let x = x.abs();
                if x > largest {
                    x
                } else {
                    largest
                }
            }),
            None => largest_entry_magnitude(self),
        }
    }
}

/// `rows · cols`, refusing zero dimensions and overflow.
pub(crate) fn checked_area(rows: usize, cols: usize) -> Result<usize, OtError> {
    if rows == 0 {
        return Err(OtError::EmptyDimension { name: "patches" });
    }
    if cols == 0 {
        return Err(OtError::EmptyDimension { name: "prompts" });
    }
    rows.checked_mul(cols).ok_or(OtError::SizeOverflow)
}
