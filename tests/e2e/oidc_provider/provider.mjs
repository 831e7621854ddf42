// The upstream OpenID Provider of tests/e2e/test_federation_oidc_provider.py: node-oidc-provider
// (an OpenID Certified implementation) on loopback, with one confidential client and one account.
//
//   node provider.mjs PORT REDIRECT_URI
//
// The issuer is http://127.0.0.1:PORT. The client (OP_CLIENT_ID, OP_CLIENT_SECRET) uses
// client_secret_basic and the authorization code flow, and must send PKCE (S256). The account
// signs in with OP_USERNAME / OP_PASSWORD on a plain HTML form and then confirms the consent form,
// so a test client without a browser can drive both with form posts. Everything is in memory.

import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const [port, redirectUri] = process.argv.slice(2);
if (!port || !redirectUri) {
  console.error('usage: node provider.mjs PORT REDIRECT_URI');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.OP_CLIENT_ID || 'idflow-downstream';
const clientSecret = process.env.OP_CLIENT_SECRET || 'op-client-secret-for-tests';
const username = process.env.OP_USERNAME || 'alice';
const password = process.env.OP_PASSWORD || 'op-alice-password';

const ACCOUNT = {
  sub: 'op-alice',
  email: 'alice@op.example',
  email_verified: true,
  name: 'Alice Oppenheimer',
  given_name: 'Alice',
  family_name: 'Oppenheimer',
  preferred_username: 'op-alice',
};

const signing = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [redirectUri],
  }],
  jwks: { keys: [{ ...signing, kid: 'op-rs256', use: 'sig', alg: 'RS256' }] },
  cookies: { keys: ['idflow-e2e-op-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
  },
  scopes: ['openid', 'email', 'profile'],
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, id) {
    if (id !== ACCOUNT.sub) return undefined;
    return { accountId: id, claims: async () => ({ ...ACCOUNT }) };
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

// The interaction pages: GET shows the form of the pending prompt, POST .../login checks the
// password, POST .../confirm grants what the client asked for (confirm=yes) or declines it.
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return page(res, 400, 'Wrong interaction', '');
  const { prompt, params, session, grantId } = details;
  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') {
      return page(res, 200, 'Sign in to the test OP', `
<form method="post" action="/interaction/${escape(uid)}/login">
  <input type="text" name="username" autocomplete="username">
  <input type="password" name="password" autocomplete="current-password">
  <button type="submit">Sign in</button>
</form>`);
    }
    if (prompt.name === 'consent') {
      const scopes = (prompt.details.missingOIDCScope || []).join(' ');
      return page(res, 200, 'Authorize', `
<p>${escape(params.client_id)} asks for: ${escape(scopes)}</p>
<form method="post" action="/interaction/${escape(uid)}/confirm">
  <input type="hidden" name="confirm" value="yes">
  <button type="submit">Allow</button>
</form>`);
    }
    return page(res, 501, `Prompt ${prompt.name} is not supported`, '');
  }
  if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
    const fields = await form(req);
    if (fields.get('username') !== username || fields.get('password') !== password) {
      return page(res, 401, 'Wrong username or password', '');
    }
    return provider.interactionFinished(req, res, { login: { accountId: ACCOUNT.sub } },
      { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm' && prompt.name === 'consent') {
    if ((await form(req)).get('confirm') !== 'yes') {
      return provider.interactionFinished(req, res,
        { error: 'access_denied', error_description: 'the person declined' },
        { mergeWithLastSubmission: false });
    }
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } },
      { mergeWithLastSubmission: true });
  }
  return page(res, 400, 'Unexpected request', '');
}

const callback = provider.callback();
createServer((req, res) => {
  const match = /^\/interaction\/([^/?]+)(?:\/(login|confirm))?(?:\?.*)?$/.exec(req.url);
  if (!match) return callback(req, res);
  return interaction(req, res, match[1], match[2]).catch((error) => {
    console.error(error);
    if (!res.headersSent) page(res, 400, 'Interaction failed', `<p>${escape(error.message)}</p>`);
  });
}).listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider listening at ${issuer}`);
});
