//! A set of labelled images held by libfedotp: what a client trains and predicts on.
//!
//! Images come in as the caller holds them — 8-bit RGB or gray rows with a stride, 16-bit gray
//! with a window, or encoded JPEG/PNG bytes (16-bit grayscale PNGs with a window too) — and are
//! kept as 8-bit RGB (the conversions are `fedotp_host::data`'s), so the caller's buffers can be
//! freed as soon as a call returns. Resizing to the model's input happens when a client uses the
//! images.
//!
//! Or a set holds the image tower's output computed elsewhere (`fedotp encode`, another
//! process, another machine): per image, the pooled token and the patch tokens, after the
//! projection. Then no pixels are kept and a client skips the image tower.

use std::path::Path;

use fedotp_host::data::{GrayWindow, ImageSource, PixelError, RgbImage, RowLayout, Sample};

use crate::boundary::{call, require, slice, write};
use crate::handle::{self, Handle};
use crate::status::{
    Failure, FEDOTP_ERR_EMPTY_DIMENSION, FEDOTP_ERR_MIXED_IMAGES, FEDOTP_ERR_NON_FINITE,
    FEDOTP_ERR_OUT_OF_MEMORY, FEDOTP_ERR_SHAPE_MISMATCH, FEDOTP_ERR_SIZE_OVERFLOW,
};

/// The label of an image that has none: it can be predicted, not trained on.
pub const FEDOTP_NO_LABEL: u32 = u32::MAX;

/// A set of images with their labels, in the order they were added.
///
/// Opaque: create it with `fedotp_images_new`, fill it with the `fedotp_images_add_*`
/// functions, free it with `fedotp_images_free`. Thread-safe: calls on one set take turns.
pub struct FedotpImages {
    _opaque: [u8; 0],
}

impl Handle for FedotpImages {
    type Object = ImageSet;
    const NAME: &'static str = "FedotpImages";
}

/// What a `FedotpImages` handle names: labelled images, or labelled precomputed tokens — one
/// kind per set.
#[derive(Default)]
pub(crate) struct ImageSet {
    /// One per image, in the order added: its label, and its pixels (none for tokens).
    pub(crate) samples: Vec<Sample>,
    /// The images' tokens, when the set holds tokens.
    pub(crate) tokens: Option<Tokens>,
}

/// Precomputed image-tower outputs, one record per sample.
pub(crate) struct Tokens {
    /// Tokens per image: the pooled one, then the patches.
    pub(crate) per_image: usize,
    /// Width of a token (the model's embedding width).
    pub(crate) dim: usize,
    /// `samples × per_image × dim` values.
    pub(crate) values: Vec<f32>,
}

fn mixed() -> Failure {
    Failure::new(
        FEDOTP_ERR_MIXED_IMAGES,
        "a set holds images or precomputed tokens, not both: use another set",
    )
}

fn no_room(what: &str) -> Failure {
    Failure::new(
        FEDOTP_ERR_OUT_OF_MEMORY,
        format!("cannot grow the image set by {what}"),
    )
}

/// A window for 16-bit gray images: DICOM's linear VOI LUT with window centre `centre` and
/// width `width` (>= 1), in the stored pixel values: values up to `centre - 0.5 - (width - 1)/2`
/// are black, values above `centre - 0.5 + (width - 1)/2` white, linear between.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FedotpGrayWindow {
    /// The window centre.
    pub centre: f64,
    /// The window width, at least 1.
    pub width: f64,
}

/// The window a `FedotpGrayWindow *` names, `None` for NULL.
///
/// # Safety
/// A non-NULL `window` must point to an aligned, initialised `FedotpGrayWindow`.
unsafe fn centre_width(window: *const FedotpGrayWindow) -> Option<GrayWindow> {
    // SAFETY: `as_ref` turns NULL into `None`; a non-NULL `window` points to an aligned,
    // initialised `FedotpGrayWindow` (the caller's contract), copied out at once.
    unsafe { window.as_ref() }
        .map(|&FedotpGrayWindow { centre, width }| GrayWindow::CentreWidth { centre, width })
}

/// Creates an empty image set.
///
/// - `images_out`: receives the new handle; free it with `fedotp_images_free`.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`. On error nothing is written. Thread-safe.
///
/// # Safety
/// A non-NULL `images_out` must point to a writable `FedotpImages *`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_images_new(images_out: *mut *mut FedotpImages) -> i32 {
    call(|| {
        require(images_out, "images_out")?;
        let handle = handle::register::<FedotpImages>(ImageSet::default())?;
        // SAFETY: non-NULL (checked above) and writable.
        unsafe { write(images_out, handle, "images_out") }
    })
}

/// Appends `image` with `label` to the set `images` names; `make` runs under the set's lock,
/// after the handle was checked, so a bad handle is reported before a bad image.
fn add(
    images: *mut FedotpImages,
    label: u32,
    make: impl FnOnce() -> Result<RgbImage, Failure>,
) -> Result<(), Failure> {
    handle::with(images, "images", |set| {
        if set.tokens.is_some() {
            return Err(mixed());
        }
        let image = make()?;
        set.samples
            .try_reserve(1)
            .map_err(|_| no_room("one image"))?;
        set.samples.push(Sample {
            image: ImageSource::Memory(image),
            label: label as usize,
            domain: 0,
        });
        Ok(())
    })
}

/// Appends the image `convert` makes of the pixel rows at `pixels` (`channels` elements a
/// pixel) to the set `images` names.
///
/// # Safety
/// A non-NULL `pixels` must point to the span of `layout` with `channels` elements a pixel.
unsafe fn add_rows<T>(
    images: *mut FedotpImages,
    pixels: *const T,
    layout: RowLayout,
    channels: usize,
    label: u32,
    convert: impl FnOnce(RowLayout, &[T]) -> Result<RgbImage, PixelError>,
) -> i32 {
    call(|| {
        add(images, label, || {
            // SAFETY: the caller passes the layout's span at `pixels`.
            let data = unsafe { slice(pixels, layout.buffer_len(channels)?, "pixels") }?;
            Ok(convert(layout, data)?)
        })
    })
}

fn layout(width: u32, height: u32, row_stride: usize) -> RowLayout {
    RowLayout {
        width,
        height,
        row_stride,
    }
}

/// Adds an 8-bit RGB image.
///
/// - `pixels`: `height` rows of `width` pixels of 3 bytes (R, G, B), row `y` starting at
///   `pixels + y * row_stride`; read only, copied;
/// - `width`, `height`: the image's size, both > 0;
/// - `row_stride`: bytes from one row's start to the next's, at least `3 * width`; the buffer
///   spans `row_stride * (height - 1) + 3 * width` bytes;
/// - `label`: the class index (checked against a client's classes when it trains), or
///   `FEDOTP_NO_LABEL`.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`images`, `pixels`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_EMPTY_DIMENSION`
/// (`width` or `height` is 0); `FEDOTP_ERR_INVALID_STRIDE`; `FEDOTP_ERR_SIZE_OVERFLOW` (the
/// span overflows); `FEDOTP_ERR_OUT_OF_MEMORY`. On error the set is unchanged. Thread-safe.
///
/// # Safety
/// A non-NULL `pixels` must point to the span stated above.
#[no_mangle]
pub unsafe extern "C" fn fedotp_images_add_rgb8(
    images: *mut FedotpImages,
    pixels: *const u8,
    width: u32,
    height: u32,
    row_stride: usize,
    label: u32,
) -> i32 {
    let layout = layout(width, height, row_stride);
    // SAFETY: the caller passes the layout's span at `pixels`.
    unsafe { add_rows(images, pixels, layout, 3, label, RgbImage::from_rgb8) }
}

/// Adds an 8-bit grayscale image (each level becomes R = G = B).
///
/// - `pixels`: `height` rows of `width` bytes, row `y` at `pixels + y * row_stride`;
/// - `row_stride`: at least `width`; the buffer spans `row_stride * (height - 1) + width`
///   bytes;
/// - the other arguments and the statuses as `fedotp_images_add_rgb8`.
///
/// # Safety
/// A non-NULL `pixels` must point to the span stated above.
#[no_mangle]
pub unsafe extern "C" fn fedotp_images_add_gray8(
    images: *mut FedotpImages,
    pixels: *const u8,
    width: u32,
    height: u32,
    row_stride: usize,
    label: u32,
) -> i32 {
    let layout = layout(width, height, row_stride);
    // SAFETY: the caller passes the layout's span at `pixels`.
    unsafe { add_rows(images, pixels, layout, 1, label, RgbImage::from_gray8) }
}

/// Adds a 16-bit grayscale image (CT, MR, X-ray): each value is mapped to [0, 1] by `window`,
/// rounded to 8 bits and replicated to R, G and B.
///
/// - `pixels`: `height` rows of `width` native-endian `uint16_t` values, row `y` at
///   `pixels + y * row_stride` (a `uint16_t *`: the stride counts values, not bytes);
/// - `row_stride`: at least `width`; the buffer spans `row_stride * (height - 1) + width`
///   values;
/// - `window`: NULL for the full range (`v / 65535`), or a centre and width (DICOM's linear
///   VOI LUT; apply a modality rescale slope/intercept to the window, not to the pixels);
/// - the other arguments as `fedotp_images_add_rgb8`.
///
/// Statuses: as `fedotp_images_add_rgb8`, and `FEDOTP_ERR_INVALID_WINDOW` (a centre or width
/// that is not finite, or a width below 1).
///
/// # Safety
/// A non-NULL `pixels` must point to the span stated above; a non-NULL `window` to a
/// `FedotpGrayWindow`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_images_add_gray16(
    images: *mut FedotpImages,
    pixels: *const u16,
    width: u32,
    height: u32,
    row_stride: usize,
    window: *const FedotpGrayWindow,
    label: u32,
) -> i32 {
    // SAFETY: a NULL or valid `window` (the caller's contract).
    let window = unsafe { centre_width(window) }.unwrap_or(GrayWindow::FullRange);
    let layout = layout(width, height, row_stride);
    // SAFETY: the caller passes the layout's span at `pixels`.
    unsafe {
        add_rows(images, pixels, layout, 1, label, |layout, data| {
            RgbImage::from_gray16(layout, data, window)
        })
    }
}

/// Adds an encoded JPEG or PNG image (format detected from its first bytes; gray, alpha,
/// palette, 16-bit and CMYK files are converted to 8-bit RGB).
///
/// - `bytes`, `len`: the whole file's bytes; read only, not kept;
/// - `label`: as in `fedotp_images_add_rgb8`.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`images`, `bytes`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`; `FEDOTP_ERR_SIZE_OVERFLOW` (a
/// `len` no buffer can have); `FEDOTP_ERR_IMAGE_DECODE` (empty, truncated, corrupt, or
/// another format; the decoder's reason is in the detail); `FEDOTP_ERR_OUT_OF_MEMORY`. On
/// error the set is unchanged. Thread-safe.
///
/// # Safety
/// A non-NULL `bytes` must point to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn fedotp_images_add_encoded(
    images: *mut FedotpImages,
    bytes: *const u8,
    len: usize,
    label: u32,
) -> i32 {
    // SAFETY: the caller passes `len` bytes at `bytes`.
    unsafe { add_encoded(images, bytes, len, label, None) }
}

/// Adds an encoded JPEG or PNG image as `fedotp_images_add_encoded` does, except a 16-bit
/// grayscale PNG (CT, MR, X-ray exported from DICOM; with or without alpha, which is dropped):
/// each value is mapped to [0, 1] by `window`, rounded to 8 bits and replicated to R, G and B,
/// as `fedotp_images_add_gray16` maps its pixels. Other images — 8-bit, colour (16-bit colour
/// included), JPEG — decode as `fedotp_images_add_encoded` decodes them, whatever the window.
///
/// - `bytes`, `len`, `label`: as in `fedotp_images_add_encoded`;
/// - `window`: a centre and width (DICOM's linear VOI LUT in stored units, as in
///   `fedotp_images_add_gray16`); read only, not kept. NULL: exactly
///   `fedotp_images_add_encoded` (a 16-bit grayscale PNG over the full range, `v / 65535`).
///
/// Statuses: as `fedotp_images_add_encoded`, and `FEDOTP_ERR_INVALID_WINDOW` (a centre or width
/// that is not finite, or a width below 1; checked before the bytes are decoded, whatever the
/// image). On error the set is unchanged. Thread-safe.
///
/// # Safety
/// A non-NULL `bytes` must point to `len` bytes; a non-NULL `window` to a `FedotpGrayWindow`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_images_add_encoded_windowed(
    images: *mut FedotpImages,
    bytes: *const u8,
    len: usize,
    label: u32,
    window: *const FedotpGrayWindow,
) -> i32 {
    // SAFETY: a NULL or valid `window` (the caller's contract).
    let window = unsafe { centre_width(window) };
    // SAFETY: the caller passes `len` bytes at `bytes`.
    unsafe { add_encoded(images, bytes, len, label, window) }
}

/// Appends the image decoded from the `len` bytes at `bytes` (16-bit grayscale PNGs through
/// `window`, when there is one) to the set `images` names: the window is checked after the
/// handle and the bytes, before decoding.
///
/// # Safety
/// A non-NULL `bytes` must point to `len` bytes.
unsafe fn add_encoded(
    images: *mut FedotpImages,
    bytes: *const u8,
    len: usize,
    label: u32,
    window: Option<GrayWindow>,
) -> i32 {
    call(|| {
        add(images, label, || {
            // SAFETY: the caller passes `len` bytes at `bytes`.
            let bytes = unsafe { slice(bytes, len, "bytes") }?;
            let name = Path::new("<encoded image bytes>");
            Ok(match window {
                None => RgbImage::decode(bytes, name)?,
                Some(window) => {
                    // An invalid window is refused as one, not as an undecodable image.
                    window.validate()?;
                    RgbImage::decode_windowed(bytes, name, window)?
                }
            })
        })
    })
}

/// Adds one image as the image tower's output computed elsewhere — what `fedotp encode` writes
/// as `image_tokens` for it: the pooled (class) token, then the patch tokens, each after
/// `ln_post` and the projection, not normalised. A client then skips the image tower, and
/// trains and predicts exactly as on the image itself; augmentation does not apply.
///
/// - `tokens`: `num_tokens * dim` floats, token after token; read only, not kept;
/// - `num_tokens`: the model's `image_tokens + 1` (see `fedotp_model_info`; 197 for
///   ViT-B/16); `dim`: its `embed_dim` (512 for ViT-B/16). They are checked against the model
///   when a client uses the set, and must be the same for every image of a set;
/// - `label`: as in `fedotp_images_add_rgb8`.
///
/// A set holds images or tokens, not both. Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER`
/// (`images`, `tokens`); `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`;
/// `FEDOTP_ERR_EMPTY_DIMENSION` (`num_tokens` below 2 or `dim` zero);
/// `FEDOTP_ERR_SIZE_OVERFLOW`; `FEDOTP_ERR_NON_FINITE` (the detail names the token and
/// component); `FEDOTP_ERR_SHAPE_MISMATCH` (other sizes than the set's earlier tokens);
/// `FEDOTP_ERR_MIXED_IMAGES` (the set holds images); `FEDOTP_ERR_OUT_OF_MEMORY`. On error the
/// set is unchanged. Thread-safe.
///
/// # Safety
/// A non-NULL `tokens` must point to `num_tokens * dim` floats.
#[no_mangle]
pub unsafe extern "C" fn fedotp_images_add_tokens(
    images: *mut FedotpImages,
    tokens: *const f32,
    num_tokens: usize,
    dim: usize,
    label: u32,
) -> i32 {
    call(|| {
        if num_tokens < 2 || dim == 0 {
            return Err(Failure::new(
                FEDOTP_ERR_EMPTY_DIMENSION,
                format!(
                    "{num_tokens} tokens of width {dim}: an image needs its pooled token and at \
                     least one patch token, of width >= 1"
                ),
            ));
        }
        let len = num_tokens.checked_mul(dim).ok_or_else(|| {
            Failure::new(
                FEDOTP_ERR_SIZE_OVERFLOW,
                "`num_tokens * dim` overflows size_t",
            )
        })?;
        // SAFETY: the caller passes `num_tokens * dim` floats at `tokens`.
        let values = unsafe { slice(tokens, len, "tokens") }?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Failure::new(
                FEDOTP_ERR_NON_FINITE,
                format!(
                    "tokens[{i}] (token {}, component {}) is {}",
                    i / dim,
                    i % dim,
                    values[i]
                ),
            ));
        }
        handle::with(images, "images", |set| {
            match &set.tokens {
                None if !set.samples.is_empty() => return Err(mixed()),
                Some(stored) if (stored.per_image, stored.dim) != (num_tokens, dim) => {
                    return Err(Failure::new(
                        FEDOTP_ERR_SHAPE_MISMATCH,
                        format!(
                            "{num_tokens} tokens of width {dim}, the set's earlier images have \
                             {} of width {}",
                            stored.per_image, stored.dim
                        ),
                    ))
                }
                _ => {}
            }
            // Room first, so that running out of memory leaves the set as it was.
            set.samples
                .try_reserve(1)
                .map_err(|_| no_room("one image"))?;
            let stored = match &mut set.tokens {
                Some(stored) => stored,
                None => set.tokens.insert(Tokens {
                    per_image: num_tokens,
                    dim,
                    values: Vec::new(),
                }),
            };
            if stored.values.try_reserve(len).is_err() {
                if stored.values.is_empty() {
                    set.tokens = None;
                }
                return Err(no_room("one image's tokens"));
            }
            stored.values.extend_from_slice(values);
            set.samples.push(Sample {
                image: ImageSource::Features,
                label: label as usize,
                domain: 0,
            });
            Ok(())
        })
    })
}

/// The number of images in a set.
///
/// - `count_out`: receives it.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_NULL_POINTER` (`images`, `count_out`);
/// `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`. On error nothing is written.
/// Thread-safe.
///
/// # Safety
/// A non-NULL `count_out` must point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn fedotp_images_count(
    images: *const FedotpImages,
    count_out: *mut usize,
) -> i32 {
    call(|| {
        require(count_out, "count_out")?;
        let count = handle::with(images, "images", |set| Ok(set.samples.len()))?;
        // SAFETY: non-NULL (checked above) and writable.
        unsafe { write(count_out, count, "count_out") }
    })
}

/// Frees an image set. NULL is a no-op (`FEDOTP_OK`); the handle is invalid afterwards.
///
/// Statuses: `FEDOTP_OK`; `FEDOTP_ERR_INVALID_HANDLE`; `FEDOTP_ERR_WRONG_HANDLE_TYPE`;
/// `FEDOTP_ERR_HANDLE_BUSY` (called from a progress callback of a training that uses it). On
/// error nothing is freed. Thread-safe.
#[no_mangle]
pub extern "C" fn fedotp_images_free(images: *mut FedotpImages) -> i32 {
    call(|| handle::release(images, "images"))
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;
    use std::ptr::{null, null_mut};

    use fedotp_tests::dicom::dicom_linear;

    use super::*;
    use crate::last_error::fedotp_last_error_message;
    use crate::status::{
        FEDOTP_ERR_IMAGE_DECODE, FEDOTP_ERR_INVALID_HANDLE, FEDOTP_ERR_INVALID_WINDOW,
        FEDOTP_ERR_NULL_POINTER, FEDOTP_OK,
    };

    /// Stored values below, on and above the ramp of the window centre 1000, width 401, which
    /// runs over (799.5, 1199.5], and the extremes.
    const GRAY16: [u16; 8] = [0, 799, 800, 900, 1000, 1199, 1200, 65_535];

    /// A PNG of `width × height` pixels `P` (encoded by the host library's codec).
    fn png<P: image::PixelWithColorType>(width: u32, height: u32, data: Vec<P::Subpixel>) -> Vec<u8>
    where
        [P::Subpixel]: image::EncodableLayout,
    {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image::ImageBuffer::<P, _>::from_raw(width, height, data)
            .unwrap()
            .write_to(&mut bytes, image::ImageFormat::Png)
            .unwrap();
        bytes.into_inner()
    }

    fn new_set() -> *mut FedotpImages {
        let mut images = null_mut();
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { fedotp_images_new(&mut images) }, FEDOTP_OK);
        images
    }

    /// `fedotp_images_add_encoded_windowed` of `bytes` with `window` (NULL for `None`).
    fn add(images: *mut FedotpImages, bytes: &[u8], window: Option<FedotpGrayWindow>) -> i32 {
        let window = window.as_ref().map_or(null(), |w| w as *const _);
        // SAFETY: a live slice of its length; `window` NULL or a live local.
        unsafe {
            fedotp_images_add_encoded_windowed(images, bytes.as_ptr(), bytes.len(), 7, window)
        }
    }

    /// The images of a set, as stored.
    fn stored(images: *mut FedotpImages) -> Vec<RgbImage> {
        handle::with(images, "images", |set| {
            Ok(set
                .samples
                .iter()
                .map(|sample| match &sample.image {
                    ImageSource::Memory(image) => image.clone(),
                    other => panic!("{other:?}"),
                })
                .collect())
        })
        .unwrap()
    }

    fn gray(width: u32, height: u32, levels: &[u8]) -> RgbImage {
        let rgb = levels.iter().flat_map(|&v| [v; 3]).collect();
        RgbImage::new(width, height, rgb).unwrap()
    }

    fn last_error() -> String {
        // SAFETY: libfedotp returns a NUL-terminated string, valid until its next call here.
        unsafe { CStr::from_ptr(fedotp_last_error_message()) }
            .to_string_lossy()
            .into_owned()
    }

    /// A 16-bit grayscale PNG (plain and with alpha) is read through the window: DICOM's
    /// linear function of its values (computed independently), `from_gray16` on them, and the
    /// training path's windowed decoding; an 8-bit PNG decodes as without a window.
    #[test]
    fn encoded_16_bit_gray_is_read_through_the_window() {
        let images = new_set();
        let (centre, width) = (1000.0, 401.0);
        let window = FedotpGrayWindow { centre, width };
        let plain = png::<image::Luma<u16>>(4, 2, GRAY16.to_vec());
        let with_alpha =
            png::<image::LumaA<u16>>(4, 2, GRAY16.iter().flat_map(|&v| [v, 1234]).collect());
        let gray8 = vec![0, 3, 4, 64, 128, 192, 254, 255];
        let eight_bit = png::<image::Luma<u8>>(4, 2, gray8.clone());
        for bytes in [&plain, &with_alpha, &eight_bit] {
            assert_eq!(add(images, bytes, Some(window)), FEDOTP_OK);
        }
        let expected: Vec<u8> = GRAY16
            .iter()
            .map(|&v| dicom_linear(v, centre, width))
            .collect();
        assert_eq!(expected, [0, 0, 0, 64, 128, 255, 255, 255]);
        let expected = gray(4, 2, &expected);
        let window = GrayWindow::CentreWidth { centre, width };
        let layout = RowLayout {
            width: 4,
            height: 2,
            row_stride: 4,
        };
        assert_eq!(
            RgbImage::from_gray16(layout, &GRAY16, window).unwrap(),
            expected
        );
        let name = std::path::Path::new("x.png");
        assert_eq!(
            RgbImage::decode_windowed(&plain, name, window).unwrap(),
            expected
        );
        assert_eq!(
            stored(images),
            [expected.clone(), expected, gray(4, 2, &gray8)]
        );
        handle::with(images, "images", |set| {
            assert!(set.samples.iter().all(|sample| sample.label == 7));
            Ok(())
        })
        .unwrap();
        assert_eq!(fedotp_images_free(images), FEDOTP_OK);
    }

    /// A NULL window is `fedotp_images_add_encoded` exactly, which is the full range
    /// (`from_gray16` with `v / 65535`) for every 16-bit value.
    #[test]
    fn a_null_window_is_the_unwindowed_decoding_and_the_full_range() {
        let every: Vec<u16> = (0..=u16::MAX).collect();
        let bytes = png::<image::Luma<u16>>(256, 256, every.clone());
        let (windowed, unwindowed) = (new_set(), new_set());
        assert_eq!(add(windowed, &bytes, None), FEDOTP_OK);
        // SAFETY: a live slice of its length.
        let status =
            unsafe { fedotp_images_add_encoded(unwindowed, bytes.as_ptr(), bytes.len(), 7) };
        assert_eq!(status, FEDOTP_OK);
        let layout = RowLayout {
            width: 256,
            height: 256,
            row_stride: 256,
        };
        let full = RgbImage::from_gray16(layout, &every, GrayWindow::FullRange).unwrap();
        assert_eq!(stored(windowed), stored(unwindowed));
        assert_eq!(stored(unwindowed), [full]);
        for images in [windowed, unwindowed] {
            assert_eq!(fedotp_images_free(images), FEDOTP_OK);
        }
    }

    /// Refusals as the other `add` functions: a bad window (for any image), bad bytes, NULL
    /// pointers, a freed handle; the set is unchanged.
    #[test]
    fn bad_windows_bytes_and_handles_are_refused() {
        let images = new_set();
        let bytes = png::<image::Luma<u16>>(4, 2, GRAY16.to_vec());
        let eight_bit = png::<image::Luma<u8>>(2, 1, vec![1, 2]);
        for (centre, width) in [
            (1000.0, 0.5),
            (f64::NAN, 400.0),
            (1000.0, f64::INFINITY),
            (f64::NEG_INFINITY, 400.0),
        ] {
            let window = Some(FedotpGrayWindow { centre, width });
            for bytes in [&bytes, &eight_bit] {
                assert_eq!(add(images, bytes, window), FEDOTP_ERR_INVALID_WINDOW);
                assert!(last_error().contains("invalid window"), "{}", last_error());
            }
        }
        let window = Some(FedotpGrayWindow {
            centre: 1000.0,
            width: 400.0,
        });
        assert_eq!(add(images, &bytes[..20], window), FEDOTP_ERR_IMAGE_DECODE);
        assert_eq!(add(images, b"GIF89a..", window), FEDOTP_ERR_IMAGE_DECODE);
        assert_eq!(add(images, &[], None), FEDOTP_ERR_IMAGE_DECODE);
        // SAFETY: NULL bytes and NULL handles are checked before anything is read.
        unsafe {
            let status = fedotp_images_add_encoded_windowed(images, null(), 10, 0, null());
            assert_eq!(status, FEDOTP_ERR_NULL_POINTER);
            let status = fedotp_images_add_encoded_windowed(
                null_mut(),
                bytes.as_ptr(),
                bytes.len(),
                0,
                null(),
            );
            assert_eq!(status, FEDOTP_ERR_NULL_POINTER);
        }
        assert!(stored(images).is_empty());
        assert_eq!(add(images, &bytes, window), FEDOTP_OK);
        assert_eq!(fedotp_images_free(images), FEDOTP_OK);
        assert_eq!(add(images, &bytes, window), FEDOTP_ERR_INVALID_HANDLE);
    }
}
