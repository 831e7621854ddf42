// The peer of bench/vs-oidc-provider: node-oidc-provider (OpenID Certified) configured like
// idflow's quickstart as far as its options reach, so both servers do the same work per request.
//
//   node provider.mjs PORT
//
// - One confidential client, `demo-web` (client_secret_basic), with the authorization code,
//   refresh token and client credentials grants; PKCE not required (as for idflow's
//   confidential clients); no consent screen (idflow's applications are first-party).
// - Access tokens for `api.read` are JWTs signed with ES256 (idflow's default), ID tokens RS256.
// - Refresh tokens rotate on every use, as idflow's do.
// - One account, `bench`, whose password is checked with argon2id at idflow's default cost
//   (m=19 MiB, t=2, p=1) by the native `argon2` package on libuv's thread pool.
// - Lifetimes as idflow's defaults: access and ID tokens 300 s, codes 60 s, refresh tokens 30
//   days, sessions 10 hours, logins 30 minutes.
//
// Storage is in memory (MapAdapter below): nothing is written to disk, where idflow commits
// every code, session and refresh token durably. BENCHMARKS.md says so next to the figures.
//
// wrk's Lua keeps one value per response header name, and oidc-provider sets several cookies in
// one response; so the responses' Set-Cookie headers are folded into one line for the load
// client (bench/wrk/browser_login.lua parses it). idflow sets one cookie per response and needs
// no such help.

import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';

import argon2 from 'argon2';
import Provider from 'oidc-provider';

const [port] = process.argv.slice(2);
if (!port) {
  console.error('usage: node provider.mjs PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const username = process.env.BENCH_USERNAME || 'bench';
const password = process.env.BENCH_PASSWORD || 'bench-password-1';
const passwordHash = await argon2.hash(password, {
  type: argon2.argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1,
});
const API = 'urn:idflow-bench:api';

// oidc-provider's own development adapter keeps only the 1,000 most recently used records, so
// under a benchmark's load it forgets refresh tokens that are still valid. This one is the same
// in-memory storage without that bound: records live until they expire, as in a real store.
const storage = new Map();
const grants = new Map();
const epoch = () => Math.floor(Date.now() / 1000);
class MapAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    storage.set(key, { payload, expiresAt: expiresIn ? epoch() + expiresIn : Infinity });
    if (this.model === 'Session') storage.set(`sessionUid:${payload.uid}`, { payload: id, expiresAt: Infinity });
    if (payload.grantId) {
      if (!grants.has(payload.grantId)) grants.set(payload.grantId, []);
      grants.get(payload.grantId).push(key);
    }
  }

  async find(id) {
    const record = storage.get(this.key(id));
    if (!record) return undefined;
    if (record.expiresAt <= epoch()) {
      storage.delete(this.key(id));
      return undefined;
    }
    return record.payload;
  }

  async findByUid(uid) {
    const id = storage.get(`sessionUid:${uid}`)?.payload;
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode() { return undefined; }

  async consume(id) {
    const record = storage.get(this.key(id));
    if (record) record.payload.consumed = epoch();
  }

  async destroy(id) { storage.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const key of grants.get(grantId) || []) storage.delete(key);
    grants.delete(grantId);
  }
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients: [{
    client_id: 'demo-web',
    client_secret: 'demo-web-secret-change-me',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: ['http://localhost:8000/callback'],
  }],
  jwks: {
    keys: [
      { ...rsa, kid: 'bench-rs256', use: 'sig', alg: 'RS256' },
      { ...ec, kid: 'bench-es256', use: 'sig', alg: 'ES256' },
    ],
  },
  cookies: { keys: ['idflow-bench-cookie-key'] },
  claims: { openid: ['sub'] },
  scopes: ['openid'],
  pkce: { required: () => false },
  rotateRefreshToken: true,
  // idflow gives confidential clients with the refresh grant a refresh token without
  // `offline_access`.
  issueRefreshToken: async () => true,
  ttl: {
    AccessToken: 300,
    ClientCredentials: 300,
    IdToken: 300,
    AuthorizationCode: 60,
    RefreshToken: 30 * 24 * 3600,
    Grant: 30 * 24 * 3600,
    Session: 10 * 3600,
    Interaction: 1800,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => API,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api.read',
        audience: API,
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, id) {
    if (id !== username) return undefined;
    return { accountId: id, claims: async () => ({ sub: id }) };
  },
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html><head><title>${escape(title)}</title></head><body><h1>${escape(title)}</h1>${body}</body></html>`);
}

async function form(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

// The login page: GET shows the form, POST checks the password and, as a first-party
// application needs no consent, grants what the client asked for in the same step.
async function interaction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid || details.prompt.name !== 'login') {
    return page(res, 400, 'Unexpected interaction', `<p>${escape(details.prompt.name)}</p>`);
  }
  if (req.method === 'GET') {
    return page(res, 200, 'Sign in', `
<form method="post" action="/interaction/${escape(uid)}">
  <input type="text" name="username" autocomplete="username">
  <input type="password" name="password" autocomplete="current-password">
  <button type="submit">Sign in</button>
</form>`);
  }
  const fields = await form(req);
  const known = fields.get('username') === username;
  // Unknown names are checked against the same hash, so both answers take as long.
  const valid = await argon2.verify(passwordHash, fields.get('password') || '');
  if (!known || !valid) return page(res, 401, 'Wrong username or password', '');
  const grant = new provider.Grant({ accountId: username, clientId: details.params.client_id });
  grant.addOIDCScope('openid');
  grant.addResourceScope(API, 'api.read');
  return provider.interactionFinished(req, res, {
    login: { accountId: username },
    consent: { grantId: await grant.save() },
  }, { mergeWithLastSubmission: false });
}

// Folds the Set-Cookie headers of a response into one line (see the note at the top).
function foldCookies(res) {
  const writeHead = res.writeHead;
  res.writeHead = function (...args) {
    const cookies = res.getHeader('set-cookie');
    if (Array.isArray(cookies) && cookies.length > 1) res.setHeader('set-cookie', cookies.join(', '));
    return writeHead.apply(this, args);
  };
}

const callback = provider.callback();
createServer((req, res) => {
  foldCookies(res);
  const match = /^\/interaction\/([^/?]+)(?:\?.*)?$/.exec(req.url);
  if (!match) return callback(req, res);
  return interaction(req, res, match[1]).catch((error) => {
    console.error(error);
    if (!res.headersSent) page(res, 400, 'Interaction failed', `<p>${escape(error.message)}</p>`);
  });
}).listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider listening at ${issuer}`);
});
