//! # roger-proto
//!
//! A transport-agnostic (sans-IO) implementation of the Roger protocol (see `docs/protocol.md`): every message,
//! request builders and response classifiers over the neutral `http` types, the client-side grant flows as state
//! machines, and the rules of RFC 6749, 7009, 7636, 8414 and 8628 as small pure functions.
//!
//! The crate owns no sockets and reads no clock. A driver (the optional [`driver`] module, a simulator, or a
//! vendor's firmware) feeds it `now`, responses, push messages and user actions, and performs what it polls out:
//! requests to send, timers to set, events to show.
//!
//! Module map:
//! * messages: [`discovery`], [`metadata`], [`authorize`], [`pkce`], [`device_authorization`], [`token`],
//!   [`revocation`], [`api`], [`push`], [`qr`], [`user_code`], [`shim`], [`error`];
//! * rules: [`timing`] (RFC 8628 §3.5 and PROTOCOL.md §12);
//! * state machines: [`poller`] (device grant polling), [`lifecycle`] (MFP connection), [`panel`] (the
//!   panel session with QR rotation);
//! * [`secret`]: redacting, constant-time, zeroizing newtypes for every credential (R-SEC-1).
//!
//! With the `schema` feature every wire type also implements `schemars::JsonSchema`, and the `schema` module holds
//! the shared pieces of those schemas (DESIGN.md: "a machine-readable contract generated from the Rust types").
//!
//! The `driver` module exists with the `driver` feature (an async transport trait and loops); `reqwest` adds a
//! ready transport.
//!
//! ## A poll, end to end, without any I/O
//!
//! ```
//! use std::time::{Duration, Instant};
//! use roger_proto::device_authorization;
//! use roger_proto::poller::{DevicePoller, PollerConfig, PollResult};
//!
//! // The answer of POST /oauth/device_authorization (RFC 8628 §3.2), as the transport returned it.
//! let answer = http::Response::builder().status(200).body(
//!     br#"{"device_code":"dc","user_code":"WDJBMJHT","verification_uri":"https://api.example/device",
//!         "expires_in":600,"request_id":"r1"}"#.to_vec()).unwrap();
//! let auth = device_authorization::classify(&answer).unwrap();
//! assert_eq!(auth.user_code.display().as_str(), "WDJB-MJHT"); // shown beside the QR (R-QR-1)
//!
//! let t0 = Instant::now();
//! let mut poller = DevicePoller::new(t0, &auth, "emb-acme", PollerConfig::default());
//! // No `interval` in the answer: 5 s (RFC 8628 §3.2). Nothing is due before that.
//! assert_eq!(poller.poll_timeout(), Some(t0 + Duration::from_secs(5)));
//! assert!(poller.poll_transmit(t0 + Duration::from_secs(1)).is_none());
//!
//! let t1 = t0 + Duration::from_secs(5);
//! poller.poll_transmit(t1).expect("a poll is due");
//! let request = poller.request("https://api.example/oauth/token", None).unwrap();
//! assert_eq!(request.method(), http::Method::POST);
//!
//! // The server says slow_down: +5 s for good (RFC 8628 §3.5).
//! let slow = http::Response::builder().status(400).body(br#"{"error":"slow_down"}"#.to_vec()).unwrap();
//! poller.handle_response(t1, &slow);
//! assert_eq!(poller.poll_timeout(), Some(t1 + Duration::from_secs(10)));
//!
//! let t2 = t1 + Duration::from_secs(10);
//! poller.poll_transmit(t2).unwrap();
//! let ok = http::Response::builder().status(200).body(
//!     br#"{"access_token":"at","token_type":"Bearer","expires_in":"1200","refresh_token":"rt","device_id":"d1"}"#
//!         .to_vec()).unwrap();
//! poller.handle_response(t2, &ok);
//! assert!(matches!(poller.take_result(), Some(PollResult::Granted(t)) if t.device_id.as_deref() == Some("d1")));
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod authorize;
pub mod device_authorization;
pub mod discovery;
#[cfg(feature = "driver")]
pub mod driver;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod lifecycle;
pub mod metadata;
pub mod panel;
pub mod pkce;
pub mod poller;
pub mod push;
pub mod qr;
pub mod revocation;
#[cfg(feature = "schema")]
pub mod schema;
pub mod secret;
#[cfg(feature = "server")]
pub mod server;
pub mod shim;
pub mod timing;
pub mod token;
pub mod user_code;
pub mod wire;

pub use error::{OAuthErrorCode, OAuthErrorResponse, PeerViolation, ProblemDetails, ResponseError};
