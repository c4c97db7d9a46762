//! The API listener's service: the router behind one hand-written layer that does, for every request, what four
//! axum middlewares (body counting, body limit, fault injection, R-SEC-1 headers) used to do separately:
//!
//! 1. counts (and inspects) the request body as the handler reads it, and cuts it off past
//!    [`MAX_BODY`](super::respond::MAX_BODY) (R-DATA-1 evidence, `GET /sim/traffic`; PROTOCOL.md §10);
//! 2. applies the fault plan of `POST /sim/faults` when it names the request's route ([`faults::inject`]);
//! 3. marks every answer `Cache-Control: no-store` (R-SEC-1: any answer of the API listener may carry a credential).
//!
//! One layer instead of four because `Router::layer` wraps every route of the router, and each of those wrappers
//! clones and boxes its inner service and future on every request: the token endpoint's hot path allocated ~20
//! times more than its own work needed (`benches/tests/server_allocs.rs` counts it). A request the fault plan does
//! not name costs one body wrapper here and nothing else.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Request};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::Router;

use super::app::Shared;
use super::faults;
use super::mutant::ServerMutant;
use super::traffic::counted;

/// The API router with its service layer (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct ApiService {
    router: Router,
    shared: Arc<Shared>,
    /// Whether answers get the R-SEC-1 headers: always, but for the test-only `no-no-store` mutant.
    no_store: bool,
}

impl ApiService {
    /// `router` (the API routes, without layers) served for `shared`.
    pub fn new(router: Router, shared: Arc<Shared>) -> Self {
        let no_store = shared.mutant.mutant() != Some(ServerMutant::NoNoStore);
        Self { router, shared, no_store }
    }
}

impl<B> tower::Service<Request<B>> for ApiService
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ApiFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ApiFuture {
        let req = req.map(|b| counted(self.shared.clone(), b));
        let inner = if self.shared.faults.targets(req.uri().path()) {
            Inner::Faulted(Box::pin(faults::inject(self.shared.clone(), req, self.router.clone())))
        } else {
            Inner::Direct(tower::Service::call(&mut self.router, req))
        };
        ApiFuture { inner, no_store: self.no_store }
    }
}

// The router's future is large, but it is the common case: boxing it would cost an allocation per request, which is
// what this layer exists to avoid (a future lives once per request, so its size costs nothing that matters).
#[allow(clippy::large_enum_variant)]
enum Inner {
    /// The common case: straight to the router.
    Direct(RouteFuture<Infallible>),
    /// The fault plan names this route.
    Faulted(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// The answer of [`ApiService`], with the R-SEC-1 headers added.
pub struct ApiFuture {
    inner: Inner,
    no_store: bool,
}

impl Future for ApiFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = match &mut self.inner {
            Inner::Direct(f) => match Pin::new(f).poll(cx) {
                Poll::Ready(Ok(r)) => r,
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
            Inner::Faulted(f) => match f.as_mut().poll(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => return Poll::Pending,
            },
        };
        if self.no_store && response.extensions().get::<faults::WithoutCacheHeaders>().is_none() {
            no_store(&mut response);
        }
        Poll::Ready(Ok(response))
    }
}

/// R-SEC-1: every answer of the API listener may carry a credential, so none is cached.
fn no_store(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
}
