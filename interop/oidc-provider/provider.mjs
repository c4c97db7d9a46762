// An independent OAuth 2.0 authorization server for roger-proto's interoperability test: oidc-provider (npm, by
// panva), the real package, unmodified, configured here. Plain HTTP on loopback only.
//
//   node interop/oidc-provider/provider.mjs [--port N]
//
// Prints exactly one JSON line on stdout once listening:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT,"oidc_provider":"9.13.3","node":"v20…",…}
// logs to stderr, exits on SIGTERM or SIGINT.
//
// What oidc-provider does on its own (9.13.3, read from its lib/, checked by the Rust test):
// - RFC 8414 metadata at /.well-known/oauth-authorization-server AND at /.well-known/openid-configuration (same
//   document); endpoints: token /token, device authorization /device/auth, verification page /device,
//   revocation /token/revocation.
// - Device authorization answers carry no `interval` (RFC 8628 §3.2: the client then uses 5 s), and the token
//   endpoint never answers `slow_down`: lib/actions/grants/device_code.js answers expired_token,
//   authorization_pending, or redeems; its errors.SlowDown class is defined but never thrown. There is no
//   setting for either. Nothing is added here: this is oidc-provider alone. (`slow_down` from a server meets
//   independent clients in interop/clients, against roger-sim server.)

import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

// oidc-provider prints its NOTICEs with console.info, i.e. on stdout; the contract reserves stdout for the one
// JSON line, so everything else goes to stderr. Done before the package is loaded (hence the dynamic import).
console.log = console.error;
console.info = console.error;
const { default: Provider } = await import('oidc-provider');
const { version } = (await import('oidc-provider/package.json', { with: { type: 'json' } })).default;

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
  },
});
const port = Number.parseInt(args.port, 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`provider.mjs: --port must be 0..65535, not ${args.port}`);
  process.exit(2);
}

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// Listen first: with --port 0 the issuer (which must be exact, RFC 8414 §3.3) is known only once bound.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const configuration = {
  clients: [
    {
      // The printer (docs/protocol.md §1.6): a public client (RFC 6749 §2.1) with the device grant and refresh.
      // `native`: no redirect URIs, and the RefreshToken ttl below applies to every rotated token.
      client_id: 'emb-acme',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: [DEVICE_GRANT, 'refresh_token'],
      response_types: [],
      redirect_uris: [],
    },
    {
      // A phone-like public client for authorization_code + PKCE (RFC 7636), loopback redirect (RFC 8252 §7.3).
      client_id: 'roger-mobile',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/cb'],
    },
  ],
  // Roger's scopes (docs/protocol.md §1.5) beside oidc-provider's defaults.
  scopes: ['openid', 'offline_access', 'roger.device', 'roger.release', 'roger.print', 'roger.scan', 'roger.app'],
  features: {
    // RFC 8628 with oidc-provider's default user codes: base-20 consonants, mask ****-**** (shown hyphenated).
    deviceFlow: { enabled: true },
    // RFC 7009.
    revocation: { enabled: true },
    // The built-in login (any name, any password) and consent pages: the user's step for approve.mjs.
    devInteractions: { enabled: true },
  },
  // PKCE for every client that uses authorization_code (only S256 exists in oidc-provider 9, RFC 7636 §4.2).
  pkce: { required: () => true },
  // A new refresh token on every refresh (RFC 9700 §4.14.2, R-TOK-2).
  rotateRefreshToken: true,
  // A refresh token for every grant of a client allowed the refresh_token grant, as Roger's registration answer
  // has one for `scope=roger.device` alone (docs/protocol.md §3.5.2); the default asks for `offline_access`.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  // A printer's tokens do not end with the approving admin's browser session (the default binds them to it
  // unless `offline_access` was granted).
  expiresWithSession: async () => false,
  // Roger's lifetimes (docs/protocol.md §6.6); a number makes every rotated refresh token live 90 days again.
  ttl: {
    AccessToken: 1200,
    AuthorizationCode: 60,
    DeviceCode: 600,
    RefreshToken: 90 * 24 * 3600,
    Grant: 90 * 24 * 3600,
    Interaction: 600,
    Session: 3600,
  },
  // Any login name is an account (devInteractions accept any login).
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  // Cookie signing keys for this run only.
  cookies: { keys: [randomBytes(32).toString('base64url')] },
};

const provider = new Provider(issuer, configuration);

provider.on('server_error', (ctx, err) => console.error('server_error', ctx.method, ctx.path, err));
provider.on('grant.error', (ctx, err) => console.error(`token ${ctx.oidc?.params?.grant_type}: ${err.error}`));
provider.on('grant.success', (ctx) => console.error(`token ${ctx.oidc.params.grant_type}: ok`));
provider.on('revocation.success', () => console.error('revocation: ok'));

server.on('request', provider.callback());

function stop(signal) {
  console.error(`provider.mjs: ${signal}, stopping`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

process.stdout.write(`${JSON.stringify({
  issuer,
  port: server.address().port,
  oidc_provider: version,
  node: process.version,
  metadata: `${issuer}/.well-known/oauth-authorization-server`,
  openid_configuration: `${issuer}/.well-known/openid-configuration`,
  clients: { device: 'emb-acme', pkce: 'roger-mobile' },
  redirect_uri: 'http://127.0.0.1/cb',
})}\n`);
