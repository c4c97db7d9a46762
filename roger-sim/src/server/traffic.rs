//! What the API listener received in request bodies (R-DATA-1: documents never pass through the server). Every
//! request body is counted as the handler reads it, and an in-process harness (the demo, a test) may install an
//! inspector that sees each whole body, to prove that no document byte ever arrived. `GET /sim/traffic` reports the
//! counters.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde::Serialize;

use super::app::Shared;

/// Called with each request body the API listener received, once the handler is done with it.
pub type BodyInspector = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The counters (and the optional inspector) of one server.
#[derive(Default)]
pub struct Traffic {
    bodies: AtomicU64,
    bytes: AtomicU64,
    inspector: OnceLock<BodyInspector>,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic").field("totals", &self.totals()).finish()
    }
}

/// `GET /sim/traffic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TrafficTotals {
    /// Requests whose body was read (bodiless requests included).
    pub request_bodies: u64,
    /// Bytes of request bodies the API listener received.
    pub request_body_bytes: u64,
}

impl Traffic {
    /// The counters so far.
    pub fn totals(&self) -> TrafficTotals {
        TrafficTotals {
            request_bodies: self.bodies.load(Ordering::Relaxed),
            request_body_bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// Installs the inspector (once per server; `false` if one was installed before).
    pub fn inspect(&self, inspector: BodyInspector) -> bool {
        self.inspector.set(inspector).is_ok()
    }
}

/// The request body the API service hands to the router: `inner`, counted (and inspected) as the handler reads it,
/// and cut off with an error once it exceeds [`MAX_BODY`](super::respond::MAX_BODY) (handlers answer such a body
/// in their route's shape, PROTOCOL.md §10).
pub(crate) fn counted<B>(shared: Arc<Shared>, inner: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    Body::new(Counted { inner, shared, read: 0, seen: Vec::new() })
}

/// The error frame of a body over the limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {} bytes", super::respond::MAX_BODY)]
struct TooLarge;

/// A request body that counts its data frames and, when dropped, hands what was read to the inspector.
struct Counted<B> {
    inner: B,
    shared: Arc<Shared>,
    read: usize,
    seen: Vec<u8>,
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.read > super::respond::MAX_BODY {
            return Poll::Ready(Some(Err(axum::Error::new(TooLarge))));
        }
        let polled = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(axum::Error::new(e)))),
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = polled.data_ref() {
            this.read = this.read.saturating_add(data.len());
            let traffic = &this.shared.traffic;
            traffic.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            if traffic.inspector.get().is_some() {
                this.seen.extend_from_slice(data);
            }
            if this.read > super::respond::MAX_BODY {
                return Poll::Ready(Some(Err(axum::Error::new(TooLarge))));
            }
        }
        Poll::Ready(Some(Ok(polled)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        let traffic = &self.shared.traffic;
        traffic.bodies.fetch_add(1, Ordering::Relaxed);
        if let Some(inspect) = traffic.inspector.get() {
            inspect(&self.seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use crate::server::{start, ServerConfig};

    /// Every body byte a handler reads is counted once, and the inspector sees the whole body.
    #[tokio::test]
    async fn counts_and_inspects_request_bodies() {
        let server = start(ServerConfig { plain_http: true, ..ServerConfig::default() }).await.expect("server");
        let seen = std::sync::Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let sink = seen.clone();
        assert!(server.shared.traffic.inspect(std::sync::Arc::new(move |b: &[u8]| {
            sink.lock().unwrap().push(b.to_vec());
        })));
        let before = server.shared.traffic.totals();
        let body = "grant_type=refresh_token&refresh_token=rrt_unknown&client_id=emb-acme";
        let resp = reqwest::Client::new()
            .post(format!("{}/oauth/token", server.info.api))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 400);
        let after = server.shared.traffic.totals();
        assert_eq!(after.request_body_bytes - before.request_body_bytes, body.len() as u64);
        assert_eq!(after.request_bodies - before.request_bodies, 1);
        assert!(seen.lock().unwrap().iter().any(|b| b == body.as_bytes()), "the inspector saw the body");
        server.stop().await;
    }
}
