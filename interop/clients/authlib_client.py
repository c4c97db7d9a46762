#!/usr/bin/env python3
"""Interop: Authlib (PyPI, pinned in interop/requirements.txt, unmodified) with its `requests` integration against a
running `roger-sim server`. Five flows, one line each (`PASS name` / `FAIL name: why`), exit status 1 if any failed:

  discovery                RFC 8414 §3: Authlib's well-known URL helper and its metadata class with `validate()`;
                           Authlib compares no issuer itself, so the script does (RFC 8414 §3.3, R-META-1), and
                           checks that the comparison refuses a forged issuer (the server's `wrong_issuer` fault)
  device-grant             RFC 8628 printer registration (`emb-interop`, `roger.device`, docs/protocol.md §3.7),
                           approved by the tenant admin while polling; one genuine `slow_down` from the server, and
                           `GET /sim/log` proves the +5 s was honoured (R-POLL-1)
  refresh-rotation         RFC 6749 §6 with rotation (R-TOK-2), the lost-answer grace and reuse detection
                           (R-TOK-3)
  authorization-code-pkce  RFC 6749 §4.1 + RFC 7636 S256 for `roger-mobile` through the HTML login form
                           (docs/protocol.md §3.4), redeemed by Authlib, which checks `state`
  revocation               RFC 7009 of an access token and of a refresh token (docs/protocol.md §3.8)

What Authlib offers and what it does not (1.9.x): its client has no RFC 8628 support at all. The package's
`authlib.oauth2.rfc8628` is the authorization server's side (DeviceCodeGrant, DeviceAuthorizationEndpoint); the
client has no device authorization request and no polling loop. So the device authorization request is a plain
form POST through the `OAuth2Session` (a `requests.Session`), and the polling loop is this script's, a minimal
RFC 8628 §3.5 loop (wait `interval`, on `slow_down` add 5 s for good) around Authlib's own token request,
`OAuth2Session.fetch_token(grant_type=DEVICE_CODE_GRANT_TYPE, device_code=…)`, which builds the request with the
client's `none` authentication and turns the RFC 6749 §5.2 error answers into `OAuthError`s.

Usage: authlib_client.py <api origin> [<ca.pem>]   (the CA from the server's JSON line; omit it for --plain-http,
which Authlib accepts without a switch on loopback: its `is_secure_transport` treats http on a loopback address as
secure, RFC 8252 §7.3). No secret is printed: tokens and codes appear only as lengths or "redacted".
"""

import hashlib
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from html import unescape
from urllib.parse import urljoin, urlsplit

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oauth2.rfc6749.errors import MismatchingStateException
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata, get_well_known_url
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE

MFP_CLIENT = "emb-interop"
PHONE_CLIENT = "roger-mobile"
REDIRECT = "roger://callback"
HERE = os.path.dirname(os.path.abspath(__file__))
APPROVE = os.path.normpath(os.path.join(HERE, "..", "..", ".ci", "approve-code.py"))

if len(sys.argv) not in (2, 3) or not re.fullmatch(r"https?://[^/]+/?", sys.argv[1]):
    sys.exit("usage: authlib_client.py https://127.0.0.1:PORT CA.pem   (or http://127.0.0.1:PORT for --plain-http)")
API = sys.argv[1].rstrip("/")
CA = sys.argv[2] if len(sys.argv) == 3 else None
if API.startswith("https://") and not CA:
    sys.exit("authlib_client.py: give the CA path of the server's JSON line as the second argument")
VERIFY = CA if CA else True
TIMEOUT = 30


def trust(s):
    """Trust the server's CA on a requests session. `trust_env = False` because requests lets REQUESTS_CA_BUNDLE /
    CURL_CA_BUNDLE from the environment override a session's own `verify` (and proxies from the environment would
    not suit a loopback server either)."""
    s.verify = VERIFY
    s.trust_env = False
    return s


class Check(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Check(why)


QUERY = re.compile(r"""[?#][^\s)'"]*""")


def why(e):
    """A one-line reason without secrets: OAuth error codes, statuses and exception types only."""
    if isinstance(e, Check):
        return str(e)
    if isinstance(e, OAuthError):
        return f"server answered {e.error}"
    if isinstance(e, requests.HTTPError):
        return f"HTTP {e.response.status_code} from {urlsplit(e.response.url).path}"
    text = str(e).splitlines()[0] if str(e) else ""
    text = QUERY.sub("?(query redacted)", text)  # URLs in transport errors: no query strings in the output
    return f"{type(e).__name__}: {text}"


def step(what, fn):
    """Runs one step; a failure names the step."""
    try:
        return fn()
    except Check:
        raise
    except Exception as e:
        raise Check(f"{what}: {why(e)}") from None


def expect_oauth_error(fn, error, what):
    try:
        fn()
    except OAuthError as e:
        if e.error == error:
            return
        raise Check(f"{what}: expected {error}, got {e.error}") from None
    except Exception as e:
        raise Check(f"{what}: expected {error}, got {why(e)}") from None
    raise Check(f"{what}: expected {error}, but it succeeded")


def session(client_id, **kw):
    """An Authlib client session for a public client (token_endpoint_auth_method `none`: client_id in the body)."""
    s = OAuth2Session(client_id=client_id, token_endpoint_auth_method="none",
                      revocation_endpoint_auth_method="none", default_timeout=TIMEOUT, **kw)
    return trust(s)


# The control API (/sim/…, loopback only) and the browser use plain requests.
sim_http = trust(requests.Session())


def sim(method, path, body=None):
    r = sim_http.request(method, API + path, json=body, timeout=TIMEOUT)
    if not r.ok:
        raise Check(f"{method} {path}: HTTP {r.status_code}")
    return r.json() if r.content else None


def log_since(seq):
    return sim("GET", f"/sim/log?since={seq}")["entries"]


def next_seq():
    entries = log_since(0)
    return entries[-1]["seq"] + 1 if entries else 0


def approve(user_code):
    """Approves a user code as the tenant admin through the API, with the repository's .ci/approve-code.py."""
    env = dict(os.environ)
    if CA:
        env["SSL_CERT_FILE"] = CA  # urllib in that script trusts the server's CA through this
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost,::1"
    p = subprocess.run([sys.executable, APPROVE, API, user_code], env=env, capture_output=True, text=True,
                       timeout=30)
    if p.returncode != 0:
        raise Check(f"approve-code.py failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    check(p.stdout.strip() == "204", f"approve-code.py answered {p.stdout.strip()}")


def api_status(access_token, path):
    """GET an API resource with the token as RFC 6750 §2.1 Bearer; `401 invalid_token` names the challenge."""
    r = sim_http.get(API + path, headers={"Authorization": f"Bearer {access_token}"}, timeout=TIMEOUT)
    if r.status_code == 401:
        m = re.search(r'error="([^"]+)"', r.headers.get("WWW-Authenticate", ""))
        return f"401 {m.group(1)}" if m else "401"
    return r.status_code


done = {}
failed = False


def flow(name, needs=()):
    def run(fn):
        global failed
        missing = [n for n in needs if not done.get(n)]
        if missing:
            print(f"FAIL {name}: not run, needs {', '.join(missing)}", flush=True)
            failed = True
            return fn
        t = time.monotonic()
        try:
            detail = fn()
            done[name] = True
            print(f"PASS {name} ({time.monotonic() - t:.1f} s{'; ' + detail if detail else ''})", flush=True)
        except Exception as e:  # noqa: BLE001 — every failure becomes one FAIL line
            failed = True
            print(f"FAIL {name}: {why(e)}", flush=True)
        return fn
    return run


meta = None
device = None


def discover():
    """RFC 8414 §3.1 URL from Authlib, §3.2 answer into Authlib's metadata class, its validate(), and §3.3."""
    url = get_well_known_url(API, external=True)
    r = sim_http.get(url, headers={"Accept": "application/json"}, timeout=TIMEOUT)
    r.raise_for_status()
    m = AuthorizationServerMetadata(r.json())
    m.validate()  # RFC 8414 §2: https issuer without query/fragment, endpoints https, response types, PKCE methods …
    # RFC 8414 §3.3: "The "issuer" value returned MUST be identical to the authorization server's issuer identifier
    # value into which the well-known URI string was inserted". Authlib leaves this comparison to the caller.
    if m.issuer != API:
        raise Check("metadata issuer differs from the issuer asked for (RFC 8414 §3.3, R-META-1)")
    return m


@flow("discovery")
def _():
    global meta
    meta = discover()
    for k in ("authorization_endpoint", "token_endpoint", "device_authorization_endpoint", "revocation_endpoint"):
        check(isinstance(meta.get(k), str) and meta[k].startswith(API + "/"), f"{k} missing or not on the issuer origin")
    check("S256" in (meta.code_challenge_methods_supported or []), "PKCE S256 not advertised")
    check(DEVICE_CODE_GRANT_TYPE in meta.grant_types_supported, "device_code grant not advertised")
    # Forged metadata (the server's `wrong_issuer` fault names another port) must be refused.
    sim("POST", "/sim/faults", {"seed": 1, "rules": [
        {"route": "/.well-known/oauth-authorization-server", "fault": "wrong_issuer", "count": 1}]})
    try:
        discover()
        raise Check("metadata with a foreign issuer was accepted")
    except Check as e:
        check("RFC 8414 §3.3" in str(e), str(e))
    finally:
        sim("DELETE", "/sim/faults")


@flow("device-grant", needs=["discovery"])
def _():
    global device
    mfp = session(MFP_CLIENT)
    serial = f"SN-{secrets.token_hex(4)}"
    # RFC 8628 §3.1 (Authlib has no client helper for it): a form POST with Roger's extension parameters.
    r = mfp.post(meta["device_authorization_endpoint"], withhold_token=True, data={
        "client_id": MFP_CLIENT, "scope": "roger.device", "device_model": "authlib", "device_serial": serial})
    check(r.status_code == 200, f"device authorization: HTTP {r.status_code}")
    da = r.json()
    check(da.get("interval") == 5, f"interval {da.get('interval')}, expected 5")
    check(re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{8}", da["user_code"]), "user_code not of the RFC 8628 §6.1 alphabet")
    check(da.get("verification_uri_complete", "").startswith(API + "/device?"), "verification_uri_complete off-origin")
    tag = hashlib.sha256(da["device_code"].encode()).hexdigest()[:12]  # how /sim/log names this code
    since = next_seq()

    # The loop waits one interval before its first poll. A poll of the same code from elsewhere half an interval
    # in (as a second, impatient poller would) makes that first poll arrive ~2.5 s after the previous one: the server
    # answers a genuine `slow_down` (R-POLL-1) and adds 5 s to this code's interval.
    trouble = []

    def early_poll_then_approve():
        try:
            time.sleep(2.5)
            p = sim_http.post(meta["token_endpoint"], timeout=TIMEOUT, data={
                "grant_type": DEVICE_CODE_GRANT_TYPE, "device_code": da["device_code"], "client_id": MFP_CLIENT})
            check(p.status_code == 400 and p.json().get("error") == "authorization_pending",
                  f"early poll answered {p.status_code}")
            deadline = time.monotonic() + 30
            while not any(e.get("code") == tag and e.get("outcome") == "slow_down" for e in log_since(since)):
                check(time.monotonic() < deadline, "the poller never drew a slow_down")
                time.sleep(0.2)
            approve(da["user_code"])
        except Exception as e:  # noqa: BLE001
            trouble.append(e)

    helper = threading.Thread(target=early_poll_then_approve, daemon=True)
    helper.start()

    # RFC 8628 §3.5 polling around Authlib's token request.
    interval = da.get("interval", 5)
    deadline = time.monotonic() + min(da["expires_in"], 90)
    tokens = None
    while tokens is None:
        time.sleep(interval)
        if trouble:
            raise trouble[0]
        check(time.monotonic() < deadline, "no token before the deadline")
        try:
            tokens = mfp.fetch_token(meta["token_endpoint"], grant_type=DEVICE_CODE_GRANT_TYPE,
                                     device_code=da["device_code"])
        except OAuthError as e:
            if e.error == "authorization_pending":
                continue
            if e.error == "slow_down":
                interval += 5  # "increased by 5 seconds for this and all subsequent requests"
                continue
            raise
    helper.join(timeout=30)
    if trouble:
        raise trouble[0]

    check(tokens.get("token_type", "").lower() == "bearer", f"token_type {tokens.get('token_type')}")
    check(tokens.get("scope") == "roger.device", f"scope {tokens.get('scope')}")
    check(isinstance(tokens.get("refresh_token"), str), "no refresh_token")
    check(tokens.get("device_id") and tokens.get("tenant_id") == "acme", "device_id / tenant_id missing")
    check(tokens.get("expires_at"), "Authlib computed no expires_at (expires_in missing)")
    # The session now carries the token: Authlib adds the Bearer header itself (RFC 6750 §2.1).
    d = mfp.get(API + "/api/v1/device")
    check(d.status_code == 200 and d.json().get("model") == "authlib" and d.json().get("serial") == serial,
          "GET /api/v1/device does not show the registered model and serial")

    # The cadence, as the server measured it (docs/protocol.md §6.1: gaps between arrivals of polls of this code).
    polls = [e for e in log_since(since) if e.get("code") == tag and e.get("grant_type") == DEVICE_CODE_GRANT_TYPE]
    desc = ", ".join(
        f"{e.get('outcome') or e['status']}"
        + (f" +{e['gap_ms'] / 1000:.1f}s" if e.get("gap_ms") is not None else "")
        + f" (interval {e.get('interval_s')}s)" for e in polls)
    slows = [i for i, e in enumerate(polls) if e.get("outcome") == "slow_down"]
    check(len(slows) == 1, f"expected exactly one slow_down: {desc}")
    check(len(polls) >= slows[0] + 2 and polls[-1]["status"] == 200, f"no successful poll after slow_down: {desc}")
    for e in polls[slows[0] + 1:]:
        check(e.get("interval_s") == 10, f"server interval after slow_down is {e.get('interval_s')} s, not 5 + 5: {desc}")
        check(e["gap_ms"] >= 10_000 - 500, f"poll {e['gap_ms']} ms after the previous one, below 10 s - 0.5 s: {desc}")
    device = tokens
    return f"polls as the server saw them: {desc}"


@flow("refresh-rotation", needs=["device-grant"])
def _():
    mfp = session(MFP_CLIENT)
    rt0 = device["refresh_token"]
    lost = dict(step("first refresh", lambda: mfp.refresh_token(meta["token_endpoint"], refresh_token=rt0)))
    # Authlib keeps the old refresh token when an answer carries none; the answer must carry a new one (R-TOK-2).
    check(lost.get("refresh_token") and lost["refresh_token"] != rt0, "R-TOK-2: the refresh token was not rotated")
    # As after a lost answer: the old token is presented again before its successor was used. R-TOK-3 keeps it
    # redeemable and mints a fresh set (retiring the unused successor).
    r1 = dict(step("R-TOK-3: the old refresh token resent before its successor was used",
                   lambda: mfp.refresh_token(meta["token_endpoint"], refresh_token=rt0)))
    check(r1.get("refresh_token") not in (None, rt0, lost["refresh_token"]),
          "R-TOK-3: the resent refresh did not mint a fresh set")
    check(r1.get("device_id") == device["device_id"], "the refreshed tokens name another device")
    check(r1.get("scope") == "roger.device", f"scope {r1.get('scope')}")
    check(api_status(r1["access_token"], "/api/v1/device") == 200, "the new access token does not work")
    # Use the new refresh token: from now on the old one is retired for good (R-TOK-3).
    r2 = dict(step("refresh with the newest token",
                   lambda: mfp.refresh_token(meta["token_endpoint"], refresh_token=r1["refresh_token"])))
    check(r2.get("refresh_token") not in (None, rt0, r1["refresh_token"]), "R-TOK-2: second refresh not rotated")
    expect_oauth_error(lambda: mfp.refresh_token(meta["token_endpoint"], refresh_token=rt0), "invalid_grant",
                       "R-TOK-3: the old refresh token presented again")
    # R-TOK-3: that reuse revokes the whole family, the newest tokens included.
    expect_oauth_error(lambda: mfp.refresh_token(meta["token_endpoint"], refresh_token=r2["refresh_token"]),
                       "invalid_grant", "R-TOK-3: newest refresh token after reuse")
    s = api_status(r2["access_token"], "/api/v1/device")
    check(s == "401 invalid_token", f"R-TOK-3: newest access token after reuse answered {s}")


def authorization_request():
    """Authlib builds the request: PKCE S256 from its verifier (RFC 7636 §4.1–4.2) and a random state."""
    phone = session(PHONE_CLIENT, redirect_uri=REDIRECT, scope="roger.app", code_challenge_method="S256")
    verifier = generate_token(64)  # 64 characters of [A-Za-z0-9]: within RFC 7636 §4.1's 43–128
    url, state = phone.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
    return phone, url, state, verifier


def sign_in(url, username, password):
    """The browser part of RFC 6749 §4.1.1–4.1.2: GET the form, keep the cookie, read the hidden fields (the CSRF
    token included), POST them with the tenant and the credentials, and stop at the 302 to the app's private-use
    scheme (RFC 8252 §7.1). Returns that Location."""
    browser = trust(requests.Session())  # its cookie jar keeps roger_csrf
    form = browser.get(url, allow_redirects=False, timeout=TIMEOUT)
    check(form.status_code == 200, f"GET the login form: HTTP {form.status_code}")
    check("roger_csrf" in browser.cookies, "no CSRF cookie")
    action = re.search(r'<form[^>]*\baction="([^"]*)"', form.text)
    check(action, "no form action")
    fields = []
    for tag in re.findall(r"<input ([^>]*)>", form.text):
        name = re.search(r'\bname="([^"]*)"', tag)
        value = re.search(r'\bvalue="([^"]*)"', tag)
        if 'type="hidden"' in tag and name:
            fields.append((name.group(1), unescape(value.group(1) if value else "")))
    check(any(k == "csrf_token" for k, _ in fields), "no csrf_token field")
    fields += [("tenant", "acme"), ("username", username), ("password", password)]
    post = browser.post(urljoin(url, unescape(action.group(1))), data=fields, allow_redirects=False, timeout=TIMEOUT)
    check(post.status_code == 302, f"POST the login form: HTTP {post.status_code} (wrong credentials answer 200)")
    location = post.headers["Location"]
    check(location.startswith(REDIRECT + "?"), "redirect to another URI")
    return location


@flow("authorization-code-pkce", needs=["discovery"])
def _():
    phone, url, state, verifier = authorization_request()
    q = dict(p.split("=", 1) for p in urlsplit(url).query.split("&"))
    check(q.get("code_challenge_method") == "S256" and len(q.get("code_challenge", "")) == 43, "Authlib sent no S256")
    location = sign_in(url, "alice", "alice-pass")
    # Authlib refuses an answer whose state is not the one it expects (before sending anything) …
    try:
        phone.fetch_token(meta["token_endpoint"], authorization_response=location, code_verifier=verifier,
                          state=generate_token(30))
        raise Check("Authlib accepted a foreign state")
    except MismatchingStateException:
        pass
    # … and with the right one redeems the code with its verifier (redirect_uri from the session).
    tokens = phone.fetch_token(meta["token_endpoint"], authorization_response=location, code_verifier=verifier,
                               state=state)
    check(tokens.get("scope") == "roger.app" and tokens.get("token_type", "").lower() == "bearer",
          f"scope {tokens.get('scope')}, type {tokens.get('token_type')}")
    check((tokens.get("user") or {}).get("username") == "alice" and tokens.get("tenant_id") == "acme",
          "user / tenant_id missing")
    check(isinstance(tokens.get("refresh_token"), str), "no refresh_token for the app")
    r = phone.get(API + "/api/v1/jobs")  # Authlib's bearer auth on its session
    check(r.status_code == 200, f"the app token does not work: HTTP {r.status_code}")
    # The code redeems once, and its second redemption revokes what the first one issued (RFC 6749 §4.1.2,
    # docs/protocol.md §3.5.1).
    expect_oauth_error(lambda: phone.fetch_token(meta["token_endpoint"], authorization_response=location,
                                                 code_verifier=verifier, state=state),
                       "invalid_grant", "second redemption of the code")
    expect_oauth_error(lambda: phone.refresh_token(meta["token_endpoint"], refresh_token=tokens["refresh_token"]),
                       "invalid_grant", "refresh token issued from a twice-redeemed code")


@flow("revocation", needs=["authorization-code-pkce"])
def _():
    # A live family: sign in again and refresh once.
    phone, url, state, verifier = authorization_request()
    a = dict(step("sign in", lambda: phone.fetch_token(
        meta["token_endpoint"], authorization_response=sign_in(url, "alice", "alice-pass"), code_verifier=verifier,
        state=state)))
    b = dict(step("refresh", lambda: phone.refresh_token(meta["token_endpoint"], refresh_token=a["refresh_token"])))
    check(b["refresh_token"] != a["refresh_token"], "R-TOK-2: not rotated")
    rev = meta["revocation_endpoint"]
    # RFC 7009 §2.1: the access token … (Authlib returns the raw answer; §2.2: 200 means revoked or unknown)
    r = phone.revoke_token(rev, token=b["access_token"], token_type_hint="access_token")
    check(r.status_code == 200, f"revoking the access token: HTTP {r.status_code}")
    s = api_status(b["access_token"], "/api/v1/jobs")
    check(s == "401 invalid_token", f"revoked access token answered {s}")
    # … then the refresh token, which takes its family along (docs/protocol.md §3.8).
    r = phone.revoke_token(rev, token=b["refresh_token"], token_type_hint="refresh_token")
    check(r.status_code == 200, f"revoking the refresh token: HTTP {r.status_code}")
    expect_oauth_error(lambda: phone.refresh_token(meta["token_endpoint"], refresh_token=b["refresh_token"]),
                       "invalid_grant", "refresh with the revoked token")
    s = api_status(a["access_token"], "/api/v1/jobs")
    check(s == "401 invalid_token", f"an access token of the revoked family answered {s}")
    # RFC 7009 §2.2: unknown and already revoked tokens are answered 200 as well.
    for token in (b["refresh_token"], secrets.token_urlsafe(32)):
        r = phone.revoke_token(rev, token=token)
        check(r.status_code == 200, f"revoking a dead or unknown token: HTTP {r.status_code}")


sys.exit(1 if failed else 0)
