// Shared by the Node tests: the stack's URL and HS256 tokens, from the environment that
// tests/e2e/test_js_client.py sets (STREAMER_URL, STREAMER_JWT_SECRET) after starting the
// real local stack.
import { createHmac } from "node:crypto";

export const URL_ = process.env.STREAMER_URL;
const SECRET = process.env.STREAMER_JWT_SECRET;
if (!URL_ || !SECRET) {
  throw new Error("run through pytest (tests/e2e/test_js_client.py): STREAMER_URL and STREAMER_JWT_SECRET are needed");
}

const b64 = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** An HS256 token the stack accepts, as `streamer token` makes it. */
export function token({ user = "js-user", tenant = "js-tenant", permissions = [], ttl = 600, secret = SECRET } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: user, tenant_id: tenant, permissions, iat: now, exp: now + ttl })}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

export const REPORT = { start_date: "2026-01-01", end_date: "2026-01-31", format: "pdf", report_type: "sales" };

export function uid(prefix) {
  return `${prefix}-${Math.random().toString(16).slice(2)}${Date.now().toString(16)}`;
}
