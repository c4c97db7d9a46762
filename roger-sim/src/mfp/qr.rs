//! Drawing the panel's QR code (PROTOCOL.md §5.2 and §8, R-QR-1): in the terminal with Unicode half blocks, and as
//! a PNG "screenshot" that a phone (or the conformance runner) can decode.
//!
//! The payload is `verification_uri_complete` (RFC 8628 §3.3.1). R-QR-1 wants the user code shown beside the QR,
//! so `render_terminal` prints it under the code and `write_screenshot` writes it to a text file next to the PNG.
//!
//! Both renderings keep the quiet zone ISO/IEC 18004 asks for (4 modules in the PNG; 2 in the terminal, where
//! the terminal's own margin adds to it).

use std::path::{Path, PathBuf};

use image::{GrayImage, ImageEncoder, Luma};
use qrcode::{Color, EcLevel, QrCode};

use super::state::{self, StateError};

/// The panel screenshot's file name inside the state directory (PROTOCOL.md §13 `screenshot`).
pub const SCREENSHOT_FILE: &str = "panel.png";
/// The text file beside the screenshot: the user code (R-QR-1) and the QR payload.
pub const CODE_FILE: &str = "panel-code.txt";

/// Pixels per QR module in the PNG.
const PNG_SCALE: u32 = 8;
/// Quiet zone of the PNG, in modules (ISO/IEC 18004 §6.3.8: four modules).
const PNG_QUIET: u32 = 4;
/// Quiet zone of the terminal rendering, in modules.
const TERM_QUIET: usize = 2;

/// Why a QR code could not be drawn (R-QR-1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QrError {
    /// The payload does not fit a QR code (longer than version 40 holds).
    #[error("the payload does not fit a QR code: {0}")]
    Encode(#[from] qrcode::types::QrError),
    /// The PNG could not be encoded.
    #[error("PNG encoding failed: {0}")]
    Png(#[from] image::ImageError),
    /// The screenshot could not be stored.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The module matrix of `payload` (error correction M, the usual choice for a screen: ISO/IEC 18004 §6.5.1).
fn modules(payload: &str) -> Result<(usize, Vec<bool>), QrError> {
    let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)?;
    let width = code.width();
    let dark = code.to_colors().into_iter().map(|c| c == Color::Dark).collect();
    Ok((width, dark))
}

/// The QR code as text for a terminal: two modules per character cell with the half blocks `▀ ▄ █`, light
/// modules drawn (so it reads on the common dark terminal background; QR readers accept the inversion), then the
/// user code on its own line (R-QR-1).
pub fn render_terminal(payload: &str, user_code: &str) -> Result<String, QrError> {
    let (width, dark) = modules(payload)?;
    let side = width + 2 * TERM_QUIET;
    // A module is "lit" (drawn) when it is light, including the quiet zone.
    let lit = |x: usize, y: usize| -> bool {
        if x < TERM_QUIET || y < TERM_QUIET || x >= width + TERM_QUIET || y >= width + TERM_QUIET {
            return true;
        }
        !dark[(y - TERM_QUIET) * width + (x - TERM_QUIET)]
    };
    let mut out = String::with_capacity(side * side / 2 * 3 + 64);
    let mut y = 0;
    while y < side {
        for x in 0..side {
            let top = lit(x, y);
            let bottom = y + 1 < side && lit(x, y + 1);
            out.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
        y += 2;
    }
    out.push_str(&format!("code: {user_code}\n"));
    Ok(out)
}

/// The QR code as a PNG (PROTOCOL.md §13 `screenshot`; ISO/IEC 18004 quiet zone): dark modules black on white, 8 pixels per module, a 4-module quiet zone.
pub fn render_png(payload: &str) -> Result<Vec<u8>, QrError> {
    let (width, dark) = modules(payload)?;
    let modules_side = width as u32 + 2 * PNG_QUIET;
    let side = modules_side * PNG_SCALE;
    let img = GrayImage::from_fn(side, side, |px, py| {
        let (mx, my) = (px / PNG_SCALE, py / PNG_SCALE);
        let inside =
            mx >= PNG_QUIET && my >= PNG_QUIET && mx < width as u32 + PNG_QUIET && my < width as u32 + PNG_QUIET;
        let is_dark = inside && dark[(my - PNG_QUIET) as usize * width + (mx - PNG_QUIET) as usize];
        Luma([if is_dark { 0 } else { 255 }])
    });
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(
        img.as_raw(),
        side,
        side,
        image::ExtendedColorType::L8,
    )?;
    Ok(png)
}

/// Writes the panel screenshot (R-QR-1: `panel.png`) and, beside it, the user code and payload (`panel-code.txt`), both
/// atomically so a reader never sees half a file. Returns the PNG's path.
pub fn write_screenshot(dir: &Path, payload: &str, user_code: &str) -> Result<PathBuf, QrError> {
    let png = render_png(payload)?;
    state::write_atomically(dir, CODE_FILE, format!("{user_code}\n{payload}\n").as_bytes())?;
    Ok(state::write_atomically(dir, SCREENSHOT_FILE, &png)?)
}

/// Removes the screenshot and its code file once no code is shown (R-QR-3: an expired code is not shown) (a stale code must not be scanned).
pub fn clear_screenshot(dir: &Path) -> Result<(), StateError> {
    state::remove_if_exists(dir, SCREENSHOT_FILE)?;
    state::remove_if_exists(dir, CODE_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = "http://127.0.0.1:8443/device?user_code=WDJBMJHT";

    /// The PNG decodes to the QR's module matrix: every module's centre pixel has the module's colour, and the
    /// quiet zone is white.
    #[test]
    fn png_matches_the_modules() {
        let (width, dark) = modules(PAYLOAD).expect("encode");
        let png = render_png(PAYLOAD).expect("png");
        let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png).expect("decode").to_luma8();
        let side = (width as u32 + 2 * PNG_QUIET) * PNG_SCALE;
        assert_eq!(img.dimensions(), (side, side));
        for my in 0..width {
            for mx in 0..width {
                let px = (mx as u32 + PNG_QUIET) * PNG_SCALE + PNG_SCALE / 2;
                let py = (my as u32 + PNG_QUIET) * PNG_SCALE + PNG_SCALE / 2;
                let expected = if dark[my * width + mx] { 0 } else { 255 };
                assert_eq!(img.get_pixel(px, py).0[0], expected, "module ({mx},{my})");
            }
        }
        for i in 0..side {
            assert_eq!(img.get_pixel(i, 0).0[0], 255, "quiet zone");
            assert_eq!(img.get_pixel(0, i).0[0], 255, "quiet zone");
        }
    }

    /// A QR reader (rqrr, the decoder the simulated phone uses) reads the screenshot back to the payload: what
    /// the panel shows can really be scanned (PROTOCOL.md §5.2, §8).
    #[test]
    fn png_decodes_to_the_payload() {
        let png = render_png(PAYLOAD).expect("png");
        let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png).expect("decode").to_luma8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut prepared =
            rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| img.get_pixel(x as u32, y as u32).0[0]);
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().expect("a readable QR code");
        assert_eq!(content, PAYLOAD);
    }

    /// The terminal rendering has half as many rows as modules (plus the code line), all rows the same width,
    /// and ends with the user code (R-QR-1).
    #[test]
    fn terminal_rendering_shape() {
        let (width, dark) = modules(PAYLOAD).expect("encode");
        let text = render_terminal(PAYLOAD, "WDJB-MJHT").expect("render");
        let lines: Vec<&str> = text.lines().collect();
        let side = width + 2 * TERM_QUIET;
        assert_eq!(lines.len(), side.div_ceil(2) + 1);
        assert!(lines[..lines.len() - 1].iter().all(|l| l.chars().count() == side));
        assert_eq!(lines.last().copied(), Some("code: WDJB-MJHT"));
        // The first row is the quiet zone: all lit.
        assert!(lines[0].chars().all(|c| c == '█'));
        // The top-left finder pattern's first row is dark: row 2 (y=2,3) at x=2 is dark on top.
        assert!(dark[0]);
        let row = lines[1].chars().collect::<Vec<_>>();
        assert!(matches!(row[TERM_QUIET], ' ' | '▄'), "dark module on top of the cell");
    }

    /// A payload too long for any QR version is a typed error, not a panic.
    #[test]
    fn oversized_payload_is_an_error() {
        let huge = "x".repeat(8000);
        assert!(matches!(render_png(&huge), Err(QrError::Encode(_))));
        assert!(matches!(render_terminal(&huge, "X"), Err(QrError::Encode(_))));
    }

    /// The screenshot and the code file are written together and removed together.
    #[test]
    fn screenshot_files() {
        let tmp = crate::test_support::TempDir::new("mfp-qr");
        let dir = tmp.path().to_path_buf();
        let path = write_screenshot(&dir, PAYLOAD, "WDJB-MJHT").expect("write");
        assert_eq!(path, dir.join(SCREENSHOT_FILE));
        assert!(std::fs::read(&path).expect("png").starts_with(b"\x89PNG"));
        let text = std::fs::read_to_string(dir.join(CODE_FILE)).expect("code");
        assert_eq!(text, format!("WDJB-MJHT\n{PAYLOAD}\n"));
        clear_screenshot(&dir).expect("clear");
        assert!(!path.exists() && !dir.join(CODE_FILE).exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
