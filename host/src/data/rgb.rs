//! [`RgbImage`]: an 8-bit RGB image in memory, and decoding JPEG/PNG files into one.
//!
//! Every image the model sees goes through this type, whatever the file held: grayscale is
//! replicated to three channels, an alpha channel is dropped (as PIL's `convert("RGB")` does — no
//! compositing), CMYK JPEGs are converted by the decoder, palette PNGs are expanded, and 16-bit
//! PNGs are scaled to 8 bits (`round(v / 257)`; PIL instead keeps the high byte of 16-bit RGB and
//! clips 16-bit gray, so such files can differ from the reference by one level). EXIF orientation
//! is ignored, as PIL and torchvision ignore it.
//!
//! [`RgbImage::open_windowed`] reads 16-bit grayscale PNGs (CT, MR and X-ray exports) through a
//! display [`GrayWindow`] instead, as [`RgbImage::from_gray16`] does with a buffer in memory.

use std::path::Path;

use super::error::{DataError, Result};
use super::pixels::{GrayWindow, RowLayout};

/// An 8-bit RGB image: `height` rows of `width` pixels, 3 bytes per pixel (HWC, row-major).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl RgbImage {
    /// Wraps `pixels` (HWC, `3 · width · height` bytes).
    ///
    /// ```
    /// use fedotp_host::data::RgbImage;
    /// let red = RgbImage::new(2, 1, vec![255, 0, 0, 255, 0, 0]).unwrap();
    /// assert_eq!(red.pixel(1, 0), [255, 0, 0]);
    /// assert!(RgbImage::new(2, 2, vec![0; 3]).is_err());
    /// ```
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Result<Self> {
        let expected = 3 * width as usize * height as usize;
        if width == 0 || height == 0 || pixels.len() != expected {
            return Err(DataError::Invalid(format!(
                "an RGB image of {width}x{height} needs {expected} bytes (and a non-zero size), got {}",
                pixels.len()
            )));
        }
        Ok(RgbImage {
            width,
            height,
            pixels,
        })
    }

    /// Decodes a JPEG or PNG file (the format is read from the file's first bytes).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|error| DataError::io(path, error))?;
        Self::decode(&bytes, path)
    }

    /// Decodes a JPEG or PNG file as [`RgbImage::open`] does, except a 16-bit grayscale PNG
    /// (with or without alpha, which is dropped): its values are mapped to [0, 1] by `window`
    /// and rounded to 8 bits by [`RgbImage::from_gray16`]. Other files — 8-bit, colour (16-bit
    /// colour included), JPEG — decode as [`RgbImage::open`] decodes them. An invalid window is
    /// an error naming the file.
    pub fn open_windowed(path: &Path, window: GrayWindow) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|error| DataError::io(path, error))?;
        Self::decode_windowed(&bytes, path, window)
    }

    /// Decodes JPEG or PNG `bytes`; `name` is the file the bytes came from, used in errors.
    pub fn decode(bytes: &[u8], name: &Path) -> Result<Self> {
        Self::decode_with(bytes, name, None)
    }

    /// Decodes JPEG or PNG `bytes` as [`RgbImage::open_windowed`] decodes a file's.
    pub fn decode_windowed(bytes: &[u8], name: &Path, window: GrayWindow) -> Result<Self> {
        Self::decode_with(bytes, name, Some(window))
    }

    fn decode_with(bytes: &[u8], name: &Path, window: Option<GrayWindow>) -> Result<Self> {
        let image_error = |source: Box<dyn std::error::Error + Send + Sync>| DataError::Image {
            path: name.to_path_buf(),
            source,
        };
        if let Some(window) = window {
            window.validate().map_err(|e| image_error(e.into()))?;
        }
        let format = image::guess_format(bytes).map_err(|e| image_error(e.into()))?;
        if !matches!(format, image::ImageFormat::Jpeg | image::ImageFormat::Png) {
            return Err(image_error(
                format!("{format:?} images are not supported (JPEG and PNG are)").into(),
            ));
        }
        let decoded = image::load_from_memory_with_format(bytes, format)
            .map_err(|e| image_error(e.into()))?;
        if let Some(window) = window {
            let (width, height) = (decoded.width(), decoded.height());
            let layout = RowLayout {
                width,
                height,
                row_stride: width as usize,
            };
            let windowed = match &decoded {
                image::DynamicImage::ImageLuma16(gray) => {
                    Some(Self::from_gray16(layout, gray.as_raw(), window))
                }
                image::DynamicImage::ImageLumaA16(gray_alpha) => {
                    let gray: Vec<u16> = gray_alpha.pixels().map(|pixel| pixel.0[0]).collect();
                    Some(Self::from_gray16(layout, &gray, window))
                }
                _ => None,
            };
            if let Some(image) = windowed {
                return image.map_err(|e| image_error(e.into()));
            }
        }
        let rgb = decoded.into_rgb8();
        let (width, height) = rgb.dimensions();
        Self::new(width, height, rgb.into_raw()).map_err(|e| image_error(e.into()))
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixels, HWC.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The pixel at column `x`, row `y` (panics outside the image, like slice indexing).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let at = 3 * (y as usize * self.width as usize + x as usize);
        [self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]]
    }

    /// The `width × height` region whose top-left pixel is (`left`, `top`); the region must lie
    /// inside the image (callers compute it from the image's size).
    pub(crate) fn crop(&self, left: u32, top: u32, width: u32, height: u32) -> RgbImage {
        debug_assert!(left + width <= self.width && top + height <= self.height);
        let row_bytes = 3 * width as usize;
        let mut pixels = Vec::with_capacity(row_bytes * height as usize);
        for y in top..top + height {
            let start = 3 * (y as usize * self.width as usize + left as usize);
            pixels.extend_from_slice(&self.pixels[start..start + row_bytes]);
        }
        RgbImage {
            width,
            height,
            pixels,
        }
    }

    /// Mirrors the image left to right.
    pub(crate) fn flip_horizontal(&mut self) {
        let row_bytes = 3 * self.width as usize;
        for row in self.pixels.chunks_exact_mut(row_bytes) {
            let mut left = 0;
            let mut right = self.width as usize - 1;
            while left < right {
                for c in 0..3 {
                    row.swap(3 * left + c, 3 * right + c);
                }
                left += 1;
                right -= 1;
            }
        }
    }
}
