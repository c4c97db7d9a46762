// The user's step of an RFC 8628 device grant on oidc-provider's own pages, as a browser does it: open the
// verification page (RFC 8628 §3.3), type the user code into its form, confirm the device, sign in through the
// devInteractions login form (any name, any password), give consent, and land on the success page.
//
//   node interop/oidc-provider/approve.mjs --issuer URL --user-code CODE [--user NAME] [--deny]
//
// --deny presses the confirmation page's "[ Abort ]" button instead: the device's next poll gets access_denied
// (RFC 8628 §3.5) and the page says the sign-in was interrupted.
//
// Node 20's fetch and nothing else; cookies are kept by hand (name, value, path; RFC 6265 §5.1.4 path match,
// deleted when expired), redirects are followed by hand (303 and 302 turn into GET, 307/308 repeat the request).
// Exit 0 on the success page (or, with --deny, the "interrupted" page), 1 with a message on stderr otherwise.
// Progress goes to stderr; the one line on stdout is the outcome.

import { parseArgs } from 'node:util';

const USAGE = 'usage: approve.mjs --issuer URL --user-code CODE [--user NAME] [--deny]';

function fail(message) {
  console.error(`approve.mjs: ${message}`);
  process.exit(1);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      issuer: { type: 'string' },
      'user-code': { type: 'string' },
      user: { type: 'string', default: 'alice' },
      deny: { type: 'boolean', default: false },
    },
  }));
} catch (e) {
  fail(`${e.message}\n${USAGE}`);
}
if (!args.issuer || !args['user-code']) fail(USAGE);

const issuer = args.issuer.replace(/\/+$/, '');
const userCode = args['user-code'];
const TIMEOUT_MS = 10_000;
const MAX_STEPS = 20;

// ---- cookies ---------------------------------------------------------------------------------------------

/** name + '\0' + path → { name, value, path } */
const jar = new Map();

function storeCookies(response, url) {
  for (const line of response.headers.getSetCookie()) {
    const [pair, ...attrs] = line.split(';');
    const eq = pair.indexOf('=');
    if (eq <= 0) continue;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    // RFC 6265 §5.1.4 default path: the request path up to its last '/'.
    let path = url.pathname.slice(0, url.pathname.lastIndexOf('/')) || '/';
    let expired = false;
    for (const attr of attrs) {
      const [k, v = ''] = attr.split('=');
      const key = k.trim().toLowerCase();
      if (key === 'path' && v.trim().startsWith('/')) path = v.trim();
      if (key === 'max-age' && Number(v) <= 0) expired = true;
      if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true;
    }
    const id = `${name}\0${path}`;
    if (expired) jar.delete(id);
    else jar.set(id, { name, value, path });
  }
}

function cookieHeader(url) {
  const matches = (path) => url.pathname === path
    || (url.pathname.startsWith(path) && (path.endsWith('/') || url.pathname[path.length] === '/'));
  // Longer paths first (RFC 6265 §5.4 step 2).
  const cookies = [...jar.values()].filter((c) => matches(c.path)).sort((a, b) => b.path.length - a.path.length);
  return cookies.map((c) => `${c.name}=${c.value}`).join('; ');
}

// ---- HTTP ------------------------------------------------------------------------------------------------

/** One request with the jar's cookies; follows redirects by hand. Returns { url, status, html }. */
async function browse(method, target, form) {
  let url = new URL(target, issuer);
  let body = form ? new URLSearchParams(form).toString() : undefined;
  for (let hop = 0; hop < MAX_STEPS; hop += 1) {
    if (url.origin !== new URL(issuer).origin) fail(`redirected off the issuer's origin to ${url.origin}`);
    const headers = { accept: 'text/html' };
    const cookie = cookieHeader(url);
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    let response;
    try {
      response = await fetch(url, {
        method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (e) {
      fail(`${method} ${url.pathname}: ${e.cause?.code ?? e.message}`);
    }
    storeCookies(response, url);
    const html = await response.text();
    console.error(`approve.mjs: ${method} ${url.pathname} -> ${response.status}`);
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && location) {
      url = new URL(location, url);
      if (response.status !== 307 && response.status !== 308) {
        method = 'GET';
        body = undefined;
      }
      continue;
    }
    return { url, status: response.status, html };
  }
  return fail(`more than ${MAX_STEPS} redirects`);
}

// ---- HTML ------------------------------------------------------------------------------------------------

function decode(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|#39|apos);/gi, (m, e) => {
    const k = e.toLowerCase();
    if (k.startsWith('#x')) return String.fromCodePoint(Number.parseInt(k.slice(2), 16));
    if (k.startsWith('#')) return String.fromCodePoint(Number.parseInt(k.slice(1), 10));
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[k] ?? m;
  });
}

function attrs(tag) {
  const out = {};
  for (const m of tag.matchAll(/([a-zA-Z_:-]+)\s*=\s*("([^"]*)"|'([^']*)')/g)) {
    out[m[1].toLowerCase()] = decode(m[3] ?? m[4]);
  }
  return out;
}

/** Every form: { id, action, method, fields: {name: value} } (hidden and pre-filled inputs). */
function forms(html) {
  return [...html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)].map((m) => {
    const a = attrs(m[1]);
    const fields = {};
    for (const input of m[2].matchAll(/<input\b([^>]*)>/gi)) {
      const i = attrs(input[1]);
      if (i.name) fields[i.name] = i.value ?? '';
    }
    return { id: a.id, action: a.action, method: (a.method ?? 'get').toUpperCase(), fields };
  });
}

function title(html) {
  return decode(/<title>([\s\S]*?)<\/title>/i.exec(html)?.[1]?.trim() ?? '(no title)');
}

function heading(html) {
  return decode(/<h1>([\s\S]*?)<\/h1>/i.exec(html)?.[1]?.trim() ?? '');
}

/** What the page tells the user in red (wrong code, expired code, interrupted sign-in). */
function redMessage(html) {
  return decode(/<p class="red">([\s\S]*?)<\/p>/i.exec(html)?.[1]?.trim() ?? '');
}

function submit(form, extra) {
  if (!form.action) fail('a form without an action');
  return browse(form.method, form.action, { ...form.fields, ...extra });
}

// ---- the user's step -------------------------------------------------------------------------------------

// 1. The verification page (oidc-provider's code_verification route, advertised as verification_uri).
let page = await browse('GET', '/device');
let input = forms(page.html).find((f) => 'xsrf' in f.fields && 'user_code' in f.fields);
if (page.status !== 200 || !input) fail(`no user code form at /device (HTTP ${page.status}, "${title(page.html)}")`);

// 2. Type the code (with the form's xsrf field) and continue.
page = await submit(input, { user_code: userCode });
const confirmForm = forms(page.html).find((f) => f.fields.confirm === 'yes');
if (!confirmForm) {
  fail(`the code was not accepted: "${redMessage(page.html) || heading(page.html) || title(page.html)}" (HTTP ${page.status})`);
}

// 3. Confirm the device, or abort (the "[ Abort ]" button submits the same form with abort=yes).
if (args.deny) {
  page = await submit(confirmForm, { abort: 'yes' });
  const message = redMessage(page.html);
  if (page.status === 200 && /interrupted/i.test(message)) {
    console.error(`approve.mjs: denied: "${message}"`);
    console.log('denied');
    process.exit(0);
  }
  fail(`expected the "interrupted" page after aborting, got HTTP ${page.status} "${message || title(page.html)}"`);
}
page = await submit(confirmForm, {});

// 4. Interactions until the success page: login (prompt=login), consent (prompt=consent).
for (let step = 0; step < MAX_STEPS; step += 1) {
  if (page.status === 200 && /Sign-in Success/i.test(title(page.html))) {
    console.error(`approve.mjs: approved as ${args.user}: "${heading(page.html)}"`);
    console.log('approved');
    process.exit(0);
  }
  const form = forms(page.html).find((f) => f.fields.prompt === 'login' || f.fields.prompt === 'consent');
  if (page.status !== 200 || !form) {
    const why = redMessage(page.html) || heading(page.html) || title(page.html);
    fail(`unexpected page at ${page.url.pathname}: HTTP ${page.status} "${why}"`);
  }
  if (form.fields.prompt === 'login') {
    page = await submit(form, { login: args.user, password: 'any' });
  } else {
    page = await submit(form, {});
  }
}
fail(`no success page after ${MAX_STEPS} steps`);
