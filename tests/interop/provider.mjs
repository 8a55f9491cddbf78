// A real OpenID provider for the interop tests: node `oidc-provider`, mounted under /oidc like Kryptos's.
//
//   node provider.mjs <config.json>
//
// The JSON file (written by the Python fixtures) names the port, the issuer, the clients, the accounts, the
// signing keys (private JWKs, first one signs), the access-token lifetime and a store file. Every model
// (sessions, grants, codes, tokens) is written to that file on each change, so the fixtures can stop this
// process and start it again with a rotated JWKS while grants and tokens survive.
//
// Login and consent need no HTML: the interaction URL signs in the account named by `login_hint` and
// grants every scope and claim asked for, answering with redirects only. Prints "READY <issuer>" once
// listening; exits on SIGTERM.

import fs from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const MOUNT = '/oidc';
const INTERACTION = `${MOUNT}/interaction/`;

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

// -- a tiny persistent adapter -----------------------------------------------------------------------

const store = fs.existsSync(config.storeFile) ? JSON.parse(fs.readFileSync(config.storeFile, 'utf8')) : {};

function persist() {
  const tmp = `${config.storeFile}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(store));
  fs.renameSync(tmp, config.storeFile);
}

function live(entry) {
  return entry && (entry.expiresAt === null || entry.expiresAt > Date.now()) ? entry : undefined;
}

class FileAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  entries() {
    const prefix = `${this.model}:`;
    return Object.entries(store).filter(([key, entry]) => key.startsWith(prefix) && live(entry));
  }

  async upsert(id, payload, expiresIn) {
    store[this.key(id)] = { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : null };
    persist();
  }

  async find(id) {
    return live(store[this.key(id)])?.payload;
  }

  async findByUid(uid) {
    return this.entries().find(([, entry]) => entry.payload.uid === uid)?.[1].payload;
  }

  async findByUserCode(userCode) {
    return this.entries().find(([, entry]) => entry.payload.userCode === userCode)?.[1].payload;
  }

  async consume(id) {
    const entry = live(store[this.key(id)]);
    if (entry) {
      entry.payload.consumed = Math.floor(Date.now() / 1000);
      persist();
    }
  }

  async destroy(id) {
    delete store[this.key(id)];
    persist();
  }

  async revokeByGrantId(grantId) {
    for (const [key, entry] of this.entries()) {
      if (entry.payload.grantId === grantId) delete store[key];
    }
    persist();
  }
}

// -- accounts ------------------------------------------------------------------------------------------

const accountsBySub = new Map(Object.values(config.accounts).map((a) => [a.sub, a]));

async function findAccount(_ctx, sub) {
  const account = accountsBySub.get(sub);
  if (!account) return undefined;
  return {
    accountId: sub,
    async claims() {
      return {
        sub,
        name: account.name,
        email: account.email,
        email_verified: true,
        preferred_username: account.preferred_username,
      };
    },
  };
}

// -- the provider ----------------------------------------------------------------------------------------

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head><body>${body}</body></html>`;
}

const provider = new Provider(config.issuer, {
  adapter: FileAdapter,
  clients: config.clients,
  jwks: config.jwks,
  cookies: { keys: config.cookieKeys },
  findAccount,
  scopes: ['openid', 'offline_access', 'profile', 'email', 'integrations:read', 'users:read'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  conformIdTokenClaims: config.conformIdTokenClaims ?? false,
  clockTolerance: 0,
  rotateRefreshToken: true,
  pkce: { required: () => true },
  ttl: {
    AccessToken: config.accessTokenTtl,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 86400,
    Grant: 86400,
    Session: 86400,
    Interaction: 600,
  },
  interactions: { url: (_ctx, interaction) => `${INTERACTION}${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // The confirmation the provider asks for: POST the form with logout=yes.
      async logoutSource(ctx, form) {
        ctx.body = page(
          'Sign out',
          `${form}<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>`,
        );
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<p id="signed-out">You are signed out.</p>');
      },
    },
  },
  // The library refuses to call special-use addresses (SSRF protection); these tests run on loopback only,
  // so back-channel logout calls must be allowed to reach 127.0.0.1.
  fetch(url, options) {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
});

const events = [];
for (const name of ['backchannel.success', 'backchannel.error', 'grant.revoked', 'end_session.success']) {
  provider.on(name, (...args) => {
    const err = args.find((a) => a instanceof Error);
    events.push({ event: name, error: err ? String(err.message) : undefined });
    console.log(`EVENT ${name}${err ? ` ${err.message}` : ''}`);
  });
}

// -- login and consent with redirects only ---------------------------------------------------------------

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    const account = config.accounts[params.login_hint];
    result = account
      ? { login: { accountId: account.sub } }
      : { error: 'access_denied', error_description: 'unknown login_hint' };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: `unsupported prompt ${prompt.name}` };
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

const callback = provider.callback();

const server = http.createServer((req, res) => {
  if (req.url === '/_test/events') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(events));
    return;
  }
  if (req.url.startsWith(INTERACTION) && req.method === 'GET') {
    interaction(req, res).catch((err) => {
      console.error(`interaction failed: ${err.stack || err}`);
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err.message));
    });
    return;
  }
  if (req.url === MOUNT || req.url.startsWith(`${MOUNT}/`) || req.url.startsWith(`${MOUNT}?`)) {
    // The provider derives its mount path from the difference between originalUrl and url.
    req.originalUrl = req.url;
    req.url = req.url.slice(MOUNT.length) || '/';
    callback(req, res);
    return;
  }
  res.writeHead(404);
  res.end();
});

server.listen(config.port, '127.0.0.1', () => {
  console.log(`READY ${config.issuer}`);
});

process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
});
