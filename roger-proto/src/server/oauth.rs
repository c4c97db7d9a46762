//! The OAuth side of the server core: the device authorization endpoint (RFC 8628 §3.1–3.2), the token endpoint
//! for the authorization-code + PKCE, device-code, password and refresh grants, device-bound client
//! authentication (PROTOCOL.md §7), revocation (RFC 7009), bearer authentication of API calls (RFC 6750), the app
//! login (PROTOCOL.md §4), and code approvals (PROTOCOL.md §5.3, RFC 8628 §5.1).

use time::{Duration, OffsetDateTime};

use super::mint::{family_handle_of, SecretHash, SecretKind};
use super::model::*;
use super::mutations::Mutation;
use super::settings::{TenantSettings, DEVICE_CODE_GRACE_SECS, PREVIOUS_REFRESH_GRACE_SECS};
use super::{ApiFailure, OAuthFailure, Principal, ServerCore};
use crate::api::{CodeKind as WireCodeKind, CodeLookup};
use crate::authorize::{LoginForm, MOBILE_REDIRECT_URI};
use crate::device_authorization::{DeviceAuthorizationRequest, DeviceAuthorizationResponse};
use crate::error::OAuthErrorCode as E;
use crate::push::{Id, PushEvent, PushTarget};
use crate::revocation::RevocationRequest;
use crate::secret::{AccessToken, DeviceCode, RefreshToken, UserCode, VerificationUriComplete};
use crate::token::{client_id, scope, TokenRequest, TokenResponse, TokenUser};

/// Longest `device_model` / `device_serial` of a device authorization request (docs/protocol.md §3.7).
pub const MAX_DEVICE_FACT_LEN: usize = 64;

/// The public clients of PROTOCOL.md §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// `emb-<vendor>`.
    Mfp,
    /// `roger-mobile`.
    Mobile,
    /// `roger-desktop`.
    Desktop,
}

/// Classifies a `client_id`; `None` for clients the server does not know.
pub fn client_kind(id: &str) -> Option<ClientKind> {
    match id {
        client_id::MOBILE => Some(ClientKind::Mobile),
        client_id::DESKTOP => Some(ClientKind::Desktop),
        _ if client_id::is_emb(id) => Some(ClientKind::Mfp),
        _ => None,
    }
}

/// The token of an `Authorization: Bearer <token>` header value (RFC 6750 §2.1; the scheme is case-insensitive).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' ')).then_some(token)
}

/// Why an app login (`POST /oauth/authorize`) did not produce a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginFailure {
    /// The request itself is wrong (client, redirect URI, PKCE method): show an error page, never redirect
    /// (RFC 6749 §4.1.2.1: not to an unverified redirect URI).
    #[error("invalid authorization request: {0}")]
    InvalidRequest(&'static str),
    /// Tenant, user name or password wrong, or the user locked out: the form again, with one generic message
    /// (R-PWD-2: identical for every cause).
    #[error("the tenant, user name or password is wrong")]
    BadCredentials,
}

/// The printer a token speaks for or was issued at (device tokens, user tokens at an MFP).
fn subject_device(subject: &Subject) -> Option<&str> {
    match subject {
        Subject::Device { device_id } => Some(device_id),
        Subject::User { device_id, .. } => device_id.as_deref(),
    }
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn secs(n: u64) -> Duration {
    Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 2).min(100 * 365 * 24 * 3600))
}

impl ServerCore {
    // -------------------------------------------------------------------------------------------------------------
    // Device-bound client authentication (PROTOCOL.md §7) and bearer authentication (RFC 6750)
    // -------------------------------------------------------------------------------------------------------------

    fn live_access(&self, now: OffsetDateTime, token: &str) -> Option<&AccessRecord> {
        self.state.access.get(&SecretHash::of(token)).map(|a| &**a).filter(|a| a.expires > now)
    }

    /// PROTOCOL.md §7: `Authorization: Bearer <roger.device token>` and `client_id` equal to the client the device
    /// registered with. Missing, expired, revoked, wrong-scope or mismatched → 401 `invalid_client` with
    /// `WWW-Authenticate: Bearer realm="roger", error="invalid_token"`.
    pub fn device_client(
        &self,
        now: OffsetDateTime,
        authorization: Option<&str>,
        client: &str,
    ) -> Result<Device, OAuthFailure> {
        let token = authorization
            .and_then(bearer_token)
            .ok_or_else(|| OAuthFailure::device_auth("device-bound client authentication is required"))?;
        let a = self
            .live_access(now, token)
            .ok_or_else(|| OAuthFailure::device_auth("the device token is invalid or expired"))?;
        let Subject::Device { device_id } = &a.subject else {
            return Err(OAuthFailure::device_auth("not a device token"));
        };
        if !scope::contains(&a.scope, scope::DEVICE) {
            return Err(OAuthFailure::device_auth("the token lacks roger.device"));
        }
        if a.client_id != client {
            return Err(OAuthFailure::device_auth("client_id does not match the device's client"));
        }
        self.state
            .devices
            .get(device_id)
            .map(|d| (**d).clone())
            .ok_or_else(|| OAuthFailure::device_auth("the device was removed"))
    }

    /// RFC 6750: authenticates an API call from its `Authorization` header value.
    pub fn authenticate(&self, now: OffsetDateTime, authorization: Option<&str>) -> Result<Principal, ApiFailure> {
        let Some(header) = authorization else { return Err(ApiFailure::no_credentials()) };
        let token = bearer_token(header).ok_or_else(ApiFailure::invalid_token)?;
        let a = self.live_access(now, token).ok_or_else(ApiFailure::invalid_token)?;
        if let Subject::Device { device_id } = &a.subject {
            if !self.state.devices.contains_key(device_id) {
                return Err(ApiFailure::invalid_token());
            }
        }
        Ok(Principal {
            token: a.hash,
            client_id: a.client_id.to_string(),
            tenant: a.tenant.to_string(),
            subject: a.subject.clone(),
            scope: a.scope.to_string(),
            family: a.family.clone().map(Into::into),
        })
    }

    // -------------------------------------------------------------------------------------------------------------
    // Minting
    // -------------------------------------------------------------------------------------------------------------

    fn mint_access(
        &mut self,
        now: OffsetDateTime,
        client: &str,
        tenant: &str,
        subject: Subject,
        scope: &str,
        family: Option<Name>,
    ) -> (AccessToken, u64) {
        let lifetime = self.settings(tenant).access_token_secs;
        let (plain, hash) = self.minter.secret(SecretKind::AccessToken);
        self.put_access(
            now,
            AccessRecord {
                hash,
                client_id: client.into(),
                tenant: tenant.into(),
                subject,
                scope: scope.into(),
                expires: now + secs(lifetime),
                family,
            },
        );
        (AccessToken::new(plain), lifetime)
    }

    fn new_family(
        &mut self,
        now: OffsetDateTime,
        client: &str,
        tenant: &str,
        subject: Subject,
        scope: &str,
    ) -> (RefreshToken, String) {
        let handle = self.minter.family_handle();
        let (plain, hash) = self.minter.refresh_token(&handle);
        let id = self.minter.id("fam");
        let lifetime = self.settings(tenant).refresh_token_secs;
        self.put_family(RefreshFamily {
            id: Name::from(id.as_str()),
            client_id: client.into(),
            tenant: tenant.into(),
            subject,
            scope: scope.into(),
            handle: SecretHash::of(&handle),
            current: hash,
            previous: None,
            previous_until: None,
            expires: now + secs(lifetime),
            revoked: false,
        });
        (RefreshToken::new(plain), id)
    }

    /// A token response (RFC 6749 §5.1) with the Roger members derived from the subject: a device token names its
    /// device; a user token names its user, and the printer when it was issued at one.
    fn token_response(
        &self,
        access_token: AccessToken,
        lifetime: u64,
        refresh_token: Option<RefreshToken>,
        scope: &str,
        tenant: &str,
        subject: &Subject,
    ) -> TokenResponse {
        let (device_id, user) = match subject {
            Subject::Device { device_id } => (Some(device_id.clone()), None),
            Subject::User { user_id, device_id } => (device_id.clone(), self.token_user(user_id)),
        };
        TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: Some(lifetime),
            refresh_token,
            scope: Some(scope.into()),
            device_id: device_id.map(Into::into),
            tenant_id: Some(tenant.into()),
            user,
        }
    }

    /// Mints an access token, and with `with_refresh` a new refresh family, and answers them. Returns the
    /// response, the access token's hash and the family id (both remembered for R-DEV-1 and code reuse).
    fn issue(
        &mut self,
        now: OffsetDateTime,
        client: &str,
        tenant: &str,
        subject: Subject,
        scope: &str,
        with_refresh: bool,
    ) -> (TokenResponse, SecretHash, Option<String>) {
        let (refresh_token, family) = if with_refresh {
            let (rt, fam) = self.new_family(now, client, tenant, subject.clone(), scope);
            (Some(rt), Some(fam))
        } else {
            (None, None)
        };
        let (at, lifetime) =
            self.mint_access(now, client, tenant, subject.clone(), scope, family.as_deref().map(Name::from));
        let hash = SecretHash::of(at.secret());
        (self.token_response(at, lifetime, refresh_token, scope, tenant, &subject), hash, family)
    }

    /// One failed login for the lock-out counter shared by PIN, password and app login (R-PWD-2).
    fn record_login_failure(&mut self, mut user: User, settings: TenantSettings, now: OffsetDateTime) {
        user.failures += 1;
        // Test-only mutant `NoLockout` (module `mutations`): the counter grows, the lock never comes.
        if user.failures >= settings.lockout_failures && !self.mutations.has(Mutation::NoLockout) {
            user.failures = 0;
            user.locked_until = Some(now + secs(settings.lockout_secs));
        }
        self.put_user(user);
    }

    /// A successful login resets the counter.
    fn clear_login_failures(&mut self, mut user: User) {
        if user.failures != 0 || user.locked_until.is_some() {
            user.failures = 0;
            user.locked_until = None;
            self.put_user(user);
        }
    }

    fn token_user(&self, user_id: &str) -> Option<TokenUser> {
        self.state.users.get(user_id).map(|u| TokenUser {
            id: u.id.clone(),
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
        })
    }

    // -------------------------------------------------------------------------------------------------------------
    // Device authorization endpoint (RFC 8628 §3.1–3.2)
    // -------------------------------------------------------------------------------------------------------------

    /// `POST /oauth/device_authorization`: registration (`emb-*`, `roger.device`, no authentication), session
    /// code (`emb-*`, `roger.release`, device-bound, PROTOCOL.md §8), desktop login (`roger-desktop`, `roger.app`).
    pub fn device_authorization(
        &mut self,
        now: OffsetDateTime,
        req: &DeviceAuthorizationRequest,
        authorization: Option<&str>,
    ) -> Result<DeviceAuthorizationResponse, OAuthFailure> {
        let kind =
            client_kind(&req.client_id).ok_or_else(|| OAuthFailure::bad(E::InvalidClient, "unknown client_id"))?;
        let (code_kind, device, lifetime, interval) = match (kind, req.scope.as_str()) {
            (ClientKind::Mfp, scope::DEVICE) => {
                // docs/protocol.md §3.7: a registration names the printer (shown to the approving admin, R-QR-2).
                if req.device_model.is_none() || req.device_serial.is_none() {
                    return Err(OAuthFailure::bad(
                        E::InvalidRequest,
                        "a registration carries device_model and device_serial",
                    ));
                }
                (CodeKind::Registration, None, self.defaults.registration_code_secs, self.defaults.interval_secs)
            }
            (ClientKind::Mfp, scope::RELEASE) => {
                let d = self.device_client(now, authorization, &req.client_id)?;
                let s = self.settings(&d.tenant);
                (CodeKind::Session, Some(d), s.session_code_secs, s.interval_secs)
            }
            (ClientKind::Desktop, scope::APP) => {
                (CodeKind::Desktop, None, self.defaults.desktop_code_secs, self.defaults.interval_secs)
            }
            _ => return Err(OAuthFailure::bad(E::InvalidScope, "this client may not request this scope here")),
        };
        let too_long = |v: &Option<String>| v.as_ref().is_some_and(|v| v.chars().count() > MAX_DEVICE_FACT_LEN);
        if too_long(&req.device_model) || too_long(&req.device_serial) {
            return Err(OAuthFailure::bad(
                E::InvalidRequest,
                "device_model and device_serial are at most 64 characters",
            ));
        }
        let (device_code, hash) = self.minter.secret(SecretKind::DeviceCode);
        let mut user_code = self.minter.user_code();
        while self.user_codes.contains_key(&user_code) {
            user_code = self.minter.user_code();
        }
        if self.mutations.has(Mutation::WeakUserCodes) {
            // Test-only mutant (module `mutations`): a code from a space of 256.
            if let Some(weak) = super::mutations::weak_user_code(&mut self.minter, &self.user_codes) {
                user_code = weak;
            }
        }
        let request_id = self.minter.id("req");
        let interval = interval.max(1);
        self.put_code(DeviceCodeRecord {
            hash,
            user_code,
            kind: code_kind,
            client_id: Name::from(req.client_id.as_str()),
            scope: Name::from(req.scope.as_str()),
            device_id: device.as_ref().map(|d| d.id.clone()),
            tenant: device.as_ref().map(|d| d.tenant.clone()),
            model: req
                .device_model
                .as_deref()
                .map(Name::from)
                .or_else(|| device.as_ref().and_then(|d| d.model.clone())),
            serial: req
                .device_serial
                .as_deref()
                .map(Name::from)
                .or_else(|| device.as_ref().and_then(|d| d.serial.clone())),
            request_id: Name::from(request_id.as_str()),
            created: now,
            expires: now + secs(lifetime),
            interval,
            last_poll: None,
            state: CodeState::Pending,
        });
        let user_code = UserCode::new(user_code.as_str().to_owned());
        Ok(DeviceAuthorizationResponse {
            device_code: DeviceCode::new(device_code),
            verification_uri: format!("{}{}", self.api, crate::qr::VERIFICATION_PATH),
            verification_uri_complete: Some(VerificationUriComplete::new(crate::qr::verification_uri_complete(
                &self.api, &user_code,
            ))),
            user_code,
            expires_in: lifetime,
            interval: Some(interval),
            request_id: Some(request_id),
        })
    }

    // -------------------------------------------------------------------------------------------------------------
    // Token endpoint
    // -------------------------------------------------------------------------------------------------------------

    /// `POST /oauth/token`. `authorization` is the request's `Authorization` header (device-bound grants).
    pub fn token(
        &mut self,
        now: OffsetDateTime,
        req: TokenRequest,
        authorization: Option<&str>,
    ) -> Result<TokenResponse, OAuthFailure> {
        if client_kind(req.client_id()).is_none() {
            return Err(if authorization.is_some() {
                OAuthFailure::device_auth("unknown client_id")
            } else {
                OAuthFailure::bad(E::InvalidClient, "unknown client_id")
            });
        }
        match req {
            TokenRequest::DeviceCode { device_code, client_id } => {
                self.device_code_grant(now, &device_code, &client_id, authorization)
            }
            TokenRequest::RefreshToken { refresh_token, scope, client_id } => {
                self.refresh_grant(now, &refresh_token, scope.as_deref(), &client_id)
            }
            TokenRequest::Password { username, password, scope, client_id } => {
                self.password_grant(now, &username, password.secret(), &scope, &client_id, authorization)
            }
            TokenRequest::AuthorizationCode { code, redirect_uri, code_verifier, client_id } => {
                self.authorization_code_grant(now, code.secret(), &redirect_uri, code_verifier.secret(), &client_id)
            }
        }
    }

    /// RFC 8628 §3.4–3.5 with the polling rules of PROTOCOL.md §5.4/§12 and the one-shot rule R-DEV-1.
    fn device_code_grant(
        &mut self,
        now: OffsetDateTime,
        device_code: &DeviceCode,
        client: &str,
        authorization: Option<&str>,
    ) -> Result<TokenResponse, OAuthFailure> {
        let hash = SecretHash::of(device_code.secret());
        let Some(rec) = self.state.codes.get(&hash) else {
            return Err(OAuthFailure::bad(E::InvalidGrant, "unknown device code"));
        };
        if rec.client_id != client {
            return Err(OAuthFailure::bad(E::InvalidGrant, "the device code was issued to another client"));
        }
        if rec.kind == CodeKind::Session {
            let d = self.device_client(now, authorization, client)?;
            if rec.device_id.as_deref() != Some(d.id.as_str()) {
                return Err(OAuthFailure::bad(E::InvalidGrant, "the device code belongs to another device"));
            }
        }
        // Every poll counts, a re-sent one too: the record changes on each (in place; the journal names it).
        self.touched_code(hash);
        let mutations = self.mutations;
        let Some(rec) = self.state.codes.get_mut(&hash) else {
            return Err(OAuthFailure::bad(E::InvalidGrant, "unknown device code"));
        };
        // PROTOCOL.md §5.4 / §12: a poll earlier than interval − 0.5 s after the previous poll of this code gets
        // slow_down, and the code's interval grows by 5 s for good (RFC 8628 §3.5).
        let previous = rec.last_poll.replace(now);
        if let Some(prev) = previous {
            let gap = now - prev;
            let gap = std::time::Duration::from_millis(u64::try_from(gap.whole_milliseconds().max(0)).unwrap_or(0));
            let too_early = crate::timing::is_too_early(gap, std::time::Duration::from_secs(rec.interval));
            // Test-only mutant `NoSlowDown` (module `mutations`): every gap is long enough.
            if too_early && !mutations.has(Mutation::NoSlowDown) {
                rec.interval = rec.interval.saturating_add(5);
                return Err(OAuthFailure::bad(E::SlowDown, "polling too fast; the interval grew by 5 seconds"));
            }
        }
        match &rec.state {
            CodeState::Redeemed(r) => {
                // R-DEV-1: a repeat within 30 s of the success (a lost answer) mints a fresh pair for the same
                // subject and revokes the first pair; later repeats get invalid_grant.
                // Test-only mutant `DoubleRedeem` (module `mutations`): every repeat mints, nothing is revoked.
                let double = mutations.has(Mutation::DoubleRedeem);
                if unix(now) - unix(r.at) > DEVICE_CODE_GRACE_SECS && !double {
                    return Err(OAuthFailure::bad(E::InvalidGrant, "the device code was already used"));
                }
                let (rec, r) = (rec.clone(), r.clone());
                if !double {
                    self.delete_access(&r.access);
                    if let Some(f) = &r.family {
                        self.revoke_family(f);
                    }
                }
                self.redeem(now, *rec, &r.user, r.device_id)
            }
            _ if now >= rec.expires => Err(OAuthFailure::bad(E::ExpiredToken, "the device code expired")),
            CodeState::Pending => Err(OAuthFailure::bad(E::AuthorizationPending, "waiting for the user")),
            CodeState::Denied => Err(OAuthFailure::bad(E::AccessDenied, "the request was denied")),
            CodeState::Approved { user } => {
                let user = user.clone();
                let rec = rec.clone();
                self.redeem(now, *rec, &user, None)
            }
        }
    }

    /// Mints what an approved code grants and marks it redeemed (remembering the pair for R-DEV-1).
    fn redeem(
        &mut self,
        now: OffsetDateTime,
        mut rec: DeviceCodeRecord,
        user_id: &str,
        existing_device: Option<String>,
    ) -> Result<TokenResponse, OAuthFailure> {
        let Some(user) = self.state.users.get(user_id).cloned() else {
            return Err(OAuthFailure::bad(E::InvalidGrant, "the approving user no longer exists"));
        };
        let (response, access_hash, family, device_id) = match rec.kind {
            CodeKind::Registration => {
                let device_id = match existing_device {
                    Some(d) if self.state.devices.contains_key(d.as_str()) => d,
                    _ => {
                        let id = self.minter.id("dev");
                        self.put_device(Device {
                            id: Name::from(id.as_str()),
                            tenant: Name::from(user.tenant.as_str()),
                            client_id: Name::from(rec.client_id.as_str()),
                            model: rec.model.clone(),
                            serial: rec.serial.clone(),
                            job_url: None,
                            created: now,
                        });
                        id
                    }
                };
                let subject = Subject::Device { device_id: Name::from(device_id.as_str()) };
                let (resp, hash, fam) = self.issue(now, &rec.client_id, &user.tenant, subject, scope::DEVICE, true);
                (resp, hash, fam, Some(device_id))
            }
            CodeKind::Session => {
                let subject = Subject::User { user_id: Name::from(user.id.as_str()), device_id: rec.device_id.clone() };
                let (resp, hash, fam) = self.issue(now, &rec.client_id, &user.tenant, subject, scope::RELEASE, false);
                (resp, hash, fam, None)
            }
            CodeKind::Desktop => {
                let subject = Subject::User { user_id: Name::from(user.id.as_str()), device_id: None };
                let (resp, hash, fam) = self.issue(now, &rec.client_id, &user.tenant, subject, scope::APP, true);
                (resp, hash, fam, None)
            }
        };
        // R-DEV-1 counts 30 s from the first success: a re-mint keeps the original time.
        let at = match &rec.state {
            CodeState::Redeemed(r) => r.at,
            _ => now,
        };
        rec.state = CodeState::Redeemed(Box::new(Redemption {
            at,
            user: user.id.clone(),
            device_id,
            access: access_hash,
            family,
        }));
        self.put_code(rec);
        Ok(response)
    }

    /// RFC 6749 §6 with rotation (R-TOK-2), the lost-answer rule (R-TOK-3), family revocation on any other reuse
    /// (RFC 9700 §4.14.2) and the 90-day sliding expiry (R-TOK-4).
    fn refresh_grant(
        &mut self,
        now: OffsetDateTime,
        token: &RefreshToken,
        requested_scope: Option<&str>,
        client: &str,
    ) -> Result<TokenResponse, OAuthFailure> {
        let dead = || OAuthFailure::bad(E::InvalidGrant, "the refresh token is invalid, expired or revoked");
        // The token names its family (docs/protocol.md C12); a token of no family is simply unknown.
        let Some(handle) = family_handle_of(token.secret()) else { return Err(dead()) };
        let Some(family_id) = self.refresh_index.get(&SecretHash::of(handle)) else { return Err(dead()) };
        let Some(fam) = self.state.families.get(family_id) else { return Err(dead()) };
        if fam.client_id != client {
            return Err(OAuthFailure::bad(E::InvalidGrant, "the refresh token was issued to another client"));
        }
        if fam.revoked || fam.expires <= now {
            return Err(dead());
        }
        // No device lookup: a live family's device exists (`remove_device` revokes its families first, and
        // `from_state` revokes any a store holds without one), and this path runs for every printer refresh.
        debug_assert!(
            !matches!(&fam.subject, Subject::Device { device_id } if !self.state.devices.contains_key(device_id)),
            "a live refresh family of a removed device"
        );
        if let Some(s) = requested_scope {
            if !s.split(' ').all(|w| scope::contains(&fam.scope, w)) {
                return Err(OAuthFailure::bad(E::InvalidScope, "a refresh cannot widen the scope"));
            }
        }
        let hash = SecretHash::of(token.secret());
        let mutations = self.mutations;
        let is_current = hash == fam.current;
        // Test-only mutant `NoLostAnswerGrace` (module `mutations`): the predecessor is never redeemable.
        let is_unused_predecessor = fam.previous == Some(hash)
            && fam.previous_until.is_some_and(|u| now < u)
            && !mutations.has(Mutation::NoLostAnswerGrace);
        if !is_current && !is_unused_predecessor {
            // Test-only mutant `NoReuseDetection` (module `mutations`): refused, but the family lives on.
            if mutations.has(Mutation::NoReuseDetection) {
                return Err(dead());
            }
            // Any other token of this family (an older one: only a holder of a family token knows its handle) is
            // reuse, and revokes the whole family (RFC 9700 §4.14.2).
            let id = fam.id.clone();
            self.revoke_family(&id);
            return Err(OAuthFailure::bad(E::InvalidGrant, "refresh token reuse detected; the session was revoked"));
        }
        let lifetime = secs(self.settings(&fam.tenant).refresh_token_secs);
        let family_id = fam.id.clone();
        // Test-only mutant `NoRotation` (module `mutations`): the presented token stays current and is answered again.
        let no_rotation = mutations.has(Mutation::NoRotation);
        let (new_plain, new_hash) =
            if no_rotation { (token.secret().to_owned(), hash) } else { self.minter.refresh_token(handle) };
        self.touched_family(&family_id);
        let Some(fam) = self.state.families.get_mut(&family_id) else { return Err(dead()) };
        if is_current && !no_rotation {
            // Normal rotation: the presented token becomes `previous`, redeemable until its successor is first
            // used (R-TOK-3); the one before it is dead for good (its reuse is detected through the handle).
            fam.previous = Some(hash);
            fam.previous_until = Some(now + Duration::seconds(PREVIOUS_REFRESH_GRACE_SECS));
        }
        // R-TOK-3 lost answer (the predecessor presented again, its successor never used): a fresh pair replaces the
        // unused successor, which is dead from now on.
        fam.current = new_hash;
        // R-TOK-4: sliding expiry. The access tokens of the family minted before this refresh stay valid until they
        // expire.
        if !mutations.has(Mutation::NoSlidingExpiry) {
            fam.expires = now + lifetime;
        }
        // Inline strings (no allocation) for the scope, like the tenant.
        let scope = Name::from(requested_scope.unwrap_or(&fam.scope));
        let (subject, tenant) = (fam.subject.clone(), fam.tenant.clone());
        let (at, lifetime) = self.mint_access(now, client, &tenant, subject.clone(), &scope, Some(family_id));
        Ok(self.token_response(at, lifetime, Some(RefreshToken::new(new_plain)), &scope, &tenant, &subject))
    }

    /// RFC 6749 §4.3 as Roger uses it (PROTOCOL.md §8): device-bound, step 2 for the step-1 user or PIN login
    /// from idle; Argon2id verification with identical failures, one lock-out counter per user, per-device and
    /// per-tenant throttles (R-PWD-2).
    fn password_grant(
        &mut self,
        now: OffsetDateTime,
        username: &str,
        secret: &str,
        requested: &str,
        client: &str,
        authorization: Option<&str>,
    ) -> Result<TokenResponse, OAuthFailure> {
        if client_kind(client) != Some(ClientKind::Mfp) {
            return Err(OAuthFailure::bad(E::UnauthorizedClient, "only printers use the password grant"));
        }
        let device = self.device_client(now, authorization, client)?;
        let settings = self.settings(&device.tenant);
        let step2 = requested == scope::STEP2;
        if !step2 && requested != scope::PIN_LOGIN {
            return Err(OAuthFailure::bad(E::InvalidScope, "request roger.print roger.scan, or the PIN login scopes"));
        }
        let device_key = format!("pwd-device:{}", device.id);
        let tenant_key = format!("pwd-tenant:{}", device.tenant);
        if self.limits.count(&device_key, now, 300) >= settings.device_failures_per_5min as usize {
            return Err(OAuthFailure::throttled(self.limits.retry_after(&device_key, now, 300)));
        }
        if self.limits.count(&tenant_key, now, 60) >= settings.tenant_failures_per_minute as usize {
            return Err(OAuthFailure::throttled(self.limits.retry_after(&tenant_key, now, 60)));
        }
        let user = self.state.users.values().find(|u| u.tenant == device.tenant && u.username == username).cloned();
        let locked = user.as_ref().is_some_and(|u| u.locked_until.is_some_and(|t| now < t));
        let ok = self.verify_pin_or_password(
            secret,
            user.as_ref().and_then(|u| u.pin_hash.as_deref()),
            user.as_ref().and_then(|u| u.password_hash.as_deref()),
            settings.argon2,
        );
        // Step 2 needs the step-1 session of this user at this printer (PROTOCOL.md §8).
        let session_ok = !step2
            || self.mutations.has(Mutation::NoStep2Binding)
            || user.as_ref().is_some_and(|u| {
                self.state.access.values().any(|a| {
                    a.expires > now
                        && scope::contains(&a.scope, scope::RELEASE)
                        && a.subject
                            == Subject::User { user_id: Name::from(u.id.as_str()), device_id: Some(device.id.clone()) }
                })
            });
        let fail = || OAuthFailure::bad(E::InvalidGrant, "the user name, PIN or password is wrong");
        let Some(user) = user else {
            self.limits.hit(device_key, now, 300);
            self.limits.hit(tenant_key, now, 60);
            return Err(fail());
        };
        if !(ok && !locked && session_ok) {
            self.limits.hit(device_key, now, 300);
            self.limits.hit(tenant_key, now, 60);
            if !locked && !ok {
                self.record_login_failure(user, settings, now);
            }
            return Err(fail());
        }
        let user_id = user.id.clone();
        self.clear_login_failures(user);
        let subject = Subject::User { user_id: Name::from(user_id), device_id: Some(device.id.clone()) };
        Ok(self.issue(now, client, &device.tenant, subject, requested, false).0)
    }

    /// RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.6): one use within the code's lifetime; a second use revokes what the
    /// first minted (RFC 6749 §4.1.2).
    fn authorization_code_grant(
        &mut self,
        now: OffsetDateTime,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        client: &str,
    ) -> Result<TokenResponse, OAuthFailure> {
        let hash = SecretHash::of(code);
        let bad = |d: &str| OAuthFailure::bad(E::InvalidGrant, d);
        let Some(mut rec) = self.state.auth_codes.get(&hash).cloned() else { return Err(bad("unknown code")) };
        if rec.used {
            if let Some(f) = rec.family.clone() {
                self.revoke_family(&f);
            }
            return Err(bad("the code was already used; its tokens were revoked"));
        }
        if rec.expires <= now {
            return Err(bad("the code expired"));
        }
        if rec.client_id != client || rec.redirect_uri != redirect_uri {
            return Err(bad("client_id or redirect_uri does not match the authorization request"));
        }
        if !crate::pkce::verify_s256(verifier, &rec.code_challenge) {
            return Err(bad("PKCE verification failed"));
        }
        let subject = Subject::User { user_id: Name::from(rec.user_id.as_str()), device_id: None };
        let (resp, _, fam) = self.issue(now, client, &rec.tenant.clone(), subject, &rec.scope.clone(), true);
        rec.used = true;
        rec.family = fam;
        self.put_auth_code(rec);
        Ok(resp)
    }

    // -------------------------------------------------------------------------------------------------------------
    // App login (PROTOCOL.md §4)
    // -------------------------------------------------------------------------------------------------------------

    /// Checks an authorization request before the form is shown (RFC 6749 §4.1.1, RFC 7636 §4.3, RFC 8252).
    pub fn check_authorization_request(
        &self,
        req: &crate::authorize::AuthorizationRequest,
    ) -> Result<(), LoginFailure> {
        if req.client_id != client_id::MOBILE {
            return Err(LoginFailure::InvalidRequest("unknown client_id"));
        }
        if req.redirect_uri != MOBILE_REDIRECT_URI {
            return Err(LoginFailure::InvalidRequest("redirect_uri is not registered"));
        }
        if req.response_type != "code" {
            return Err(LoginFailure::InvalidRequest("response_type must be code"));
        }
        if req.code_challenge_method != crate::pkce::METHOD_S256 || req.code_challenge.len() != 43 {
            return Err(LoginFailure::InvalidRequest("PKCE with S256 is required"));
        }
        if req.scope != scope::APP {
            return Err(LoginFailure::InvalidRequest("scope must be roger.app"));
        }
        Ok(())
    }

    /// `POST /oauth/authorize` after the front end checked the CSRF token: verifies the credentials (one lock-out
    /// counter with the PIN, R-PWD-2) and returns the redirect `Location` with a fresh code.
    pub fn app_login(&mut self, now: OffsetDateTime, form: &LoginForm) -> Result<String, LoginFailure> {
        self.check_authorization_request(&form.request)?;
        let settings = self.settings(&form.tenant);
        let user = self.state.users.values().find(|u| u.tenant == form.tenant && u.username == form.username).cloned();
        let locked = user.as_ref().is_some_and(|u| u.locked_until.is_some_and(|t| now < t));
        let ok = self.verify_password(
            form.password.secret(),
            user.as_ref().and_then(|u| u.password_hash.as_deref()),
            settings.argon2,
        );
        let Some(user) = user else { return Err(LoginFailure::BadCredentials) };
        if !ok || locked {
            if !locked {
                self.record_login_failure(user, settings, now);
            }
            return Err(LoginFailure::BadCredentials);
        }
        self.clear_login_failures(user.clone());
        let (code, hash) = self.minter.secret(SecretKind::AuthorizationCode);
        self.put_auth_code(AuthCodeRecord {
            hash,
            client_id: form.request.client_id.clone(),
            redirect_uri: form.request.redirect_uri.clone(),
            code_challenge: form.request.code_challenge.clone(),
            user_id: user.id.clone(),
            tenant: user.tenant.clone(),
            scope: form.request.scope.clone(),
            expires: now + secs(settings.auth_code_secs),
            used: false,
            family: None,
        });
        let query = String::from_utf8(crate::wire::encode_form([
            ("code", Some(code.as_str())),
            ("state", Some(form.request.state.as_str())),
        ]))
        .unwrap_or_default();
        Ok(format!("{}?{query}", form.request.redirect_uri))
    }

    // -------------------------------------------------------------------------------------------------------------
    // Revocation (RFC 7009)
    // -------------------------------------------------------------------------------------------------------------

    /// `POST /oauth/revoke`: 200 also for unknown tokens (RFC 7009 §2.2); a refresh token takes its family and its
    /// access tokens with it. With an `Authorization` header the client must pass device-bound authentication
    /// (the MFP revoking user tokens, PROTOCOL.md §6–7). A token of another client, or of another printer, is left
    /// alone (docs C3).
    pub fn revoke(
        &mut self,
        now: OffsetDateTime,
        req: &RevocationRequest,
        authorization: Option<&str>,
    ) -> Result<(), OAuthFailure> {
        if client_kind(&req.client_id).is_none() {
            return Err(OAuthFailure::bad(E::InvalidClient, "unknown client_id"));
        }
        let caller = match authorization {
            Some(_) => Some(self.device_client(now, authorization, &req.client_id)?.id),
            None => None,
        };
        // docs C3: a token of another client, or (device-bound) of another printer, is left alone.
        let owned = |client: &str, subject: &Subject| {
            client == req.client_id && caller.as_deref().is_none_or(|d| subject_device(subject) == Some(d))
        };
        let hash = SecretHash::of(req.token.secret());
        if let Some(a) = self.state.access.get(&hash).cloned() {
            if owned(&a.client_id, &a.subject) {
                self.delete_access(&hash);
            }
            return Ok(());
        }
        let family = family_handle_of(req.token.secret()).and_then(|h| self.refresh_index.get(&SecretHash::of(h)));
        if let Some(fid) = family.cloned() {
            if self.state.families.get(&fid).is_some_and(|f| owned(&f.client_id, &f.subject)) {
                self.revoke_family(&fid);
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------------------------------------------------------
    // Approvals (PROTOCOL.md §5.3, §8; RFC 8628 §5.1, §5.4)
    // -------------------------------------------------------------------------------------------------------------

    fn find_code(&mut self, now: OffsetDateTime, who: &Principal, raw: &str) -> Result<DeviceCodeRecord, ApiFailure> {
        let user_id = who.user_id().unwrap_or_default().to_owned();
        let settings = self.settings(&who.tenant);
        let key = format!("approve-fail:{user_id}");
        // Test-only mutant `NoApprovalRateLimit` (module `mutations`): no limit.
        if self.limits.count(&key, now, 60) >= settings.approvals_per_minute as usize
            && !self.mutations.has(Mutation::NoApprovalRateLimit)
        {
            return Err(ApiFailure::rate_limited(self.limits.retry_after(&key, now, 60)));
        }
        let found = crate::user_code::normalize(raw)
            .ok()
            .and_then(|c| WireUserCode::new(&c))
            .and_then(|c| self.user_codes.get(&c).copied())
            .and_then(|h| self.state.codes.get(&h).cloned())
            .filter(|c| c.expires > now && matches!(c.state, CodeState::Pending))
            // A session code of another tenant's printer does not exist for this user (no oracle).
            .filter(|c| c.tenant.as_deref().is_none_or(|t| t == who.tenant));
        match found {
            Some(c) => {
                // RFC 8628 §5.1: a code gets a bounded number of decisions and lookups.
                let per_code = self.limits.hit(format!("code:{}", c.user_code), now, 600);
                if per_code > 20 {
                    return Err(ApiFailure::rate_limited(60));
                }
                Ok(*c)
            }
            None => {
                self.limits.hit(key, now, 60);
                Err(ApiFailure::new(404, "not-found", "No pending code with that value"))
            }
        }
    }

    fn require_app_user(&self, who: &Principal) -> Result<User, ApiFailure> {
        who.require_scope(&[scope::APP])?;
        who.user_id().and_then(|u| self.state.users.get(u)).cloned().ok_or_else(ApiFailure::invalid_token)
    }

    /// `GET /api/v1/codes/{user_code}` (R-QR-2: show what approving does before it is done).
    pub fn lookup_code(
        &mut self,
        now: OffsetDateTime,
        who: &Principal,
        user_code: &str,
    ) -> Result<CodeLookup, ApiFailure> {
        let user = self.require_app_user(who)?;
        let c = self.find_code(now, who, user_code)?;
        if c.kind == CodeKind::Registration && !user.admin {
            return Err(ApiFailure::new(403, "forbidden", "Only tenant admins approve printer registrations"));
        }
        Ok(CodeLookup {
            kind: match c.kind {
                CodeKind::Registration => WireCodeKind::Registration,
                CodeKind::Session => WireCodeKind::Session,
                CodeKind::Desktop => WireCodeKind::Desktop,
            },
            vendor: c.client_id.strip_prefix(client_id::EMB_PREFIX).map(str::to_owned),
            model: c.model.clone().map(Into::into),
            serial: c.serial.clone().map(Into::into),
            expires: c.expires,
        })
    }

    /// `POST /api/v1/codes/approve` or `/deny`: decides a pending code; pushes `code.approved`/`code.denied` to the
    /// printer (session codes) or the user's apps (desktop codes).
    pub fn decide_code(
        &mut self,
        now: OffsetDateTime,
        who: &Principal,
        user_code: &str,
        approve: bool,
    ) -> Result<(), ApiFailure> {
        let user = self.require_app_user(who)?;
        let mut c = self.find_code(now, who, user_code)?;
        if c.kind == CodeKind::Registration && !user.admin {
            return Err(ApiFailure::new(403, "forbidden", "Only tenant admins approve printer registrations"));
        }
        c.state = if approve { CodeState::Approved { user: user.id.clone() } } else { CodeState::Denied };
        let (request_id, device, kind) = (c.request_id.clone(), c.device_id.clone(), c.kind);
        self.put_code(c);
        let event = match Id::new(request_id) {
            Ok(r) if approve => PushEvent::CodeApproved { request_id: r },
            Ok(r) => PushEvent::CodeDenied { request_id: r },
            Err(_) => return Ok(()),
        };
        let target = match (kind, device) {
            (CodeKind::Session, Some(d)) => Id::new(d).ok().map(PushTarget::Device),
            (CodeKind::Desktop, _) => Id::new(user.id).ok().map(PushTarget::User),
            _ => None,
        };
        if let Some(t) = target {
            self.push(now, t, event);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{core, t0, API};
    use super::*;
    use crate::secret::Password;

    fn at(s: i64) -> OffsetDateTime {
        t0() + Duration::seconds(s)
    }

    fn reg_request() -> DeviceAuthorizationRequest {
        DeviceAuthorizationRequest::registration("emb-acme", "MX-1", "SN-1")
    }

    fn poll(
        c: &mut ServerCore,
        now: OffsetDateTime,
        dc: &DeviceCode,
        auth: Option<&str>,
    ) -> Result<TokenResponse, OAuthFailure> {
        c.token(now, TokenRequest::DeviceCode { device_code: dc.clone(), client_id: "emb-acme".into() }, auth)
    }

    fn app_principal(c: &mut ServerCore, user: &str) -> Principal {
        let subject = Subject::User { user_id: user.into(), device_id: None };
        let (at, _) = c.mint_access(t0(), "roger-mobile", "acme", subject, scope::APP, None);
        c.authenticate(t0(), Some(&format!("Bearer {}", at.secret()))).unwrap()
    }

    /// Registers a printer; returns its token response.
    fn register(c: &mut ServerCore) -> TokenResponse {
        let r = c.device_authorization(t0(), &reg_request(), None).unwrap();
        let admin = app_principal(c, "u-admin");
        c.decide_code(at(1), &admin, r.user_code.secret(), true).unwrap();
        poll(c, at(5), &r.device_code, None).unwrap()
    }

    /// RFC 8628 §3.2 + PROTOCOL.md §5.1: the answer's shape, 8-letter consonant code, QR on the API origin.
    #[test]
    fn device_authorization_answer() {
        let mut c = core();
        let r = c.device_authorization(t0(), &reg_request(), None).unwrap();
        assert!(r.device_code.secret().starts_with("rdc_"));
        assert!(crate::user_code::is_wire_form(r.user_code.secret()));
        assert_eq!(r.verification_uri, format!("{API}/device"));
        let qr = r.verification_uri_complete.unwrap();
        assert_eq!(crate::qr::parse(qr.secret(), API).unwrap(), r.user_code);
        assert_eq!((r.expires_in, r.interval), (600, Some(5)));
        let changes = c.take_changes();
        let stored = serde_json::to_string(&changes).unwrap();
        assert!(!stored.contains(r.device_code.secret()), "only the hash of a device code is stored");
    }

    /// docs/protocol.md §3.7: a registration names model and serial (both REQUIRED, at most 64 characters).
    #[test]
    fn registration_requires_model_and_serial() {
        let mut c = core();
        let bad = |model: Option<&str>, serial: Option<&str>| DeviceAuthorizationRequest {
            device_model: model.map(str::to_owned),
            device_serial: serial.map(str::to_owned),
            ..reg_request()
        };
        let long = "m".repeat(MAX_DEVICE_FACT_LEN + 1);
        for req in
            [bad(None, Some("SN")), bad(Some("MX"), None), bad(Some(&long), Some("SN")), bad(Some("MX"), Some(&long))]
        {
            let e = c.device_authorization(t0(), &req, None).unwrap_err();
            assert_eq!((e.status, e.body.error), (400, E::InvalidRequest), "{req:?}");
        }
        let just = "m".repeat(MAX_DEVICE_FACT_LEN);
        assert!(c.device_authorization(t0(), &bad(Some(&just), Some(&just)), None).is_ok());
        assert!(
            c.device_authorization(t0(), &DeviceAuthorizationRequest::desktop(), None).is_ok(),
            "desktop: optional"
        );
    }

    /// PROTOCOL.md §5.4 / §12: too-fast polls get slow_down and the interval grows by 5 s for good.
    #[test]
    fn polling_enforcement() {
        let mut c = core();
        let r = c.device_authorization(t0(), &reg_request(), None).unwrap();
        let code = |e: OAuthFailure| e.body.error;
        assert_eq!(code(poll(&mut c, at(5), &r.device_code, None).unwrap_err()), E::AuthorizationPending);
        // 4.6 s later: within interval − 0.5 s, so allowed.
        let t = at(5) + Duration::milliseconds(4600);
        assert_eq!(code(poll(&mut c, t, &r.device_code, None).unwrap_err()), E::AuthorizationPending);
        // 4.4 s later: too early.
        let t2 = t + Duration::milliseconds(4400);
        assert_eq!(code(poll(&mut c, t2, &r.device_code, None).unwrap_err()), E::SlowDown);
        // Now 10 s apply: 9 s later is still too early (interval 10 − 0.5).
        let t3 = t2 + Duration::seconds(9);
        assert_eq!(code(poll(&mut c, t3, &r.device_code, None).unwrap_err()), E::SlowDown);
        let t4 = t3 + Duration::seconds(15);
        assert_eq!(code(poll(&mut c, t4, &r.device_code, None).unwrap_err()), E::AuthorizationPending);
        let t5 = t4 + Duration::seconds(11);
        assert_eq!(code(poll(&mut c, t5, &r.device_code, None).unwrap_err()), E::SlowDown, "the interval stays 15 s");
    }

    /// RFC 8628 §3.5: denial and expiry.
    #[test]
    fn denied_and_expired() {
        let mut c = core();
        let r = c.device_authorization(t0(), &reg_request(), None).unwrap();
        let admin = app_principal(&mut c, "u-admin");
        c.decide_code(at(1), &admin, &crate::user_code::format_for_display(r.user_code.secret()).to_lowercase(), false)
            .unwrap();
        assert_eq!(poll(&mut c, at(5), &r.device_code, None).unwrap_err().body.error, E::AccessDenied);
        let r2 = c.device_authorization(t0(), &reg_request(), None).unwrap();
        assert_eq!(poll(&mut c, at(600), &r2.device_code, None).unwrap_err().body.error, E::ExpiredToken);
    }

    /// PROTOCOL.md §5.3: only tenant admins approve registrations; a pushed session code needs no admin.
    #[test]
    fn only_admins_approve_registrations() {
        let mut c = core();
        let r = c.device_authorization(t0(), &reg_request(), None).unwrap();
        let alice = app_principal(&mut c, "u-alice");
        assert_eq!(c.lookup_code(at(1), &alice, r.user_code.secret()).unwrap_err().status, 403);
        assert_eq!(c.decide_code(at(1), &alice, r.user_code.secret(), true).unwrap_err().status, 403);
        let admin = app_principal(&mut c, "u-admin");
        let l = c.lookup_code(at(1), &admin, r.user_code.secret()).unwrap();
        assert_eq!(
            (l.kind, l.vendor.as_deref(), l.model.as_deref()),
            (WireCodeKind::Registration, Some("acme"), Some("MX-1"))
        );
    }

    /// R-DEV-1: a repeat within 30 s re-mints for the same device and revokes the first pair; later → invalid_grant.
    #[test]
    fn one_shot_redemption_with_grace() {
        let mut c = core();
        let r = c.device_authorization(t0(), &reg_request(), None).unwrap();
        let admin = app_principal(&mut c, "u-admin");
        c.decide_code(at(1), &admin, r.user_code.secret(), true).unwrap();
        let first = poll(&mut c, at(5), &r.device_code, None).unwrap();
        assert_eq!(first.scope.as_deref(), Some(scope::DEVICE));
        let second = poll(&mut c, at(20), &r.device_code, None).unwrap();
        assert_eq!(first.device_id, second.device_id, "same device");
        assert_ne!(first.access_token, second.access_token);
        assert!(c.authenticate(at(21), Some(&format!("Bearer {}", first.access_token.secret()))).is_err());
        let rt1 = first.refresh_token.unwrap();
        assert!(c
            .token(
                at(21),
                TokenRequest::RefreshToken { refresh_token: rt1, scope: None, client_id: "emb-acme".into() },
                None
            )
            .is_err());
        assert_eq!(poll(&mut c, at(60), &r.device_code, None).unwrap_err().body.error, E::InvalidGrant);
    }

    fn refresh(c: &mut ServerCore, now: OffsetDateTime, rt: &RefreshToken) -> Result<TokenResponse, OAuthFailure> {
        c.token(
            now,
            TokenRequest::RefreshToken { refresh_token: rt.clone(), scope: None, client_id: "emb-acme".into() },
            None,
        )
    }

    /// R-TOK-2 rotation, R-TOK-3 lost answer, RFC 9700 §4.14.2 reuse → family revoked.
    #[test]
    fn rotation_lost_answer_and_reuse() {
        let mut c = core();
        let reg = register(&mut c);
        let rt1 = reg.refresh_token.unwrap();
        let a = refresh(&mut c, at(100), &rt1).unwrap();
        let rt2 = a.refresh_token.clone().unwrap();
        assert_ne!(rt1, rt2);
        // The answer with rt2 was lost: rt1 again mints a fresh pair and retires the unused rt2.
        let b = refresh(&mut c, at(110), &rt1).unwrap();
        let rt3 = b.refresh_token.clone().unwrap();
        assert!(refresh(&mut c, at(111), &rt2).is_err(), "the unused successor is retired, and its reuse…");
        assert!(refresh(&mut c, at(112), &rt3).is_err(), "…revokes the whole family");
        assert!(c.authenticate(at(112), Some(&format!("Bearer {}", b.access_token.secret()))).is_err());
    }

    /// R-TOK-3: once the successor is used, the previous token is dead, and using it is reuse.
    #[test]
    fn previous_dies_when_successor_used() {
        let mut c = core();
        let rt1 = register(&mut c).refresh_token.unwrap();
        let rt2 = refresh(&mut c, at(100), &rt1).unwrap().refresh_token.unwrap();
        let rt3 = refresh(&mut c, at(200), &rt2).unwrap().refresh_token.unwrap();
        assert_eq!(refresh(&mut c, at(300), &rt1).unwrap_err().body.error, E::InvalidGrant);
        assert!(refresh(&mut c, at(301), &rt3).is_err(), "reuse revoked the family");
    }

    /// R-TOK-4: 90 days sliding; unused for 90 days + 1 s → dead.
    #[test]
    fn sliding_expiry() {
        let mut c = core();
        let rt1 = register(&mut c).refresh_token.unwrap();
        let day = 24 * 3600;
        let rt2 = refresh(&mut c, at(80 * day), &rt1).unwrap().refresh_token.unwrap();
        let rt3 = refresh(&mut c, at(160 * day), &rt2).unwrap().refresh_token.unwrap();
        assert!(refresh(&mut c, at(250 * day + 1), &rt3).is_err());
    }

    /// R-TOK-1 lifetimes with refreshes around the clock: minting drops the access tokens that expired, so a printer
    /// refreshing once per lifetime keeps at most two stored (the one it holds and the one just minted), not every
    /// token it was ever given, and the one it holds stays valid.
    #[test]
    fn minting_drops_expired_access_tokens() {
        let mut c = core();
        let lifetime = i64::try_from(c.settings("acme").access_token_secs).unwrap();
        let mut rt = register(&mut c).refresh_token.unwrap();
        let mut held = None;
        for round in 1..=50 {
            let now = at(round * lifetime);
            let a = refresh(&mut c, now, &rt).unwrap();
            rt = a.refresh_token.clone().unwrap();
            assert!(c.state().access.len() <= 2, "round {round}: {} access tokens stored", c.state().access.len());
            assert!(c.state().access.values().all(|t| t.expires > now), "round {round}: an expired token is kept");
            assert!(c.authenticate(now, Some(&format!("Bearer {}", a.access_token.secret()))).is_ok());
            held = Some(a.access_token);
        }
        assert!(c.access_expiry.len() <= 2, "the expiry queue keeps up: {}", c.access_expiry.len());
        let held = held.unwrap();
        assert!(c.authenticate(at(50 * lifetime + 1), Some(&format!("Bearer {}", held.secret()))).is_ok());
    }

    /// The queue keeps expiries in whole seconds; a token is never dropped before its exact expiry.
    #[test]
    fn access_tokens_are_dropped_no_sooner_than_they_expire() {
        let mut c = core();
        let subject = || Subject::Device { device_id: "dev-1".into() };
        let half = Duration::milliseconds(500);
        let (first, _) = c.mint_access(t0() + half, "emb-acme", "acme", subject(), scope::DEVICE, None);
        let lifetime = i64::try_from(c.settings("acme").access_token_secs).unwrap();
        let stored = |c: &ServerCore| c.state().access.contains_key(&SecretHash::of(first.secret()));
        // 0.3 s before it expires (in the same whole second as its expiry), minting leaves it alone...
        c.mint_access(at(lifetime) + Duration::milliseconds(200), "emb-acme", "acme", subject(), scope::DEVICE, None);
        assert!(stored(&c));
        // ...and drops it once it has expired.
        c.mint_access(at(lifetime) + Duration::milliseconds(600), "emb-acme", "acme", subject(), scope::DEVICE, None);
        assert!(!stored(&c));
    }

    /// The expiry queue is in minting order: a token behind a longer-lived one waits for the sweep, a revoked one is
    /// skipped, and a core rebuilt from stored records (a restart with `--state`) rebuilds the queue in expiry order.
    #[test]
    fn access_expiry_queue_order_revocation_and_restart() {
        let mut c = core();
        let subject = || Subject::Device { device_id: "dev-1".into() };
        // Tokens of no tenant get the defaults: 10,000 s here, against `acme`'s 1,200 s.
        c.defaults.access_token_secs = 10_000;
        let (long, _) = c.mint_access(t0(), "emb-acme", "other", subject(), scope::DEVICE, None);
        let (short, _) = c.mint_access(t0(), "emb-acme", "acme", subject(), scope::DEVICE, Some("fam-x".into()));
        let (kept, _) = c.mint_access(t0(), "emb-acme", "acme", subject(), scope::DEVICE, None);
        c.revoke_family("fam-x");
        let stored = |c: &ServerCore, t: &AccessToken| c.state().access.contains_key(&SecretHash::of(t.secret()));
        assert!(!stored(&c, &short) && stored(&c, &kept));
        // At 2,000 s `kept` has expired, but it sits behind `long`: minting leaves it for the sweep.
        c.mint_access(at(2_000), "emb-acme", "acme", subject(), scope::DEVICE, None);
        assert!(stored(&c, &long) && stored(&c, &kept));
        c.sweep(at(2_000));
        assert!(stored(&c, &long) && !stored(&c, &kept));
        assert_eq!(c.access_expiry.len(), 2, "the sweep dropped the queue entries it made stale");

        // Restart: the queue is rebuilt in expiry order, so the short-lived token no longer waits for `long`.
        let minter =
            super::super::mint::Minter::new(Box::new(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7)));
        let mut r = ServerCore::from_state(API, *c.defaults(), minter, c.state().clone());
        let latest = |c: &ServerCore| c.state().access.values().map(|a| a.expires).min().unwrap();
        assert_eq!(latest(&r), at(2_000 + 1_200));
        r.mint_access(at(3_300), "emb-acme", "acme", subject(), scope::DEVICE, None);
        assert!(r.state().access.values().all(|a| a.expires > at(3_300)), "the expired token was dropped");
        assert!(stored(&r, &long));
    }

    /// A store that holds a live family of a device it does not hold (edited by hand: the core never writes one)
    /// loads with that family revoked, so its refresh token is refused and nothing is minted for a missing printer.
    #[test]
    fn a_family_without_its_device_is_revoked_on_load() {
        let mut c = core();
        let reg = register(&mut c);
        let rt = reg.refresh_token.unwrap();
        let device_id = reg.device_id.unwrap();
        let mut state = c.state().clone();
        state.devices.remove(device_id.as_str());
        let minter =
            super::super::mint::Minter::new(Box::new(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7)));
        let mut r = ServerCore::from_state(API, *c.defaults(), minter, state);
        let family = |c: &ServerCore| {
            c.state()
                .families
                .values()
                .find(|f| f.subject == Subject::Device { device_id: device_id.as_str().into() })
                .cloned()
                .unwrap()
        };
        let fam = family(&r);
        assert!(fam.revoked, "the orphaned family is revoked");
        assert!(r.state().access.values().all(|a| a.family != Some(fam.id.clone())), "and its access tokens are gone");
        assert_eq!(refresh(&mut r, at(100), &rt).unwrap_err().body.error, E::InvalidGrant);
        assert!(
            r.take_changes().iter().any(|ch| ch.table == super::super::Table::Families),
            "the revocation is journalled"
        );
        // The same store with the device loads untouched, and the token still refreshes.
        let minter =
            super::super::mint::Minter::new(Box::new(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7)));
        let mut whole = ServerCore::from_state(API, *c.defaults(), minter, c.state().clone());
        assert!(!family(&whole).revoked);
        assert!(refresh(&mut whole, at(100), &rt).is_ok());
    }

    /// PROTOCOL.md §7: device-bound authentication for session codes; failures are 401 invalid_client with the
    /// WWW-Authenticate challenge; unknown public client without Authorization → 400.
    #[test]
    fn device_bound_authentication() {
        let mut c = core();
        let reg = register(&mut c);
        let bearer = format!("Bearer {}", reg.access_token.secret());
        let session = DeviceAuthorizationRequest::session("emb-acme");
        assert!(c.device_authorization(at(10), &session, Some(&bearer)).is_ok());
        let e = c.device_authorization(at(10), &session, None).unwrap_err();
        assert_eq!((e.status, e.body.error.clone()), (401, E::InvalidClient));
        assert_eq!(e.www_authenticate.as_deref(), Some(r#"Bearer realm="roger", error="invalid_token""#));
        let other = DeviceAuthorizationRequest::session("emb-other");
        assert_eq!(c.device_authorization(at(10), &other, Some(&bearer)).unwrap_err().status, 401);
        assert_eq!(c.device_authorization(at(1300), &session, Some(&bearer)).unwrap_err().status, 401, "expired");
        let unknown = DeviceAuthorizationRequest { client_id: "evil".into(), ..session };
        let e = c.device_authorization(at(10), &unknown, None).unwrap_err();
        assert_eq!((e.status, e.body.error), (400, E::InvalidClient));
    }

    /// PROTOCOL.md §8: step 1 by QR, step 2 by PIN for the same user only; PIN login from idle.
    #[test]
    fn session_and_pin() {
        let mut c = core();
        let reg = register(&mut c);
        let bearer = format!("Bearer {}", reg.access_token.secret());
        let s =
            c.device_authorization(at(10), &DeviceAuthorizationRequest::session("emb-acme"), Some(&bearer)).unwrap();
        let alice = app_principal(&mut c, "u-alice");
        c.decide_code(at(11), &alice, s.user_code.secret(), true).unwrap();
        let push = c.take_push();
        assert!(
            matches!(&push[..], [e] if e.event == PushEvent::CodeApproved { request_id: Id::new(s.request_id.clone().unwrap()).unwrap() })
        );
        let step1 = poll(&mut c, at(15), &s.device_code, Some(&bearer)).unwrap();
        assert_eq!(step1.user.as_ref().map(|u| u.username.as_str()), Some("alice"));
        assert!(step1.refresh_token.is_none());
        let pw = |u: &str, p: &str, sc: &str| TokenRequest::Password {
            username: u.into(),
            password: Password::new(p),
            scope: sc.into(),
            client_id: "emb-acme".into(),
        };
        assert_eq!(
            c.token(at(16), pw("bob", "5678", scope::STEP2), Some(&bearer)).unwrap_err().body.error,
            E::InvalidGrant
        );
        let step2 = c.token(at(17), pw("alice", "1234", scope::STEP2), Some(&bearer)).unwrap();
        assert_eq!(step2.scope.as_deref(), Some(scope::STEP2));
        let pin_login = c.token(at(18), pw("bob", "bob-pass", scope::PIN_LOGIN), Some(&bearer)).unwrap();
        assert_eq!(pin_login.user.map(|u| u.username), Some("bob".into()));
        assert_eq!(c.token(at(19), pw("bob", "5678", scope::PIN_LOGIN), None).unwrap_err().status, 401, "device-bound");
    }

    /// R-PWD-2: identical failures for unknown user / wrong PIN / locked; lock-out after 5 failures for 300 s.
    #[test]
    fn lockout_and_identical_failures() {
        let mut c = core();
        let reg = register(&mut c);
        let bearer = format!("Bearer {}", reg.access_token.secret());
        let pw = |u: &str, p: &str| TokenRequest::Password {
            username: u.into(),
            password: Password::new(p),
            scope: scope::PIN_LOGIN.into(),
            client_id: "emb-acme".into(),
        };
        let unknown = c.token(at(20), pw("mallory", "1234"), Some(&bearer)).unwrap_err();
        for i in 0..5 {
            let wrong = c.token(at(21 + i), pw("alice", "0000"), Some(&bearer)).unwrap_err();
            assert_eq!(wrong, unknown);
        }
        let locked = c.token(at(30), pw("alice", "1234"), Some(&bearer)).unwrap_err();
        assert_eq!(locked, unknown, "a locked user gets the same answer, even with the right PIN");
        assert!(c.token(at(331), pw("alice", "1234"), Some(&bearer)).is_ok(), "the lock-out ends after 300 s");
    }

    /// RFC 8628 §5.1: approval attempts with unknown codes are limited per user (10/min) with 429 + Retry-After.
    #[test]
    fn approval_rate_limit() {
        let mut c = core();
        let alice = app_principal(&mut c, "u-alice");
        for i in 0..10 {
            assert_eq!(c.decide_code(at(i), &alice, "BBBBBBBB", true).unwrap_err().status, 404);
        }
        let e = c.decide_code(at(11), &alice, "BBBBBBBB", true).unwrap_err();
        assert_eq!(e.status, 429);
        assert!(e.retry_after.is_some_and(|s| s > 0 && s <= 60));
        assert_eq!(c.decide_code(at(70), &alice, "BBBBBBBB", true).unwrap_err().status, 404, "the window slides");
    }

    /// RFC 7009: revocation of a refresh token takes its access tokens; unknown tokens → 200.
    #[test]
    fn revocation_cascade() {
        let mut c = core();
        let reg = register(&mut c);
        let rt = reg.refresh_token.unwrap();
        let req = RevocationRequest::refresh(&rt, "emb-acme");
        c.revoke(at(30), &req, None).unwrap();
        assert!(c.authenticate(at(31), Some(&format!("Bearer {}", reg.access_token.secret()))).is_err());
        assert!(refresh(&mut c, at(32), &rt).is_err());
        let unknown = RevocationRequest::access(&AccessToken::new("nope"), "emb-acme");
        assert!(c.revoke(at(33), &unknown, None).is_ok());
    }

    /// R-DEV-1: the 30 s window runs from the first success; a re-mint inside it does not extend it.
    #[test]
    fn redemption_window_runs_from_the_first_success() {
        let mut c = core();
        let r = c.device_authorization(t0(), &reg_request(), None).unwrap();
        let admin = app_principal(&mut c, "u-admin");
        c.decide_code(at(1), &admin, r.user_code.secret(), true).unwrap();
        let first = poll(&mut c, at(5), &r.device_code, None).unwrap();
        let second = poll(&mut c, at(30), &r.device_code, None).unwrap();
        assert_eq!(first.device_id, second.device_id);
        assert_eq!(poll(&mut c, at(40), &r.device_code, None).unwrap_err().body.error, E::InvalidGrant);
    }

    /// RFC 8628 §3.5: a sweep does not turn an expired code into an unknown one (`expired_token`, not
    /// `invalid_grant`) until it has been expired for a while.
    #[test]
    fn swept_codes_still_answer_expired_token() {
        let mut c = core();
        let r = c.device_authorization(t0(), &reg_request(), None).unwrap();
        c.sweep(at(601));
        assert_eq!(poll(&mut c, at(601), &r.device_code, None).unwrap_err().body.error, E::ExpiredToken);
        c.sweep(at(600 + super::super::EXPIRED_CODE_MEMORY_SECS));
        assert_eq!(poll(&mut c, at(4300), &r.device_code, None).unwrap_err().body.error, E::InvalidGrant);
    }

    /// docs/protocol.md C3: with device-bound authentication a printer revokes only its own user tokens.
    #[test]
    fn device_bound_revocation_spares_other_printers_tokens() {
        let mut c = core();
        let a = register(&mut c);
        let b = register(&mut c);
        let subject = Subject::User { user_id: "u-alice".into(), device_id: a.device_id.as_deref().map(Name::from) };
        let (user, _) = c.mint_access(at(10), "emb-acme", "acme", subject, scope::RELEASE, None);
        let bearer = |t: &TokenResponse| format!("Bearer {}", t.access_token.secret());
        let req = RevocationRequest::access(&user, "emb-acme");
        assert!(c.revoke(at(11), &req, Some(&bearer(&b))).is_ok(), "200 without effect");
        assert!(c.authenticate(at(12), Some(&format!("Bearer {}", user.secret()))).is_ok());
        c.revoke(at(13), &req, Some(&bearer(&a))).unwrap();
        assert!(c.authenticate(at(14), Some(&format!("Bearer {}", user.secret()))).is_err());
    }

    /// PROTOCOL.md §4 / RFC 7636: app login with PKCE; wrong verifier refused; code reuse refused and revokes.
    #[test]
    fn app_login_with_pkce() {
        let mut c = core();
        let verifier = crate::secret::PkceVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let request =
            crate::authorize::AuthorizationRequest::for_app("roger-mobile", MOBILE_REDIRECT_URI, &verifier, "st1");
        let form = |pw: &str| LoginForm {
            request: request.clone(),
            tenant: "acme".into(),
            username: "alice".into(),
            password: Password::new(pw),
            csrf: "x".into(),
        };
        assert_eq!(c.app_login(at(0), &form("wrong")), Err(LoginFailure::BadCredentials));
        let location = c.app_login(at(1), &form("alice-pass")).unwrap();
        let code = crate::authorize::parse_redirect(&location, MOBILE_REDIRECT_URI, "st1").unwrap();
        let grant = |v: &str| TokenRequest::AuthorizationCode {
            code: code.clone(),
            redirect_uri: MOBILE_REDIRECT_URI.into(),
            code_verifier: v.into(),
            client_id: "roger-mobile".into(),
        };
        assert_eq!(c.token(at(2), grant(&"x".repeat(43)), None).unwrap_err().body.error, E::InvalidGrant);
        let ok = c.token(at(3), grant(verifier.secret()), None).unwrap();
        assert_eq!(ok.scope.as_deref(), Some(scope::APP));
        assert!(c.token(at(4), grant(verifier.secret()), None).is_err(), "one use");
        assert!(c.authenticate(at(5), Some(&format!("Bearer {}", ok.access_token.secret()))).is_err(), "reuse revokes");
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer a b"), None);
    }
}
