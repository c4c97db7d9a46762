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
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod authorize;
pub mod device_authorization;
pub mod discovery;
pub mod error;
pub mod lifecycle;
pub mod metadata;
pub mod pkce;
pub mod poller;
pub mod push;
pub mod qr;
pub mod revocation;
pub mod secret;
pub mod shim;
pub mod timing;
pub mod token;
pub mod user_code;
pub mod wire;

pub use error::{OAuthErrorCode, OAuthErrorResponse, PeerViolation, ProblemDetails, ResponseError};
