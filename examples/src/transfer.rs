//! The HTTP moves of an MFP besides roger-proto's state machines (PROTOCOL.md §9): API calls retried per the
//! timing model (PROTOCOL.md §12), the document download from a pre-authorised drive URL and the resumable scan
//! upload (R-DATA-1: documents travel between the drive and the MFP only), and the release `Idempotency-Key`.
//!
//! Everything goes through roger-proto's [`Driver::send`], so a vendor's own [`HttpTransport`] works unchanged.
//! Error messages never quote a URL, header or body (R-SEC-1: drive URLs are credentials).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use http::{Request, Response};
use roger_proto::discovery::{check_transport, TransportPolicy};
use roger_proto::driver::{Clock, Driver, HttpTransport};
use roger_proto::wire::retry_after;

/// Retries of an idempotent call after a transport error, 5xx, 408 or 429 (PROTOCOL.md §12).
pub const MAX_RETRIES: u32 = 3;
/// First wait before a retry; doubled after each failure (PROTOCOL.md §12).
pub const RETRY_BASE: Duration = Duration::from_millis(500);
/// A `Retry-After` longer than this is not waited out inside one call: the call fails instead (the conformance
/// runner wants every answer within 30 s, docs/protocol.md §8).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Chunk size of the scan upload (Graph upload sessions accept any size below 60 MiB; small chunks show the
/// resumable protocol at work).
pub const UPLOAD_CHUNK: usize = 16 * 1024;
/// Chunks answered without progress before an upload gives up.
const MAX_STALLS: u32 = 5;

/// Sends `build()`. If `idempotent`, a transport error, 5xx, 408 or 429 is retried up to [`MAX_RETRIES`] times with
/// a doubled wait, or the answer's `Retry-After` when that is longer (PROTOCOL.md §12). The request is rebuilt,
/// unchanged, for every attempt: a retried release carries the same `Idempotency-Key` (PROTOCOL.md §9).
pub async fn send_retrying<T: HttpTransport, C: Clock>(
    driver: &Driver<T, C>,
    idempotent: bool,
    build: impl Fn() -> Result<Request<Vec<u8>>, http::Error>,
) -> Result<Response<Vec<u8>>, String> {
    let mut attempt = 0;
    loop {
        let outcome = driver.send(build().map_err(|e| format!("could not build a request: {e}"))?).await;
        let retry_after = match &outcome {
            Ok(r) if matches!(r.status().as_u16(), 408 | 429 | 500..=599) => retry_after(r.headers()),
            Ok(_) => return outcome.map_err(|e| e.to_string()),
            Err(_) => None,
        };
        let backoff = RETRY_BASE * 2u32.pow(attempt);
        if !idempotent || attempt >= MAX_RETRIES || retry_after.is_some_and(|w| w > MAX_RETRY_AFTER) {
            return outcome.map_err(|e| e.to_string());
        }
        attempt += 1;
        tokio::time::sleep(retry_after.map_or(backoff, |w| w.max(backoff))).await;
    }
}

/// `GET` a released document from its pre-authorised drive URL (PROTOCOL.md §9): no `Authorization` header, the
/// URL is the credential; TLS only unless `policy` allows loopback tests (R-DISC-2).
pub async fn download<T: HttpTransport, C: Clock>(
    driver: &Driver<T, C>,
    policy: TransportPolicy,
    url: &str,
) -> Result<Vec<u8>, String> {
    check_transport(url, policy).map_err(|_| "the document URL is not a TLS URL (R-DISC-2)")?;
    let resp = send_retrying(driver, true, || Request::get(url).body(Vec::new())).await?;
    match resp.status().as_u16() {
        200 => Ok(resp.into_body()),
        st => Err(format!("the drive answered {st} to the download")),
    }
}

/// The resumable upload of a scan (docs/protocol.md §3.14, a Graph upload session): `PUT` chunks with
/// `Content-Range: bytes a-b/total`. The drive answers `202` with `nextExpectedRanges` until the last chunk
/// (`200`/`201`); a chunk re-sent after a lost answer gets `416` with the same list, so the upload goes on where
/// the drive says.
pub async fn upload<T: HttpTransport, C: Clock>(
    driver: &Driver<T, C>,
    policy: TransportPolicy,
    url: &str,
    doc: &[u8],
) -> Result<(), String> {
    check_transport(url, policy).map_err(|_| "the upload URL is not a TLS URL (R-DISC-2)")?;
    if doc.is_empty() {
        return Err("nothing to upload".into());
    }
    let (mut offset, mut stalls) = (0usize, 0);
    while stalls < MAX_STALLS {
        let end = (offset + UPLOAD_CHUNK).min(doc.len());
        let range = format!("bytes {offset}-{}/{}", end - 1, doc.len());
        let chunk =
            || Request::put(url).header(http::header::CONTENT_RANGE, range.as_str()).body(doc[offset..end].to_vec());
        let resp = send_retrying(driver, true, chunk).await?;
        match resp.status().as_u16() {
            200 | 201 => return Ok(()),
            202 | 416 => match next_expected(resp.body()) {
                Some(next) if next < doc.len() => {
                    stalls += u32::from(next <= offset);
                    offset = next;
                }
                _ => return Err("the drive's upload answer has no usable range".into()),
            },
            st => return Err(format!("the drive answered {st} to the upload")),
        }
    }
    Err("the upload made no progress".into())
}

/// The first start offset of Graph's `nextExpectedRanges` (`{"nextExpectedRanges":["32768-"]}`); `None` when the
/// list is empty or unreadable.
pub fn next_expected(body: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = v.get("nextExpectedRanges")?.as_array()?.first()?.as_str()?;
    first.split('-').next()?.trim().parse().ok()
}

/// A fresh `Idempotency-Key` for one release (PROTOCOL.md §9): 128 bits from `std`'s OS-seeded hasher keys and
/// the time. A firmware uses its own random source.
pub fn idempotency_key() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let word = |salt: u8| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u8(salt);
        h.finish()
    };
    format!("release-{:016x}{:016x}", word(1), word(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use roger_proto::driver::{TransportError, TransportErrorKind};
    use std::sync::Mutex;

    /// An in-memory drive upload session (docs/protocol.md §3.14) that loses the answer of one chunk after
    /// storing it, and a 503 before the first answer; it records every request.
    #[derive(Default)]
    struct FakeDrive {
        stored: Mutex<Vec<u8>>,
        seen: Mutex<Vec<(String, Option<String>)>>,
        lose_answer_of: Option<usize>,
        fail_first_with: Option<u16>,
    }

    fn answer(status: u16, body: String) -> Response<Vec<u8>> {
        Response::builder().status(status).body(body.into_bytes()).expect("response")
    }

    #[async_trait::async_trait]
    impl HttpTransport for FakeDrive {
        async fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError> {
            let range = request.headers().get("content-range").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let n = {
                let mut seen = self.seen.lock().expect("seen");
                seen.push((request.method().to_string(), range.clone()));
                seen.len()
            };
            if n == 1 {
                if let Some(st) = self.fail_first_with {
                    return Ok(answer(st, "<html>busy</html>".into()));
                }
            }
            let Some(range) = range else { return Ok(answer(200, "document".into())) };
            // "bytes a-b/total"
            let (a, rest) = range.trim_start_matches("bytes ").split_once('-').expect("range");
            let (b, total) = rest.split_once('/').expect("range");
            let (a, b, total): (usize, usize, usize) =
                (a.parse().expect("a"), b.parse().expect("b"), total.parse().expect("total"));
            let mut stored = self.stored.lock().expect("stored");
            if a != stored.len() {
                return Ok(answer(416, format!(r#"{{"nextExpectedRanges":["{}-"]}}"#, stored.len())));
            }
            stored.extend_from_slice(request.body());
            assert_eq!(b + 1, stored.len());
            if Some(n) == self.lose_answer_of {
                return Err(TransportError::new(TransportErrorKind::Reset, "answer lost"));
            }
            if stored.len() == total {
                return Ok(answer(201, r#"{"id":"file_1"}"#.into()));
            }
            Ok(answer(202, format!(r#"{{"nextExpectedRanges":["{}-"]}}"#, stored.len())))
        }
    }

    fn doc() -> Vec<u8> {
        (0..UPLOAD_CHUNK * 3 + 100).map(|i| (i % 251) as u8).collect()
    }

    /// docs/protocol.md §3.14: after a lost chunk answer the re-sent chunk is refused with `416` and the upload
    /// goes on from `nextExpectedRanges`; the drive holds exactly the document.
    #[tokio::test(start_paused = true)]
    async fn upload_resumes_after_a_lost_answer() {
        let driver = Driver::new(FakeDrive { lose_answer_of: Some(2), ..FakeDrive::default() });
        let doc = doc();
        upload(&driver, TransportPolicy::AllowLoopbackPlain, "http://127.0.0.1:1/up", &doc).await.expect("upload");
        assert_eq!(*driver.transport().stored.lock().expect("stored"), doc);
        let ranges: Vec<_> = driver.transport().seen.lock().expect("seen").iter().map(|s| s.1.clone()).collect();
        assert_eq!(ranges[1], ranges[2], "the chunk whose answer was lost is re-sent unchanged");
        assert_eq!(ranges.len(), 5, "4 chunks, one of them re-sent: {ranges:?}");
    }

    /// R-DISC-2: a plain-HTTP drive URL is refused without the loopback test mode, before anything is sent.
    #[tokio::test]
    async fn plain_http_urls_are_refused() {
        let driver = Driver::new(FakeDrive::default());
        let e = upload(&driver, TransportPolicy::TlsOnly, "http://127.0.0.1:1/up", &doc()).await.unwrap_err();
        assert!(e.contains("R-DISC-2"), "{e}");
        let e = download(&driver, TransportPolicy::TlsOnly, "http://drive.example/doc").await.unwrap_err();
        assert!(e.contains("R-DISC-2") && !e.contains("drive.example"), "{e}");
        assert!(driver.transport().seen.lock().expect("seen").is_empty());
    }

    /// PROTOCOL.md §12: a 503 is retried for an idempotent call, and not for one that is not.
    #[tokio::test(start_paused = true)]
    async fn only_idempotent_calls_are_retried() {
        let driver = Driver::new(FakeDrive { fail_first_with: Some(503), ..FakeDrive::default() });
        let got = download(&driver, TransportPolicy::AllowLoopbackPlain, "http://127.0.0.1:1/doc").await;
        assert_eq!(got.as_deref(), Ok(&b"document"[..]));
        assert_eq!(driver.transport().seen.lock().expect("seen").len(), 2);

        let driver = Driver::new(FakeDrive { fail_first_with: Some(503), ..FakeDrive::default() });
        let once = send_retrying(&driver, false, || Request::post("http://127.0.0.1:1/x").body(Vec::new())).await;
        assert_eq!(once.map(|r| r.status().as_u16()), Ok(503));
        assert_eq!(driver.transport().seen.lock().expect("seen").len(), 1);
    }

    #[test]
    fn next_expected_ranges() {
        assert_eq!(next_expected(br#"{"nextExpectedRanges":["327680-"]}"#), Some(327_680));
        assert_eq!(next_expected(br#"{"nextExpectedRanges":["10-20","30-"]}"#), Some(10));
        assert_eq!(next_expected(br#"{"nextExpectedRanges":[]}"#), None);
        assert_eq!(next_expected(br#"{"nextExpectedRanges":["x-"]}"#), None);
        assert_eq!(next_expected(b"<html>"), None);
    }

    /// Keys are fresh and valid header values (PROTOCOL.md §9).
    #[test]
    fn idempotency_keys_are_fresh() {
        let (a, b) = (idempotency_key(), idempotency_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), "release-".len() + 32);
        assert!(http::HeaderValue::from_str(&a).is_ok());
    }
}
