//! Raw pixel buffers, as imaging software holds them, into [`RgbImage`]s.
//!
//! A buffer is `height` rows of `width` pixels, each row starting `row_stride` elements after the
//! previous one (rows may be padded, or be a region of a larger image). Three kinds:
//!
//! - 8-bit RGB (3 bytes a pixel) — taken as it is;
//! - 8-bit grayscale — replicated to three channels, as for a grayscale JPEG;
//! - 16-bit grayscale, as CT, MR and X-ray images are stored — mapped to [0, 1] by a
//!   [`GrayWindow`] (the full range, or a window centre and width as DICOM's linear VOI LUT
//!   defines it), then rounded to the 256 levels every other image has, and replicated.
//!
//! Rounding a window to 8 bits is what a display does with it, and what CLIP's preprocessing
//! expects (it was trained on 8-bit images); the window decides which intensities those 256
//! levels resolve.

use super::RgbImage;

/// How a buffer's rows lie in memory: `height` rows of `width` pixels, row `y` starting at
/// element `y · row_stride` (elements of the buffer's type: bytes for 8-bit, `u16` for 16-bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLayout {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Elements from the start of one row to the start of the next; at least
    /// `width · channels`.
    pub row_stride: usize,
}

/// Why a pixel buffer cannot be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PixelError {
    /// The width or the height is zero.
    #[error("an image of {width}x{height} pixels is empty")]
    Empty {
        /// Pixels per row.
        width: u32,
        /// Rows.
        height: u32,
    },
    /// A row's pixels do not fit in `row_stride` elements.
    #[error(
        "row stride {row_stride} is shorter than a row of {width} pixels x {channels} channels"
    )]
    StrideTooSmall {
        /// The stride given.
        row_stride: usize,
        /// Pixels per row.
        width: u32,
        /// Elements per pixel.
        channels: usize,
    },
    /// The buffer's length overflows `usize`.
    #[error("a buffer of {height} rows of stride {row_stride} overflows the address space")]
    Overflow {
        /// Rows.
        height: u32,
        /// The stride given.
        row_stride: usize,
    },
    /// The buffer holds fewer elements than its layout spans.
    #[error("the pixel buffer holds {len} elements, its layout spans {needed}")]
    BufferTooShort {
        /// Elements given.
        len: usize,
        /// Elements the layout spans.
        needed: usize,
    },
    /// The 8-bit RGB copy of the image cannot be allocated.
    #[error("cannot allocate {bytes} bytes for a {width}x{height} RGB image")]
    OutOfMemory {
        /// Pixels per row.
        width: u32,
        /// Rows.
        height: u32,
        /// Bytes the copy needs (`usize::MAX` if the count overflows).
        bytes: usize,
    },
    /// A window whose width is below 1 or whose centre or width is not finite.
    #[error("invalid window: centre {centre}, width {width} (need finite values, width >= 1)")]
    InvalidWindow {
        /// The window's centre.
        centre: f64,
        /// The window's width.
        width: f64,
    },
}

impl RowLayout {
    /// The elements a buffer of this layout spans with `channels` elements a pixel:
    /// `row_stride · (height − 1) + width · channels` (the last row needs no padding).
    ///
    /// ```
    /// use fedotp_host::data::RowLayout;
    /// let layout = RowLayout { width: 3, height: 2, row_stride: 16 };
    /// assert_eq!(layout.buffer_len(3), Ok(16 + 9));
    /// assert!(layout.buffer_len(6).is_err()); // 3 pixels x 6 channels do not fit in 16
    /// ```
    pub fn buffer_len(&self, channels: usize) -> Result<usize, PixelError> {
        let (width, height, row_stride) = (self.width, self.height, self.row_stride);
        if width == 0 || height == 0 {
            return Err(PixelError::Empty { width, height });
        }
        let row_len = (width as usize)
            .checked_mul(channels)
            .filter(|&row_len| row_len <= row_stride)
            .ok_or(PixelError::StrideTooSmall {
                row_stride,
                width,
                channels,
            })?;
        row_stride
            .checked_mul(height as usize - 1)
            .and_then(|rows| rows.checked_add(row_len))
            .ok_or(PixelError::Overflow { height, row_stride })
    }

    /// Row `y` of `data` (`width · channels` elements), `data` having been checked to span the
    /// layout.
    fn row<'a, T>(&self, data: &'a [T], y: u32, channels: usize) -> &'a [T] {
        let start = y as usize * self.row_stride;
        &data[start..start + self.width as usize * channels]
    }

    /// Checks that `data` spans the layout with `channels` elements a pixel.
    fn check<T>(&self, data: &[T], channels: usize) -> Result<(), PixelError> {
        let needed = self.buffer_len(channels)?;
        if data.len() < needed {
            return Err(PixelError::BufferTooShort {
                len: data.len(),
                needed,
            });
        }
        Ok(())
    }

    /// An empty buffer with room for the RGB image, or an error instead of an abort when
    /// memory runs out (the caller's image may be as large as memory allows).
    fn rgb_buffer(&self) -> Result<Vec<u8>, PixelError> {
        let (width, height) = (self.width, self.height);
        let bytes = (width as usize)
            .checked_mul(height as usize)
            .and_then(|pixels| pixels.checked_mul(3))
            .unwrap_or(usize::MAX);
        let mut pixels = Vec::new();
        pixels
            .try_reserve_exact(bytes)
            .map_err(|_| PixelError::OutOfMemory {
                width,
                height,
                bytes,
            })?;
        Ok(pixels)
    }

    /// The image whose pixel (x, y) is `gray(row_y[x])` on all three channels.
    fn gray_image<T: Copy>(
        &self,
        data: &[T],
        gray: impl Fn(T) -> u8,
    ) -> Result<RgbImage, PixelError> {
        let mut pixels = self.rgb_buffer()?;
        for y in 0..self.height {
            for &value in self.row(data, y, 1) {
                let level = gray(value);
                pixels.extend_from_slice(&[level; 3]);
            }
        }
        Ok(self.image(pixels))
    }

    fn image(&self, pixels: Vec<u8>) -> RgbImage {
        RgbImage::new(self.width, self.height, pixels)
            .expect("the pixels were built for this layout's non-zero size")
    }
}

/// How 16-bit gray levels map to [0, 1].
///
/// In a configuration (`dataset.gray_window`) it is written `"full_range"` or
/// `{ centre = C, width = W }`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GrayWindow {
    /// `v / 65535`: 0 is black, 65535 white.
    FullRange,
    /// DICOM's linear VOI LUT (PS3.3 C.11.2.1.2.1) with window centre `c` and width `w >= 1`:
    /// 0 for `v <= c − 0.5 − (w − 1)/2`, 1 for `v > c − 0.5 + (w − 1)/2`, and
    /// `(v − (c − 0.5)) / (w − 1) + 0.5` between. `c` and `w` are in stored units (apply a
    /// modality rescale to the window, not to the pixels, beforehand).
    CentreWidth {
        /// The window centre.
        centre: f64,
        /// The window width.
        width: f64,
    },
}

impl GrayWindow {
    /// Checks that a centre-width window is finite and at least 1 wide.
    pub fn validate(&self) -> Result<(), PixelError> {
        match *self {
            GrayWindow::FullRange => Ok(()),
            GrayWindow::CentreWidth { centre, width } => {
                if centre.is_finite() && width.is_finite() && width >= 1.0 {
                    Ok(())
                } else {
                    Err(PixelError::InvalidWindow { centre, width })
                }
            }
        }
    }

    /// `value` mapped to [0, 1]; the window must be valid.
    ///
    /// ```
    /// use fedotp_host::data::GrayWindow;
    /// let window = GrayWindow::CentreWidth { centre: 1000.0, width: 201.0 };
    /// assert_eq!(window.map(899), 0.0);
    /// assert_eq!(window.map(1000), 0.5025);
    /// assert_eq!(window.map(1100), 1.0);
    /// assert_eq!(GrayWindow::FullRange.map(65535), 1.0);
    /// ```
    pub fn map(&self, value: u16) -> f64 {
        let value = f64::from(value);
        match *self {
            GrayWindow::FullRange => value / f64::from(u16::MAX),
            GrayWindow::CentreWidth { centre, width } => {
                let half = (width - 1.0) / 2.0;
                if value <= centre - 0.5 - half {
                    0.0
                } else if value > centre - 0.5 + half {
                    1.0
                } else {
                    // Here width > 1: with width 1 the two branches above cover every value.
                    (value - (centre - 0.5)) / (width - 1.0) + 0.5
                }
            }
        }
    }
}

impl serde::Serialize for GrayWindow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        match *self {
            GrayWindow::FullRange => serializer.serialize_str("full_range"),
            GrayWindow::CentreWidth { centre, width } => {
                let mut window = serializer.serialize_struct("GrayWindow", 2)?;
                window.serialize_field("centre", &centre)?;
                window.serialize_field("width", &width)?;
                window.end()
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for GrayWindow {
    /// `"full_range"`, or a table of exactly `centre` and `width`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{self, value::MapAccessDeserializer, Unexpected};

        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct CentreWidth {
            centre: f64,
            width: f64,
        }

        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = GrayWindow;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"full_range\" or a window { centre = C, width = W }")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<GrayWindow, E> {
                match value {
                    "full_range" => Ok(GrayWindow::FullRange),
                    other => Err(E::invalid_value(Unexpected::Str(other), &self)),
                }
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<GrayWindow, A::Error> {
                let CentreWidth { centre, width } =
                    serde::Deserialize::deserialize(MapAccessDeserializer::new(map))?;
                Ok(GrayWindow::CentreWidth { centre, width })
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// `fraction` in [0, 1] as the nearest of 256 levels.
fn to_level(fraction: f64) -> u8 {
    (fraction * 255.0).round() as u8
}

impl RgbImage {
    /// An image from 8-bit RGB rows (R, G, B for each pixel).
    ///
    /// ```
    /// use fedotp_host::data::{RgbImage, RowLayout};
    /// // Two 1-pixel rows, padded to 4 bytes.
    /// let data = [10, 20, 30, 0, 40, 50, 60];
    /// let image = RgbImage::from_rgb8(RowLayout { width: 1, height: 2, row_stride: 4 }, &data)?;
    /// assert_eq!(image.pixel(0, 1), [40, 50, 60]);
    /// # Ok::<(), fedotp_host::data::PixelError>(())
    /// ```
    pub fn from_rgb8(layout: RowLayout, data: &[u8]) -> Result<Self, PixelError> {
        layout.check(data, 3)?;
        let mut pixels = layout.rgb_buffer()?;
        for y in 0..layout.height {
            pixels.extend_from_slice(layout.row(data, y, 3));
        }
        Ok(layout.image(pixels))
    }

    /// An image from 8-bit grayscale rows, each level replicated to R, G and B.
    pub fn from_gray8(layout: RowLayout, data: &[u8]) -> Result<Self, PixelError> {
        layout.check(data, 1)?;
        layout.gray_image(data, |level| level)
    }

    /// An image from 16-bit grayscale rows: each value mapped to [0, 1] by `window`, rounded to
    /// 8 bits and replicated to R, G and B.
    pub fn from_gray16(
        layout: RowLayout,
        data: &[u16],
        window: GrayWindow,
    ) -> Result<Self, PixelError> {
        window.validate()?;
        layout.check(data, 1)?;
        layout.gray_image(data, |value| to_level(window.map(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(width: u32, height: u32, row_stride: usize) -> RowLayout {
        RowLayout {
            width,
            height,
            row_stride,
        }
    }

    #[test]
    fn rgb_rows_skip_their_padding() {
        // 2 x 2, stride 8: each row is 6 bytes of pixels and 2 of padding (99).
        let data = [1, 2, 3, 4, 5, 6, 99, 99, 7, 8, 9, 10, 11, 12];
        let image = RgbImage::from_rgb8(layout(2, 2, 8), &data).unwrap();
        assert_eq!(image.pixels(), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn gray_rows_are_replicated_to_three_channels() {
        let data = [0, 128, 7, 255, 9, 7];
        let image = RgbImage::from_gray8(layout(2, 2, 3), &data).unwrap();
        assert_eq!(
            image.pixels(),
            &[0, 0, 0, 128, 128, 128, 255, 255, 255, 9, 9, 9]
        );
    }

    #[test]
    fn full_range_maps_like_a_16_bit_png() {
        // round(v / 257): 0, 128.5 -> 129 (half away from zero), 257 -> 1, 65535 -> 255.
        let data = [0u16, 33_025, 257, 65_535];
        let image = RgbImage::from_gray16(layout(4, 1, 4), &data, GrayWindow::FullRange).unwrap();
        let levels: Vec<u8> = image.pixels().iter().step_by(3).copied().collect();
        assert_eq!(levels, [0, 129, 1, 255]);
    }

    #[test]
    fn a_window_follows_the_dicom_linear_function() {
        // centre 1000, width 201: the ramp runs over (899.5, 1099.5].
        // 899 -> 0; 900 -> (900 - 999.5)/200 + 0.5 = 0.0025 -> 0.6375 -> 1;
        // 1000 -> 0.5025 -> 128.1375 -> 128; 1099 -> 0.9975 -> 254.3625 -> 254; 1100 -> 255.
        let window = GrayWindow::CentreWidth {
            centre: 1000.0,
            width: 201.0,
        };
        let data = [899u16, 900, 1000, 1099, 1100, 0];
        let image = RgbImage::from_gray16(layout(5, 1, 6), &data, window).unwrap();
        let levels: Vec<u8> = image.pixels().iter().step_by(3).copied().collect();
        assert_eq!(levels, [0, 1, 128, 254, 255]);
    }

    #[test]
    fn a_window_one_wide_is_a_threshold() {
        // width 1: 0 for v <= c - 0.5, 1 above.
        let window = GrayWindow::CentreWidth {
            centre: 10.0,
            width: 1.0,
        };
        assert_eq!(window.map(9), 0.0);
        assert_eq!(window.map(10), 1.0);
    }

    #[test]
    fn invalid_windows_are_refused() {
        for (centre, width) in [(0.0, 0.5), (f64::NAN, 10.0), (0.0, f64::INFINITY)] {
            let window = GrayWindow::CentreWidth { centre, width };
            assert!(matches!(
                RgbImage::from_gray16(layout(1, 1, 1), &[0], window),
                Err(PixelError::InvalidWindow { .. })
            ));
        }
    }

    #[test]
    fn bad_layouts_name_their_problem() {
        assert_eq!(
            layout(0, 3, 9).buffer_len(3),
            Err(PixelError::Empty {
                width: 0,
                height: 3
            })
        );
        assert!(matches!(
            layout(4, 1, 11).buffer_len(3),
            Err(PixelError::StrideTooSmall { row_stride: 11, .. })
        ));
        assert!(matches!(
            layout(1, 3, usize::MAX).buffer_len(1),
            Err(PixelError::Overflow { .. })
        ));
        assert!(matches!(
            layout(u32::MAX, 1, usize::MAX).buffer_len(usize::MAX),
            Err(PixelError::StrideTooSmall { .. })
        ));
        // 2 rows of stride 4 and 3 bytes in the last: 7 needed.
        assert_eq!(
            RgbImage::from_rgb8(layout(1, 2, 4), &[0; 6]),
            Err(PixelError::BufferTooShort { len: 6, needed: 7 })
        );
    }
}
