//! One image's preview: decoded within limits, scaled to fit
//! [`PREVIEW_EDGE`] on its long side, encoded small. Pure CPU work on bytes
//! in memory: it never touches the store, the network or the async runtime,
//! and runs on the preview pool's threads (see `preview_pool.rs`).
//!
//! Hostile input is expected. The header is read first and an image over
//! [`MAX_PIXELS`] (or [`MAX_EDGE`] on a side, or needing more than
//! [`MAX_ALLOC`] bytes decoded) is refused before its pixels are allocated,
//! so a 50 000 × 50 000 PNG of a few hundred bytes costs nothing. A decoder
//! that panics on broken data is caught: the upload simply has no preview.
//!
//! A JPEG's preview is turned upright as its EXIF orientation says (a
//! phone stores a portrait photo as a landscape frame and a note to turn
//! it), since the preview carries no EXIF for a browser to act on. Only a
//! JPEG's: its EXIF sits in a segment of at most 64 KiB, while WebP's
//! decoder reads an `EXIF` chunk of whatever length the file claims (52
//! bytes can ask for 4 GiB, an abort no `catch_unwind` catches; a fuzz
//! seed keeps that so), and phones write their photos as JPEG.
//!
//! The preview is a JPEG at quality [`JPEG_QUALITY`] (a 320 px photo is a few
//! KiB, several times smaller than lossless WebP or PNG), or a PNG when the
//! image has transparent pixels, which JPEG cannot keep. An image already
//! within [`PREVIEW_EDGE`] on both sides gets none: the original is as small.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::metadata::Orientation;
use image::{
    DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageError, ImageFormat,
    ImageReader, Limits,
};

use super::sniff::Kind;

/// A preview's longest side, in pixels.
pub const PREVIEW_EDGE: u32 = 320;
/// The most pixels an image may have to get a preview (40 Mpx: a 7 300 ×
/// 5 500 photo). A worker's worst at this cap is a progressive JPEG: its
/// decoder keeps every coefficient, 2 bytes a pixel for each of up to 4
/// components (320 MB, which [`MAX_ALLOC`] does not bound: the decoder is
/// not given it), beside the decoded image (RGB, 120 MB) and the upload's
/// bytes twice (the job's, and the decoder's copy): near 460 MB with the
/// default 10 MiB uploads.
pub const MAX_PIXELS: u64 = 40_000_000;
/// The longest side an image may have to get a preview.
pub const MAX_EDGE: u32 = 32_768;
/// The most a decoder may allocate for one image.
pub const MAX_ALLOC: u64 = 256 << 20;
/// The JPEG quality of previews of opaque images.
pub const JPEG_QUALITY: u8 = 80;

/// An encoded preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// JPEG or PNG.
    pub kind: Kind,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Why an image got no preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewError {
    /// Not one of the image kinds previews are made of.
    NotAnImage(Kind),
    /// Over the limits; refused after reading the header only.
    TooLarge {
        /// What the header declares (`0 × 0` when the decoder refused
        /// before saying).
        width: u32,
        /// Height the header declares.
        height: u32,
    },
    /// The data does not decode.
    Decode(String),
    /// The preview could not be encoded.
    Encode(String),
    /// The decoder panicked (a bug in it, met with hostile data).
    Panicked,
}

impl std::fmt::Display for PreviewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotAnImage(kind) => write!(f, "{} files get no preview", kind.content_type()),
            Self::TooLarge { width, height } => write!(
                f,
                "{width} × {height} is over the preview limit of {MAX_PIXELS} pixels \
                 ({MAX_EDGE} on a side)"
            ),
            Self::Decode(why) => write!(f, "the image does not decode: {why}"),
            Self::Encode(why) => write!(f, "the preview could not be encoded: {why}"),
            Self::Panicked => f.write_str("the decoder panicked"),
        }
    }
}

/// The decoder's format for an upload of `kind`, if previews are made of it.
fn format_of(kind: Kind) -> Option<ImageFormat> {
    match kind {
        Kind::Png => Some(ImageFormat::Png),
        Kind::Jpeg => Some(ImageFormat::Jpeg),
        Kind::Webp => Some(ImageFormat::WebP),
        Kind::Gif => Some(ImageFormat::Gif),
        _ => None,
    }
}

/// Whether previews are made of uploads of `kind`.
pub fn is_previewable(kind: Kind) -> bool {
    format_of(kind).is_some()
}

/// The limits every decoder runs under.
fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_EDGE);
    limits.max_image_height = Some(MAX_EDGE);
    limits.max_alloc = Some(MAX_ALLOC);
    limits
}

/// The preview of `bytes`, an upload of `kind`: `Ok(None)` when the image
/// already fits within [`PREVIEW_EDGE`]. Never panics.
pub fn make(bytes: &[u8], kind: Kind) -> Result<Option<Encoded>, PreviewError> {
    let format = format_of(kind).ok_or(PreviewError::NotAnImage(kind))?;
    catch_unwind(AssertUnwindSafe(|| make_unguarded(bytes, format)))
        .unwrap_or(Err(PreviewError::Panicked))
}

fn make_unguarded(bytes: &[u8], format: ImageFormat) -> Result<Option<Encoded>, PreviewError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits());
    // Reads the header only: nothing the size of the image is allocated yet.
    let mut decoder = reader.into_decoder().map_err(refused(0, 0))?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS || decoder.total_bytes() > MAX_ALLOC {
        return Err(PreviewError::TooLarge { width, height });
    }
    if width <= PREVIEW_EDGE && height <= PREVIEW_EDGE {
        return Ok(None);
    }
    // The pixels come as the sensor stored them: a phone held upright saves
    // a landscape frame and an EXIF note to turn it, which the preview (a
    // fresh file, no EXIF) would lose. Read it now, since decoding consumes
    // the decoder; a JPEG's only (see the module's doc). An orientation
    // that cannot be read counts as none rather than failing: it is a note
    // beside the pixels, which may decode fine, and a preview that may lie
    // on its side beats none at all.
    let orientation = match format {
        ImageFormat::Jpeg => decoder.orientation().unwrap_or(Orientation::NoTransforms),
        _ => Orientation::NoTransforms,
    };
    // GIF: the first frame.
    let image = DynamicImage::from_decoder(decoder).map_err(refused(width, height))?;
    let mut small = image.thumbnail(PREVIEW_EDGE, PREVIEW_EDGE);
    drop(image);
    // Turned after scaling, so the copy a rotation makes is of the small
    // image. The limits above hold either way: a turn swaps the sides.
    small.apply_orientation(orientation);
    let (w, h) = (small.width(), small.height());
    let mut out = Vec::new();
    let translucent = small.color().has_alpha() && small.to_rgba8().pixels().any(|p| p.0[3] < 255);
    let written = if translucent {
        let kind = Kind::Png;
        PngEncoder::new(&mut out)
            .write_image(small.to_rgba8().as_raw(), w, h, ExtendedColorType::Rgba8)
            .map(|()| kind)
    } else {
        JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
            .write_image(small.to_rgb8().as_raw(), w, h, ExtendedColorType::Rgb8)
            .map(|()| Kind::Jpeg)
    };
    let kind = written.map_err(|e| PreviewError::Encode(e.to_string()))?;
    Ok(Some(Encoded {
        bytes: out,
        kind,
        width: w,
        height: h,
    }))
}

/// A decoder's error: over a limit, or broken data.
fn refused(width: u32, height: u32) -> impl Fn(ImageError) -> PreviewError {
    move |e| match e {
        ImageError::Limits(_) => PreviewError::TooLarge { width, height },
        other => PreviewError::Decode(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn png_of(image: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn a_wide_photo_becomes_a_320_px_jpeg_keeping_its_aspect() {
        let photo = RgbImage::from_fn(1000, 500, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 9]));
        let preview = make(&png_of(&photo.into()), Kind::Png).unwrap().unwrap();
        assert_eq!((preview.width, preview.height), (320, 160));
        assert_eq!(preview.kind, Kind::Jpeg);
        assert!(preview.bytes.starts_with(&[0xff, 0xd8, 0xff]));
    }

    #[test]
    fn transparency_keeps_a_png_and_small_images_get_none() {
        let sticker = RgbaImage::from_fn(400, 800, |x, _| Rgba([1, 2, 3, (x % 256) as u8]));
        let preview = make(&png_of(&sticker.into()), Kind::Png).unwrap().unwrap();
        assert_eq!((preview.width, preview.height), (160, 320));
        assert_eq!(preview.kind, Kind::Png);
        let icon = RgbImage::new(320, 200);
        assert_eq!(make(&png_of(&icon.into()), Kind::Png), Ok(None));
    }

    /// A 400 × 200 JPEG, red on its left half and blue on its right, with
    /// an EXIF segment saying `orientation` when there is one.
    fn split_jpeg(orientation: Option<u16>) -> Vec<u8> {
        let photo = RgbImage::from_fn(400, 200, |x, _| {
            if x < 200 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let mut jpeg = Vec::new();
        DynamicImage::from(photo)
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let Some(orientation) = orientation else {
            return jpeg;
        };
        // APP1 as a camera writes it: "Exif\0\0", then a little-endian TIFF
        // header pointing at IFD0 right after it, and IFD0 holding only
        // Orientation (tag 0x0112, SHORT, count 1, the value in place).
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"II\x2a\x00");
        tiff.extend_from_slice(&8u32.to_le_bytes());
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&0x0112u16.to_le_bytes());
        tiff.extend_from_slice(&3u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&u32::from(orientation).to_le_bytes());
        tiff.extend_from_slice(&0u32.to_le_bytes());
        let mut app1 = vec![0xff, 0xe1];
        // The length counts itself, not the marker.
        let length = u16::try_from(2 + 6 + tiff.len()).unwrap();
        app1.extend_from_slice(&length.to_be_bytes());
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(&tiff);
        assert_eq!(jpeg[..2], [0xff, 0xd8]);
        jpeg.splice(2..2, app1);
        jpeg
    }

    /// Whether the preview's pixel at (`x`, `y`) is mostly red (else blue).
    fn red_at(preview: &Encoded, x: u32, y: u32) -> bool {
        let image = image::load_from_memory(&preview.bytes).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (preview.width, preview.height));
        let [r, _, b] = image.get_pixel(x, y).0;
        assert!(r.abs_diff(b) > 128, "({x}, {y}) is neither red nor blue");
        r > b
    }

    #[test]
    fn a_phone_photo_is_turned_upright_as_its_exif_says() {
        // Orientation 6: the stored frame is to be turned 90° clockwise to
        // be seen as taken, so its left edge ends up on top.
        let preview = make(&split_jpeg(Some(6)), Kind::Jpeg).unwrap().unwrap();
        assert_eq!((preview.width, preview.height), (160, 320));
        assert!(red_at(&preview, 80, 40), "what was on the left is on top");
        assert!(!red_at(&preview, 80, 280));
    }

    #[test]
    fn a_photo_without_exif_is_left_as_it_is() {
        let preview = make(&split_jpeg(None), Kind::Jpeg).unwrap().unwrap();
        assert_eq!((preview.width, preview.height), (320, 160));
        assert!(red_at(&preview, 40, 80));
        assert!(!red_at(&preview, 280, 80));
    }

    #[test]
    fn broken_or_foreign_data_is_an_error_not_a_panic() {
        assert!(matches!(
            make(b"\x89PNG\r\n\x1a\nbroken", Kind::Png),
            Err(PreviewError::Decode(_))
        ));
        assert!(matches!(
            make(&[0xff, 0xd8, 0xff, 0xe0, 0, 0], Kind::Jpeg),
            Err(PreviewError::Decode(_))
        ));
        assert_eq!(
            make(b"hello", Kind::Text),
            Err(PreviewError::NotAnImage(Kind::Text))
        );
        let photo = png_of(&RgbImage::new(1000, 1000).into());
        assert!(make(&photo[..photo.len() / 2], Kind::Png).is_err());
    }
}
