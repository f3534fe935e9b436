//! DICOM's display mapping of 16-bit gray values, written from the standard rather than taken
//! from `fedotp_host`, for the tests of everything that reads 16-bit grayscale images through a
//! window (`dataset.gray_window`, `fedotp encode --gray-window`, libfedotp).

/// DICOM's linear VOI LUT (PS3.3 C.11.2.1.2.1) to 8 bits, in f64: y = ((x − (c − 0.5)) / (w − 1)
/// + 0.5) clamped to [0, 1], times 255, rounded.
///
/// ```
/// use fedotp_tests::dicom::dicom_linear;
/// // Centre 1000, width 401: the ramp runs over (799.5, 1199.5].
/// assert_eq!([799, 900, 1000, 1200].map(|v| dicom_linear(v, 1000.0, 401.0)), [0, 64, 128, 255]);
/// ```
pub fn dicom_linear(x: u16, centre: f64, width: f64) -> u8 {
    let x = f64::from(x);
    let y = if x <= centre - 0.5 - (width - 1.0) / 2.0 {
        0.0
    } else if x > centre - 0.5 + (width - 1.0) / 2.0 {
        1.0
    } else {
        (x - (centre - 0.5)) / (width - 1.0) + 0.5
    };
    (y * 255.0).round() as u8
}
