#!/usr/bin/env node
// Interop: panva's `openid-client` (v6, pinned in interop/package.json, unmodified) against a running
// `roger-sim server`. Five flows, one line each (`PASS name` / `FAIL name: why`), exit status 1 if any failed:
//
//   discovery                RFC 8414 §3 with the library's own issuer check (`algorithm: 'oauth2'`), and the same
//                            check refusing a forged issuer (the server's `wrong_issuer` fault, R-META-1)
//   device-grant             RFC 8628 printer registration (`emb-interop`, `roger.device`, docs/protocol.md §3.7),
//                            approved by the tenant admin while the library's own loop polls; one genuine
//                            `slow_down` from the server, and `GET /sim/log` proves the library added 5 s (R-POLL-1)
//   refresh-rotation         RFC 6749 §6 with rotation (R-TOK-2), the lost-answer grace and reuse detection
//                            (R-TOK-3)
//   authorization-code-pkce  RFC 6749 §4.1 + RFC 7636 S256 for `roger-mobile` through the HTML login form
//                            (docs/protocol.md §3.4), redeemed by the library, which checks `state`
//   revocation               RFC 7009 of an access token and of a refresh token (docs/protocol.md §3.8)
//
// Usage: NODE_EXTRA_CA_CERTS=<ca from the server's JSON line> node openid_client.mjs <api origin>
// Against a `--plain-http` server (loopback tests only) the library needs its explicit opt-in
// `execute: [allowInsecureRequests]`; this script passes it only for an `http://` origin.
// No secret is printed: tokens and codes appear only as lengths or "redacted".

import * as client from 'openid-client';
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const api = (process.argv[2] ?? '').replace(/\/+$/, '');
if (!/^https?:\/\/[^/]+$/.test(api)) {
  console.error('usage: NODE_EXTRA_CA_CERTS=CA.pem node openid_client.mjs https://127.0.0.1:PORT');
  process.exit(2);
}
const plain = api.startsWith('http://');
const ca = process.env.NODE_EXTRA_CA_CERTS;
if (!plain && !ca) {
  console.error('openid_client.mjs: set NODE_EXTRA_CA_CERTS to the CA path of the server\'s JSON line');
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const approveScript = path.resolve(here, '../../.ci/approve-code.py');
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const MFP_CLIENT = 'emb-interop';
const PHONE_CLIENT = 'roger-mobile';
const REDIRECT = 'roger://callback';
// The library refuses plain http unless told otherwise (RFC 6749 §3.1 / §10.9: TLS everywhere).
const execute = plain ? [client.allowInsecureRequests] : [];

// ---------------------------------------------------------------------------------------------------------------
// Helpers

class Check extends Error {}
function check(cond, why) {
  if (!cond) throw new Check(why);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sha256hex = (s) => createHash('sha256').update(s).digest('hex');

/** A one-line reason without secrets: OAuth error codes, statuses and library error codes only. */
function why(e) {
  if (e instanceof Check) return e.message;
  if (e instanceof client.ResponseBodyError) return `server answered ${e.status} ${e.error}`;
  if (e instanceof client.WWWAuthenticateChallengeError) return `server answered ${e.status} with a challenge`;
  if (e instanceof client.AuthorizationResponseError) return `authorization response error ${e.error}`;
  const code = e?.code ? ` [${e.code}]` : '';
  const c = e?.cause;
  const cause = c?.code || c?.message ? ` (cause ${[c.code, c.message].filter(Boolean).join(': ')})` : '';
  return `${e?.name ?? 'Error'}: ${e?.message ?? String(e)}${code}${cause}`.replace(/\s+/g, ' ');
}

/** Runs one step; a failure names the step. */
async function step(what, fn) {
  try {
    return await fn();
  } catch (e) {
    throw e instanceof Check ? e : new Check(`${what}: ${why(e)}`);
  }
}

/** Expects `fn` to fail with the OAuth error `error` (RFC 6749 §5.2) as the library reports it. */
async function expectOAuthError(fn, error, what) {
  try {
    await fn();
  } catch (e) {
    if (e instanceof client.ResponseBodyError && e.error === error) return;
    throw new Check(`${what}: expected ${error}, got ${why(e)}`);
  }
  throw new Check(`${what}: expected ${error}, but it succeeded`);
}

/** The server's control API (`/sim/…`, loopback only), with plain fetch; NODE_EXTRA_CA_CERTS covers TLS. */
async function sim(method, p, body) {
  const r = await fetch(api + p, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Check(`${method} ${p}: HTTP ${r.status}`);
  return text ? JSON.parse(text) : null;
}
async function logSince(seq) {
  return (await sim('GET', `/sim/log?since=${seq}`)).entries;
}
async function nextSeq() {
  const entries = await logSince(0);
  return entries.length ? entries[entries.length - 1].seq + 1 : 0;
}

/** Approves a user code as the tenant admin through the API, with the repository's .ci/approve-code.py. */
function approve(userCode) {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    if (ca) env.SSL_CERT_FILE = ca; // Python's urllib trusts the server's CA through this
    env.no_proxy = env.NO_PROXY = '127.0.0.1,localhost,::1';
    execFile('python3', [approveScript, api, userCode], { env, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Check(`approve-code.py failed: ${(stderr || err.message).trim().split('\n').pop()}`));
      else if (stdout.trim() !== '204') reject(new Check(`approve-code.py answered ${stdout.trim()}`));
      else resolve();
    });
  });
}

/** GET an API resource with the library's bearer helper (RFC 6750 §2.1); returns the status. */
async function apiStatus(config, accessToken, p) {
  try {
    const r = await client.fetchProtectedResource(config, accessToken, new URL(api + p), 'GET');
    await r.body?.cancel();
    return r.status;
  } catch (e) {
    // The library turns `401` + `WWW-Authenticate` into an error carrying the parsed challenge.
    if (e instanceof client.WWWAuthenticateChallengeError) {
      const err = e.cause?.[0]?.parameters?.error;
      return `${e.status}${err ? ' ' + err : ''}`;
    }
    throw e;
  }
}

const state = {};
let failed = false;
async function flow(name, needs, fn) {
  const missing = needs.filter((n) => !state[n]);
  if (missing.length) {
    console.log(`FAIL ${name}: not run, needs ${missing.join(', ')}`);
    failed = true;
    return;
  }
  const t = Date.now();
  try {
    const detail = await fn();
    state[name] = true;
    console.log(`PASS ${name} (${((Date.now() - t) / 1000).toFixed(1)} s${detail ? '; ' + detail : ''})`);
  } catch (e) {
    failed = true;
    console.log(`FAIL ${name}: ${why(e)}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Flows

let mfp, phone, device;

await flow('discovery', [], async () => {
  // RFC 8414 §3.1: the library builds {issuer}/.well-known/oauth-authorization-server itself and, §3.3, refuses
  // metadata whose `issuer` is not identical to the issuer it was asked for.
  mfp = await client.discovery(new URL(api), MFP_CLIENT, undefined, client.None(), { algorithm: 'oauth2', execute });
  const m = mfp.serverMetadata();
  check(m.issuer === api, 'issuer differs from the API origin (R-META-1)');
  for (const k of ['authorization_endpoint', 'token_endpoint', 'device_authorization_endpoint', 'revocation_endpoint']) {
    check(typeof m[k] === 'string' && m[k].startsWith(api + '/'), `${k} missing or not on the issuer origin`);
  }
  check(m.supportsPKCE('S256'), 'metadata does not advertise PKCE S256');
  check(m.grant_types_supported?.includes(DEVICE_GRANT), 'device_code grant not advertised');

  // The same call against forged metadata (the server's `wrong_issuer` fault names another port) must fail.
  await sim('POST', '/sim/faults', {
    seed: 1,
    rules: [{ route: '/.well-known/oauth-authorization-server', fault: 'wrong_issuer', count: 1 }],
  });
  try {
    await client.discovery(new URL(api), MFP_CLIENT, undefined, client.None(), { algorithm: 'oauth2', execute });
    throw new Check('the library accepted metadata with a foreign issuer');
  } catch (e) {
    if (e instanceof Check) throw e;
    check(e?.code === 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED', `forged issuer refused for the wrong reason: ${why(e)}`);
  } finally {
    await sim('DELETE', '/sim/faults');
  }
  phone = await client.discovery(new URL(api), PHONE_CLIENT, undefined, client.None(), { algorithm: 'oauth2', execute });
});

await flow('device-grant', ['discovery'], async () => {
  const serial = `SN-${randomBytes(4).toString('hex')}`;
  // RFC 8628 §3.1 with Roger's two extension parameters (docs/protocol.md §3.7).
  const da = await client.initiateDeviceAuthorization(mfp, {
    scope: 'roger.device',
    device_model: 'openid-client',
    device_serial: serial,
  });
  check(da.interval === 5, `interval ${da.interval}, expected 5`);
  check(/^[BCDFGHJKLMNPQRSTVWXZ]{8}$/.test(da.user_code), 'user_code not 8 letters of the RFC 8628 §6.1 alphabet');
  check(da.verification_uri_complete?.startsWith(api + '/device?'), 'verification_uri_complete not on the API origin');
  const tag = sha256hex(da.device_code).slice(0, 12); // how /sim/log names this code
  const since = await nextSeq();

  // The library waits one interval and then polls. A poll of the same code from outside the library half an
  // interval earlier (as a second, impatient poller would) makes the library's first poll arrive ~2.5 s after
  // the previous one: the server answers a genuine `slow_down` (R-POLL-1) and adds 5 s to this code's interval.
  const abort = new AbortController();
  const approval = (async () => {
    await sleep(2500);
    const body = new URLSearchParams({ grant_type: DEVICE_GRANT, device_code: da.device_code, client_id: MFP_CLIENT });
    const r = await fetch(mfp.serverMetadata().token_endpoint, { method: 'POST', body });
    const j = await r.json();
    check(r.status === 400 && j.error === 'authorization_pending', `early poll answered ${r.status} ${j.error}`);
    // Approve as the admin once the library has received its slow_down.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const seen = (await logSince(since)).some((e) => e.code === tag && e.outcome === 'slow_down');
      if (seen) break;
      check(Date.now() < deadline, 'the library never drew a slow_down');
      await sleep(200);
    }
    await approve(da.user_code);
  })().catch((e) => {
    abort.abort(e);
    throw e;
  });
  approval.catch(() => {}); // awaited below; this only keeps Node from calling an early rejection unhandled

  let tokens;
  try {
    tokens = await client.pollDeviceAuthorizationGrant(mfp, da, undefined, {
      signal: AbortSignal.any([abort.signal, AbortSignal.timeout(90_000)]),
    });
  } catch (e) {
    await approval.catch(() => {});
    throw abort.signal.aborted ? abort.signal.reason : e;
  }
  await approval;

  check(tokens.token_type === 'bearer', `token_type ${tokens.token_type}`);
  check(tokens.scope === 'roger.device', `scope ${tokens.scope}`);
  check(typeof tokens.refresh_token === 'string', 'no refresh_token');
  check(typeof tokens.device_id === 'string' && tokens.tenant_id === 'acme', 'device_id / tenant_id missing');
  check(tokens.expiresIn() > 0, 'expires_in missing');
  const r = await client.fetchProtectedResource(mfp, tokens.access_token, new URL(api + '/api/v1/device'), 'GET');
  const dev = await r.json();
  check(r.status === 200 && dev.model === 'openid-client' && dev.serial === serial, 'GET /api/v1/device does not show the registered model and serial');

  // The cadence, as the server measured it (docs/protocol.md §6.1: gaps between arrivals of polls of this code).
  const polls = (await logSince(since)).filter((e) => e.code === tag && e.grant_type === DEVICE_GRANT);
  const slow = polls.findIndex((e) => e.outcome === 'slow_down');
  const desc = polls
    .map((e) => `${e.outcome ?? e.status}${e.gap_ms === undefined ? '' : ` +${(e.gap_ms / 1000).toFixed(1)}s`} (interval ${e.interval_s}s)`)
    .join(', ');
  check(polls.filter((e) => e.outcome === 'slow_down').length === 1, `expected exactly one slow_down: ${desc}`);
  check(polls.length >= slow + 2 && polls[polls.length - 1].status === 200, `no successful poll after slow_down: ${desc}`);
  for (const e of polls.slice(slow + 1)) {
    check(e.interval_s === 10, `server interval after slow_down is ${e.interval_s} s, expected 5 + 5: ${desc}`);
    check(e.gap_ms >= 10_000 - 500, `poll ${e.gap_ms} ms after the previous one, below 10 s − 0.5 s: ${desc}`);
  }
  device = tokens;
  return `polls as the server saw them: ${desc}`;
});

await flow('refresh-rotation', ['device-grant'], async () => {
  const rt0 = device.refresh_token;
  const lost = await step('first refresh', () => client.refreshTokenGrant(mfp, rt0));
  check(typeof lost.refresh_token === 'string' && lost.refresh_token !== rt0, 'R-TOK-2: the refresh token was not rotated');
  // As after a lost answer: the old token is presented again before its successor was used. R-TOK-3 keeps it
  // redeemable and mints a fresh set (retiring the unused successor).
  const r1 = await step('R-TOK-3: the old refresh token resent before its successor was used', () =>
    client.refreshTokenGrant(mfp, rt0),
  );
  check(r1.refresh_token !== rt0 && r1.refresh_token !== lost.refresh_token, 'R-TOK-3: the resent refresh did not mint a fresh set');
  check(r1.device_id === device.device_id, 'the refreshed tokens name another device');
  check(r1.scope === 'roger.device', `scope ${r1.scope}`);
  check((await apiStatus(mfp, r1.access_token, '/api/v1/device')) === 200, 'the new access token does not work');
  // Use the new refresh token: from now on the old one is retired for good (R-TOK-3).
  const r2 = await step('refresh with the newest token', () => client.refreshTokenGrant(mfp, r1.refresh_token));
  check(r2.refresh_token !== r1.refresh_token && r2.refresh_token !== rt0, 'R-TOK-2: second refresh not rotated');
  await expectOAuthError(() => client.refreshTokenGrant(mfp, rt0), 'invalid_grant', 'R-TOK-3: the old refresh token presented again');
  // R-TOK-3: that reuse revokes the whole family, including the newest tokens.
  await expectOAuthError(() => client.refreshTokenGrant(mfp, r2.refresh_token), 'invalid_grant', 'R-TOK-3: newest refresh token after reuse');
  const s = await apiStatus(mfp, r2.access_token, '/api/v1/device');
  check(s === '401 invalid_token', `R-TOK-3: newest access token after reuse answered ${s}`);
});

/**
 * The browser part of RFC 6749 §4.1.1–4.1.2: GET the login form the library's URL points at, keep the cookie,
 * read the hidden fields (the CSRF token included), POST them with the tenant and the user's credentials, and stop
 * at the 302 to the app's private-use scheme (RFC 8252 §7.1). Returns that Location as a URL.
 */
async function signIn(url, username, password) {
  const form = await fetch(url, { redirect: 'manual' });
  check(form.status === 200, `GET the login form: HTTP ${form.status}`);
  const cookie = form.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  check(cookie.includes('roger_csrf='), 'no CSRF cookie');
  const html = await form.text();
  const action = /<form[^>]*\baction="([^"]*)"/.exec(html)?.[1];
  check(action, 'no form action');
  const fields = new URLSearchParams();
  for (const [, tag] of html.matchAll(/<input ([^>]*)>/g)) {
    const name = /\bname="([^"]*)"/.exec(tag)?.[1];
    const value = /\bvalue="([^"]*)"/.exec(tag)?.[1];
    if (/\btype="hidden"/.test(tag) && name) fields.append(name, unescapeHtml(value ?? ''));
  }
  check(fields.has('csrf_token'), 'no csrf_token field');
  fields.append('tenant', 'acme');
  fields.append('username', username);
  fields.append('password', password);
  const post = await fetch(new URL(action, url), {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
    body: fields,
  });
  check(post.status === 302, `POST the login form: HTTP ${post.status} (wrong credentials answer 200)`);
  const location = new URL(post.headers.get('location'));
  check(`${location.protocol}//${location.host}${location.pathname}` === REDIRECT, 'redirect to another URI');
  return location;
}

/** The library's PKCE (RFC 7636 §4.1–4.2) and state (RFC 6749 §10.12) helpers build the authorization request. */
async function authorizationRequest() {
  const verifier = client.randomPKCECodeVerifier();
  const expectedState = client.randomState();
  const url = client.buildAuthorizationUrl(phone, {
    redirect_uri: REDIRECT,
    scope: 'roger.app',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state: expectedState,
  });
  return { url, checks: { pkceCodeVerifier: verifier, expectedState } };
}

await flow('authorization-code-pkce', ['discovery'], async () => {
  const { url, checks } = await authorizationRequest();
  check(url.searchParams.get('code_challenge_method') === 'S256', 'the library did not send S256');
  const location = await signIn(url, 'alice', 'alice-pass');

  // The library refuses an answer whose state is not the one it expects (before sending anything) …
  try {
    await client.authorizationCodeGrant(phone, location, { ...checks, expectedState: client.randomState() });
    throw new Check('the library accepted a foreign state');
  } catch (e) {
    if (e instanceof Check) throw e;
    check(e?.code === 'OAUTH_INVALID_RESPONSE', `foreign state refused for the wrong reason: ${why(e)}`);
  }
  // … and with the right one redeems the code with its verifier (redirect_uri is the URL it is given, stripped).
  const tokens = await client.authorizationCodeGrant(phone, location, checks);
  check(tokens.scope === 'roger.app' && tokens.token_type === 'bearer', `scope ${tokens.scope}, type ${tokens.token_type}`);
  check(tokens.user?.username === 'alice' && tokens.tenant_id === 'acme', 'user / tenant_id missing');
  check(typeof tokens.refresh_token === 'string', 'no refresh_token for the app');
  check((await apiStatus(phone, tokens.access_token, '/api/v1/jobs')) === 200, 'the app token does not work');
  // The code redeems once, and its second redemption revokes what the first one issued (RFC 6749 §4.1.2,
  // docs/protocol.md §3.5.1).
  await expectOAuthError(() => client.authorizationCodeGrant(phone, location, checks), 'invalid_grant', 'second redemption of the code');
  await expectOAuthError(
    () => client.refreshTokenGrant(phone, tokens.refresh_token),
    'invalid_grant',
    'refresh token issued from a twice-redeemed code',
  );
});

await flow('revocation', ['authorization-code-pkce'], async () => {
  // A live family: sign in again and refresh once.
  const { url, checks } = await authorizationRequest();
  const a = await step('sign in', async () => client.authorizationCodeGrant(phone, await signIn(url, 'alice', 'alice-pass'), checks));
  const b = await step('refresh', () => client.refreshTokenGrant(phone, a.refresh_token));
  check(b.refresh_token !== a.refresh_token, 'R-TOK-2: not rotated');
  // RFC 7009 §2.1: the access token …
  await step('revoke the access token', () => client.tokenRevocation(phone, b.access_token, { token_type_hint: 'access_token' }));
  let s = await apiStatus(phone, b.access_token, '/api/v1/jobs');
  check(s === '401 invalid_token', `revoked access token answered ${s}`);
  // … then the refresh token, which takes its family along (docs/protocol.md §3.8).
  await step('revoke the refresh token', () => client.tokenRevocation(phone, b.refresh_token, { token_type_hint: 'refresh_token' }));
  await expectOAuthError(() => client.refreshTokenGrant(phone, b.refresh_token), 'invalid_grant', 'refresh with the revoked token');
  s = await apiStatus(phone, a.access_token, '/api/v1/jobs');
  check(s === '401 invalid_token', `an access token of the revoked family answered ${s}`);
  // RFC 7009 §2.2: unknown and already revoked tokens are answered 200 as well.
  await step('revoke a revoked token', () => client.tokenRevocation(phone, b.refresh_token, { token_type_hint: 'refresh_token' }));
  await step('revoke an unknown token', () => client.tokenRevocation(phone, randomBytes(32).toString('base64url')));
});

function unescapeHtml(s) {
  return s
    .replaceAll('&quot;', '"')
    .replaceAll('&#39;', "'")
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&amp;', '&');
}

process.exit(failed ? 1 : 0);
