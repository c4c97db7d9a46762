//! "Scanning" a panel: decoding the QR codes in a PNG screenshot (the MFP draws `verification_uri_complete` as a
//! QR, R-QR-1, RFC 8628 §3.3.1). The payload is then checked like any scanned QR (R-QR-4, [`roger_proto::qr`]).
//!
//! Decoding uses `image` (PNG only) for the pixels and `rqrr` for the QR symbols. Input is untrusted: a broken or
//! oversized picture is a typed error, never a panic.

use std::io::Cursor;

/// Largest screenshot side accepted, in pixels (a panel is far smaller; this bounds the work and the memory).
pub const MAX_SIDE: u32 = 8192;

/// Why a screenshot yields no payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// Not a PNG the decoder can read.
    #[error("the screenshot is not a readable PNG: {0}")]
    NotPng(String),
    /// Wider or taller than [`MAX_SIDE`].
    #[error("the screenshot is {width}x{height} pixels, larger than {MAX_SIDE} on a side")]
    TooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// No QR code could be found and decoded.
    #[error("no readable QR code in the screenshot")]
    NoQrCode,
}

/// Decodes every QR code in a PNG screenshot and returns their text payloads, in the order found.
pub fn decode_png(png: &[u8]) -> Result<Vec<String>, ScanError> {
    let reader = image::ImageReader::with_format(Cursor::new(png), image::ImageFormat::Png);
    let (width, height) = reader.into_dimensions().map_err(|e| ScanError::NotPng(e.to_string()))?;
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(ScanError::TooLarge { width, height });
    }
    let picture = image::ImageReader::with_format(Cursor::new(png), image::ImageFormat::Png)
        .decode()
        .map_err(|e| ScanError::NotPng(e.to_string()))?
        .to_luma8();
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        // x < w and y < h come from the dimensions above, which fit in u32.
        picture.get_pixel(x as u32, y as u32).0[0]
    });
    let payloads: Vec<String> =
        prepared.detect_grids().iter().filter_map(|grid| grid.decode().ok()).map(|(_, text)| text).collect();
    if payloads.is_empty() {
        return Err(ScanError::NoQrCode);
    }
    Ok(payloads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qr_png(payload: &str) -> Vec<u8> {
        crate::desktop::qr_png(payload).expect("png")
    }

    /// RFC 8628 §3.3.1: the QR carries `verification_uri_complete`; the phone reads it back exactly.
    #[test]
    fn decodes_a_rendered_panel_qr() {
        let payload = "http://127.0.0.1:8080/device?user_code=WDJBMJHT";
        assert_eq!(decode_png(&qr_png(payload)).expect("decoded"), vec![payload.to_owned()]);
    }

    #[test]
    fn bad_pictures_are_typed_errors() {
        assert!(matches!(decode_png(b"not a png"), Err(ScanError::NotPng(_))));
        let blank = image::GrayImage::from_pixel(64, 64, image::Luma([255]));
        let mut png = Vec::new();
        blank.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).expect("png");
        assert_eq!(decode_png(&png), Err(ScanError::NoQrCode));
        let mut truncated = qr_png("https://a.example/device?user_code=WDJBMJHT");
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(decode_png(&truncated), Err(ScanError::NotPng(_))));
    }
}
