//! `ot::nalgebra::solve` against the slice API: the same plan and report, bit for bit, whatever
//! the layout of the nalgebra views, and the same refusals.
#![cfg(feature = "nalgebra")]

use fedotp_core::ot::{self, OtError, OtMode, OtParams, OtReport, Similarity};
use nalgebra::{DMatrixView, DMatrixViewMut, Dyn, Matrix2x3, Matrix3x2};
use proptest::prelude::*;

/// Where entry `(i, j)` of an `m × n` matrix lies in a buffer: `offset + i·row_stride +
/// j·col_stride`. Every other element of the buffer is a gap the solver must not touch.
#[derive(Clone, Copy, Debug)]
struct Layout {
    offset: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Layout {
    /// Column-major (nalgebra's own order) or row-major, the inner index stepping by `step` and
    /// each column (or row) `pad` elements apart beyond that: contiguous only at step 1, pad 0.
    fn new(m: usize, n: usize, column_major: bool, step: usize, pad: usize, offset: usize) -> Self {
        let inner = if column_major { m } else { n };
        let outer_stride = inner * step + pad;
        let (row_stride, col_stride) = if column_major {
            (step, outer_stride)
        } else {
            (outer_stride, step)
        };
        Layout {
            offset,
            row_stride,
            col_stride,
        }
    }

    /// Elements a buffer holding the `m × n` matrix in this layout needs.
    fn buffer_len(&self, m: usize, n: usize) -> usize {
        self.index(m - 1, n - 1) + 1
    }

    fn index(&self, i: usize, j: usize) -> usize {
        self.offset + i * self.row_stride + j * self.col_stride
    }
}

fn layout(m: usize, n: usize) -> impl Strategy<Value = Layout> {
    (any::<bool>(), 1usize..=3, 0usize..=3, 0usize..=2).prop_map(
        move |(column_major, step, pad, offset)| Layout::new(m, n, column_major, step, pad, offset),
    )
}

/// The slice API on a row-major copy: the reference.
fn solve_slices(sim: &[f32], m: usize, n: usize, params: &OtParams) -> (Vec<f32>, OtReport) {
    let mut work = vec![0.0; ot::workspace_len(m, n)];
    let mut plan = vec![0.0; m * n];
    let report = ot::solve(
        Similarity::new(sim, m, n).unwrap(),
        params,
        &mut work,
        &mut plan,
    )
    .expect("valid problem");
    (plan, report)
}

fn mode() -> impl Strategy<Value = OtMode> {
    prop_oneof![Just(OtMode::Unbalanced), Just(OtMode::Balanced)]
}

/// An `m × n` problem with entries in [-1, 1], and a layout each for its similarities and plan.
fn problem() -> impl Strategy<Value = (usize, usize, Vec<f32>, Layout, Layout)> {
    (1usize..20, 1usize..5).prop_flat_map(|(m, n)| {
        (
            Just(m),
            Just(n),
            proptest::collection::vec(-1.0f32..1.0, m * n),
            layout(m, n),
            layout(m, n),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Similarities in a strided view (gaps hold NaN, so reading one would be refused) and the
    /// plan written into another (its gaps must keep their sentinel): the same plan, bit for bit,
    /// and the same report as the slice API on a row-major copy. Small eps make the solver absorb
    /// its scalings, so the rebuilds read the view too.
    #[test]
    fn views_of_any_layout_give_the_slice_plan_bit_for_bit(
        (m, n, sim, sim_layout, plan_layout) in problem(),
        eps in 0.005f32..1.0,
        gamma in 0.05f32..=1.0,
        mode in mode(),
    ) {
        let params = OtParams { eps, gamma, max_iter: 2_000, tol: 1e-6, mode };
        let (expected, expected_report) = solve_slices(&sim, m, n, &params);

        let mut sim_buffer = vec![f32::NAN; sim_layout.buffer_len(m, n)];
        for i in 0..m {
            for j in 0..n {
                sim_buffer[sim_layout.index(i, j)] = sim[i * n + j];
            }
        }
        const SENTINEL: f32 = -7.0;
        let mut plan_buffer = vec![SENTINEL; plan_layout.buffer_len(m, n)];
        let view = DMatrixView::<f32, Dyn, Dyn>::from_slice_with_strides(
            &sim_buffer[sim_layout.offset..], m, n, sim_layout.row_stride, sim_layout.col_stride,
        );
        let mut plan = DMatrixViewMut::<f32, Dyn, Dyn>::from_slice_with_strides_mut(
            &mut plan_buffer[plan_layout.offset..], m, n, plan_layout.row_stride, plan_layout.col_stride,
        );
        let mut work = vec![0.0; ot::workspace_len(m, n)];
        let report = ot::nalgebra::solve(&view, &params, &mut work, &mut plan).expect("valid problem");

        prop_assert_eq!(report, expected_report);
        for i in 0..m {
            for j in 0..n {
                let (here, there) = (plan_buffer[plan_layout.index(i, j)], expected[i * n + j]);
                prop_assert_eq!(here.to_bits(), there.to_bits(), "plan ({}, {}): {} vs {}", i, j, here, there);
            }
        }
        let mut is_entry = vec![false; plan_buffer.len()];
        for i in 0..m {
            for j in 0..n {
                is_entry[plan_layout.index(i, j)] = true;
            }
        }
        for (k, &t) in plan_buffer.iter().enumerate() {
            if !is_entry[k] {
                prop_assert_eq!(t, SENTINEL, "gap {} of the plan's buffer was written", k);
            }
        }
    }
}

/// Owned, statically sized matrices work too; nalgebra stores them column by column.
#[test]
fn static_matrices_give_the_slice_plan() {
    let rows = [0.30f32, 0.10, 0.25, 0.20, 0.05, 0.28];
    let sim = Matrix3x2::from_row_slice(&rows);
    let (expected, expected_report) = solve_slices(&rows, 3, 2, &OtParams::FEDOTP);
    let mut work = [0.0f32; ot::workspace_len(3, 2)];
    let mut plan = Matrix3x2::zeros();
    let report = ot::nalgebra::solve(&sim, &OtParams::FEDOTP, &mut work, &mut plan).unwrap();
    assert_eq!(report, expected_report);
    // `iter` walks column-major; the reference is row-major.
    let plan_rows: Vec<f32> = plan.transpose().iter().copied().collect();
    assert_eq!(plan_rows, expected);
}

/// The slice API's refusals, with the same errors; a plan of the wrong shape is named by its rows
/// or columns. Nothing is written on error.
#[test]
fn refusals_match_the_slice_api_and_write_nothing() {
    let rows = [0.2f32, 0.1, 0.3, 0.25, 0.4, 0.05];
    let sim = Matrix3x2::from_row_slice(&rows);
    let good = OtParams::FEDOTP;
    let mut work = [0.0f32; ot::workspace_len(3, 2)];
    let untouched = Matrix3x2::repeat(7.0f32);

    let mut plan = untouched;
    let bad_eps = OtParams { eps: 0.0, ..good };
    assert_eq!(
        ot::nalgebra::solve(&sim, &bad_eps, &mut work, &mut plan),
        Err(OtError::InvalidEps(0.0))
    );

    let empty = DMatrixView::<f32>::from_slice(&[], 0, 2);
    assert_eq!(
        ot::nalgebra::solve(&empty, &good, &mut work, &mut plan),
        Err(OtError::EmptyDimension { name: "patches" })
    );

    let short = ot::workspace_len(3, 2) - 1;
    assert_eq!(
        ot::nalgebra::solve(&sim, &good, &mut work[..short], &mut plan),
        Err(OtError::BufferLength {
            name: "workspace",
            expected: short + 1,
            found: short
        })
    );

    // Six entries, as the problem has, but transposed.
    let mut transposed = Matrix2x3::repeat(7.0f32);
    assert_eq!(
        ot::nalgebra::solve(&sim, &good, &mut work, &mut transposed),
        Err(OtError::BufferLength {
            name: "plan rows",
            expected: 3,
            found: 2
        })
    );
    assert_eq!(transposed, Matrix2x3::repeat(7.0));
    let mut narrow_buffer = [7.0f32; 3];
    let mut narrow = DMatrixViewMut::<f32, Dyn, Dyn>::from_slice_with_strides_mut(
        &mut narrow_buffer,
        3,
        1,
        1,
        3,
    );
    assert_eq!(
        ot::nalgebra::solve(&sim, &good, &mut work, &mut narrow),
        Err(OtError::BufferLength {
            name: "plan columns",
            expected: 2,
            found: 1
        })
    );

    // The index of a non-finite similarity is row-major, as in the slice API.
    let mut with_nan = rows;
    with_nan[3] = f32::NAN;
    let slice_error = ot::solve(
        Similarity::new(&with_nan, 3, 2).unwrap(),
        &good,
        &mut work,
        &mut [0.0; 6],
    )
    .unwrap_err();
    assert_eq!(
        slice_error,
        OtError::NonFinite {
            name: "similarity",
            index: 3
        }
    );
    assert_eq!(
        ot::nalgebra::solve(
            &Matrix3x2::from_row_slice(&with_nan),
            &good,
            &mut work,
            &mut plan
        ),
        Err(slice_error)
    );
    assert_eq!(plan, untouched);
}
