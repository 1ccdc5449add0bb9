// Live test against a running payguard (clients/test-live starts one, with
// clients/echo-backend.py behind it): a signed request is answered 200 and reaches the backend as
// the canonical request it signed, a replayed nonce 409, a timestamp outside the window 401.
//   PAYGUARD_URL=... PAYGUARD_KEY_ID=... PAYGUARD_SECRET=... node --test test/live.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import { signRequest } from '../payguard-sign.js';

const missing = ['PAYGUARD_URL', 'PAYGUARD_KEY_ID', 'PAYGUARD_SECRET'].filter((n) => !process.env[n]);
if (missing.length) throw new Error(`live test needs ${missing.join(', ')} (clients/test-live sets them)`);
const base = process.env.PAYGUARD_URL.replace(/\/$/, '');
const keyId = process.env.PAYGUARD_KEY_ID;
const secret = process.env.PAYGUARD_SECRET;

async function send(method, url, body, headers) {
  const resp = await fetch(url, { method, body: body ?? undefined, headers });
  return [resp.status, await resp.json()];
}

test('a signed request reaches the backend as signed', async () => {
  const url = `${base}/v1/orders/%e4%bd%a0?b=2&a=1&q=x+y`;
  const body = JSON.stringify({ sku: 'A-1', note: '你好 ✓' });
  const signed = await signRequest({ keyId, secret, method: 'POST', url, body });
  const [status, got] = await send('POST', url, body, { ...signed.headers, 'Content-Type': 'application/json' });
  assert.equal(status, 200, JSON.stringify(got));
  assert.equal(got.method, 'POST');
  assert.equal(got.target, '/v1/orders/%E4%BD%A0?a=1&b=2&q=x%20y');
  assert.equal(got.target, `${signed.canonicalPath}?${signed.canonicalQuery}`);
  assert.equal(got.body_sha256, createHash('sha256').update(body, 'utf8').digest('hex'));
});

test('a replayed nonce is refused', async () => {
  const url = `${base}/v1/orders?page=2`;
  const signed = await signRequest({ keyId, secret, method: 'GET', url });
  assert.equal((await send('GET', url, null, signed.headers))[0], 200);
  const [status, problem] = await send('GET', url, null, signed.headers);
  assert.deepEqual([status, problem.code], [409, 'NONCE_REPLAYED']);
});

test('a timestamp outside the window is refused', async () => {
  const url = `${base}/v1/orders`;
  const signed = await signRequest({ keyId, secret, method: 'GET', url, timestamp: Math.floor(Date.now() / 1000) - 3600 });
  const [status, problem] = await send('GET', url, null, signed.headers);
  assert.deepEqual([status, problem.code], [401, 'TIMESTAMP_OUT_OF_WINDOW']);
});
