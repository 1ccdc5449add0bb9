// Every vector of clients/vectors.json (generated from payguard's own code by
// tests/client_vectors.rs): canonical request, string to sign and headers match; refused inputs
// throw SigningError with payguard's code and reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { SigningError, canonicalPath, canonicalQuery, signRequest } from '../payguard-sign.js';

const { vectors } = JSON.parse(readFileSync(new URL('../../vectors.json', import.meta.url), 'utf8'));

const bodyOf = (v) => ('body_base64' in v ? Buffer.from(v.body_base64, 'base64') : v.body);
const signVector = (v) => signRequest({
  keyId: v.key_id, secret: v.secret, method: v.method, path: v.path, query: v.query,
  body: bodyOf(v), timestamp: v.timestamp, nonce: v.nonce,
});

test('the file has signed and refused vectors', () => {
  assert.ok(vectors.filter((v) => v.expected).length > 10);
  assert.ok(vectors.filter((v) => v.error).length > 10);
});

for (const v of vectors) {
  if (v.expected) {
    test(`signs ${v.name}`, async () => {
      const got = await signVector(v);
      assert.equal(got.canonicalPath, v.expected.canonical_path);
      assert.equal(got.canonicalQuery, v.expected.canonical_query);
      assert.equal(got.stringToSign, v.expected.string_to_sign);
      assert.deepEqual(got.headers, v.expected.headers);
      assert.equal(canonicalPath(got.canonicalPath), got.canonicalPath, 'idempotent');
      assert.equal(canonicalQuery(got.canonicalQuery), got.canonicalQuery, 'idempotent');
    });
  } else {
    test(`refuses ${v.name}`, async () => {
      await assert.rejects(signVector(v), (e) => {
        assert.ok(e instanceof SigningError, `${e}`);
        assert.deepEqual({ code: e.code, reason: e.reason }, v.error);
        return true;
      });
    });
  }
}

test('a url is split as fetch sends it', async () => {
  const v = vectors[0];
  const got = await signRequest({
    keyId: v.key_id, secret: v.secret, method: v.method, url: `http://127.0.0.1:8080${v.path}?${v.query}`,
    body: v.body, timestamp: v.timestamp, nonce: v.nonce,
  });
  assert.deepEqual(got.headers, v.expected.headers);
});

test('bytes, strings and a CryptoKey sign alike', async () => {
  const v = vectors.find((x) => x.name === 'unicode_body');
  const key = await crypto.subtle.importKey('raw', new TextEncoder().encode(v.secret),
    { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  for (const [secret, body] of [
    [v.secret, v.body],
    [new TextEncoder().encode(v.secret), new TextEncoder().encode(v.body).buffer],
    [key, new DataView(new TextEncoder().encode(v.body).buffer)],
  ]) {
    const got = await signRequest({ ...{ keyId: v.key_id, method: v.method, path: v.path }, secret, body,
      timestamp: v.timestamp, nonce: v.nonce });
    assert.deepEqual(got.headers, v.expected.headers);
  }
});

test('defaults are now and a fresh nonce', async () => {
  const a = await signRequest({ keyId: 'k', secret: 's', method: 'GET', path: '/' });
  const b = await signRequest({ keyId: 'k', secret: 's', method: 'GET', path: '/' });
  assert.notEqual(a.headers['X-PG-Nonce'], b.headers['X-PG-Nonce']);
  assert.match(a.headers['X-PG-Nonce'], /^[A-Za-z0-9_-]{32}$/);
  assert.ok(Math.abs(Number(a.headers['X-PG-Timestamp']) - Date.now() / 1000) < 5);
});

test('a path with ? or # is an argument error, not a silent %3F', async () => {
  await assert.rejects(signRequest({ keyId: 'k', secret: 's', method: 'GET', path: '/v1?a=1' }), TypeError);
});

test('refusals name the problem without the secret', async () => {
  await assert.rejects(signRequest({ keyId: 'k', secret: 'top-secret-value', method: 'GET', path: '/v1/a%2Fb' }), (e) => {
    assert.match(e.message, /encoded slash %2F at byte 5/);
    assert.doesNotMatch(`${e} ${e.stack}`, /top-secret-value/);
    return true;
  });
});
