"use strict";
// A Node BFF written the way a Node team usually writes one: express 5, express-session with connect-redis,
// http-proxy-middleware. The benchmark starts it next to bff and sends it the same requests (bench/_node.py).
//
// Configuration (environment): PORT, HOST (127.0.0.1), REDIS_URL, UPSTREAM_URL, SESSION_SECRET, CLIENT_ID,
// CLIENT_SECRET, TOKEN_URL (optional: without it an expiring access token is answered with 401).

const http = require("node:http");
const express = require("express");
const session = require("express-session");
const { RedisStore } = require("connect-redis");
const { createClient } = require("redis");
const { createProxyMiddleware } = require("http-proxy-middleware");

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return value;
}

const PORT = Number(required("PORT"));
const HOST = process.env.HOST || "127.0.0.1";
const REDIS_URL = required("REDIS_URL");
const UPSTREAM_URL = required("UPSTREAM_URL");
const SESSION_SECRET = required("SESSION_SECRET");
const CLIENT_ID = required("CLIENT_ID");
const CLIENT_SECRET = required("CLIENT_SECRET");
const TOKEN_URL = process.env.TOKEN_URL || "";
const REFRESH_MARGIN_S = 60;

const redis = createClient({ url: REDIS_URL });
redis.on("error", (err) => console.error("redis:", err.message));

const app = express();
app.set("trust proxy", "loopback");
app.disable("x-powered-by");

app.get("/healthz", (req, res) => {
  res.type("text/plain").send("ok");
});

app.use(
  session({
    store: new RedisStore({ client: redis, prefix: "sess:" }),
    name: "sid",
    secret: SESSION_SECRET,
    resave: false,
    saveUninitialized: false,
    rolling: false,
    cookie: { httpOnly: true, sameSite: "lax", secure: false, maxAge: 8 * 3600 * 1000 },
  }),
);

function requireCsrf(req, res, next) {
  if (req.get("x-csrf") !== "1") {
    return res.status(403).json({ error: "csrf_required" });
  }
  next();
}

function requireSession(req, res, next) {
  if (!req.session?.tokens?.access_token) {
    return res.status(401).json({ error: "unauthenticated" });
  }
  next();
}

async function refreshTokens(req, res, next) {
  const tokens = req.session.tokens;
  const now = Math.floor(Date.now() / 1000);
  if (Number(tokens.expires_at) - now > REFRESH_MARGIN_S) {
    return next();
  }
  if (!TOKEN_URL || !tokens.refresh_token) {
    return res.status(401).json({ error: "session_expired" });
  }
  const answer = await fetch(TOKEN_URL, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
    body: new URLSearchParams({
      grant_type: "refresh_token",
      refresh_token: tokens.refresh_token,
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
    }),
  });
  if (answer.status === 400 || answer.status === 401) {
    await new Promise((resolve) => req.session.destroy(() => resolve()));
    return res.status(401).json({ error: "session_expired" });
  }
  if (!answer.ok) {
    return res.status(502).json({ error: "token_refresh_failed" });
  }
  const body = await answer.json();
  req.session.tokens = {
    access_token: body.access_token,
    refresh_token: body.refresh_token || tokens.refresh_token,
    expires_at: now + Number(body.expires_in || 300),
  };
  await new Promise((resolve, reject) => req.session.save((err) => (err ? reject(err) : resolve())));
  next();
}

const upstreamAgent = new http.Agent({ keepAlive: true, maxSockets: 100 });

const proxy = createProxyMiddleware({
  target: UPSTREAM_URL,
  changeOrigin: true,
  agent: upstreamAgent,
  pathRewrite: { "^/api": "" },
  on: {
    proxyRes(proxyRes) {
      delete proxyRes.headers["set-cookie"];
    },
    error(err, req, res) {
      if (typeof res.writeHead !== "function" || res.headersSent) {
        res.destroy?.();
        return;
      }
      res.writeHead(502, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "bad_gateway" }));
    },
  },
});

// The credentials go on the incoming request's headers, which the proxy copies: its proxyReq hook would run
// too late for a request that waited for a free socket (maxSockets), when the headers are already sent.
function credentials(req, res, next) {
  req.headers.authorization = `Bearer ${req.session.tokens.access_token}`;
  req.headers["x-client-id"] = CLIENT_ID;
  req.headers["x-client-secret"] = CLIENT_SECRET;
  delete req.headers.cookie;
  delete req.headers["x-csrf"];
  next();
}

app.use("/api", requireCsrf, requireSession, refreshTokens, credentials);
// The allow-list: only these calls reach the upstream.
app.get("/api/v1/integrations", proxy);
app.use("/api", (req, res) => {
  res.status(404).json({ error: "not_found" });
});

app.use((err, req, res, next) => {
  console.error(err);
  if (res.headersSent) {
    return next(err);
  }
  res.status(500).json({ error: "internal_error" });
});

async function main() {
  await redis.connect();
  const server = app.listen(PORT, HOST, (err) => {
    if (err) {
      console.error(err);
      process.exit(1);
    }
    console.error(`node bff listening on http://${HOST}:${PORT}`);
  });
  const stop = () => {
    server.close(() => {
      redis.close().finally(() => process.exit(0));
    });
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
