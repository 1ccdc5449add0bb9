// PG-HMAC-SHA256 request signing for payguard clients (docs/client-signing.md), for Node.js (18+)
// and browsers: WebCrypto (`crypto.subtle`) only, no dependencies, no build step. Types are in
// payguard-sign.d.ts.
//
// The canonical path and query are computed exactly as payguard computes them
// (src/canonical/path.rs, src/canonical/query.rs); inputs payguard would refuse throw a
// SigningError carrying the problem `code` and `reason` payguard would answer with.
//
// A shared secret must never ship in a browser bundle or a mobile app: use this module on a
// backend-for-frontend, or with a per-device key (docs/client-signing.md, "Where the secret lives").

export const ALGORITHM = 'PG-HMAC-SHA256';

/** An input payguard would refuse; `code` is payguard's problem code, `reason` the finer reason. */
export class SigningError extends Error {
  constructor(code, reason, message) {
    super(message);
    this.name = 'SigningError';
    this.code = code;
    this.reason = reason;
  }
}

const encoder = new TextEncoder();
const HEX = '0123456789ABCDEF';

function isUnreserved(b) {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) ||
    b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e;
}

// RFC 3986 pchar less `%`: unreserved, sub-delims, `:` and `@` (`;` is refused before this).
function allowedRawInPath(b) {
  return isUnreserved(b) || '!$&\'()*+,;=:@'.includes(String.fromCharCode(b));
}

function hexVal(b) {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x61 + 10;
  if (b >= 0x41 && b <= 0x46) return b - 0x41 + 10;
  return -1;
}

/** The byte `%XY` at raw[i] encodes, or -1. */
function escapeAt(raw, i) {
  if (i + 2 >= raw.length) return -1;
  const hi = hexVal(raw[i + 1]);
  const lo = hexVal(raw[i + 2]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/**
 * Whether the canonical path continues with two hex digits at raw[at..]: sent raw or as escapes of
 * them (`%32%65` is `2e` once canonical), so `%25%32%65` is refused like `%252e`.
 */
function hexPairFollows(raw, at) {
  const canonicalByte = (j) => {
    if (j >= raw.length) return null;
    if (raw[j] === 0x25) {
      const d = escapeAt(raw, j);
      return d < 0 || !isUnreserved(d) ? null : [d, 3];
    }
    return [raw[j], 1];
  };
  const first = canonicalByte(at);
  if (!first) return false;
  const second = canonicalByte(at + first[1]);
  return second !== null && hexVal(first[0]) >= 0 && hexVal(second[0]) >= 0;
}

function escape(b) {
  return '%' + HEX[b >> 4] + HEX[b & 15];
}

function bytesOf(value, what) {
  if (value === undefined || value === null) return new Uint8Array(0);
  if (typeof value === 'string') return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`${what} must be a string, Uint8Array, ArrayBuffer or typed array`);
}

function pathError(reason, message) {
  return new SigningError('NON_CANONICAL_PATH', reason, message);
}

function validUtf8(bytes) {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/**
 * The canonical path payguard routes, checks, signs and forwards (docs/configuration.md, "Route
 * matching and path normalization"), of `path` as sent (without the query).
 * Throws SigningError (NON_CANONICAL_PATH) for the forms payguard refuses with 400.
 */
export function canonicalPath(path) {
  if (typeof path === 'string' && /\p{Surrogate}/u.test(path)) {
    throw pathError('path_invalid_utf8', 'the path does not decode to UTF-8');
  }
  const raw = bytesOf(path, 'path');
  if (raw[0] !== 0x2f) {
    throw pathError('path_not_origin_form', 'the request target must be a path starting with `/`');
  }
  let out = '/';
  let segment = 1;
  // The decoded bytes from the first non-ASCII one on, to check the path means UTF-8 text.
  const decoded = [];
  // Closes the segment that starts at out[segment]; whether it was empty or a dot segment
  // (which leave a trailing slash when last).
  const close = () => {
    const seg = out.slice(segment);
    if (seg === '' || seg === '.') {
      out = out.slice(0, segment);
      return true;
    }
    if (seg === '..') {
      // Drop this segment and the one before it; at the root there is nothing to drop.
      out = out.slice(0, Math.max(segment - 1, 0));
      out = out.slice(0, out.lastIndexOf('/') + 1);
      if (out === '') out = '/';
      return true;
    }
    out += '/';
    return false;
  };
  let i = 1;
  while (i < raw.length) {
    const c = raw[i];
    if (c === 0x2f) {
      close();
      segment = out.length;
      i += 1;
      continue;
    }
    if (c < 0x20 || c === 0x7f) {
      throw pathError('path_control_character', `control character 0x${escape(c).slice(1)} at byte ${i} of the path`);
    }
    if (c === 0x5c) {
      throw pathError('path_backslash', `\`\\\` at byte ${i} of the path (some servers read it as \`/\`); encode it or remove it`);
    }
    if (c === 0x3b) {
      throw pathError('path_parameter',
        `\`;\` path parameter at byte ${i} of the path (Servlet containers route without it, other servers with it)`);
    }
    if (c === 0x25) {
      const d = escapeAt(raw, i);
      if (d < 0) throw pathError('path_invalid_escape', `invalid percent-escape at byte ${i} of the path`);
      if (d < 0x20 || d === 0x7f) {
        throw pathError('path_control_character', `control character 0x${escape(d).slice(1)} at byte ${i} of the path`);
      }
      if (d === 0x2f || d === 0x5c) {
        const sent = String.fromCharCode(...raw.subarray(i, i + 3));
        throw pathError('path_encoded_slash',
          `encoded slash ${sent} at byte ${i} of the path (servers disagree on whether it separates segments)`);
      }
      if (d === 0x25 && hexPairFollows(raw, i + 3)) {
        throw pathError('path_double_encoding',
          `double percent-encoding at byte ${i} of the path (\`%25\` followed by two hex digits)`);
      }
      out += isUnreserved(d) ? String.fromCharCode(d) : escape(d);
      if (d >= 0x80 || decoded.length) decoded.push(d);
      i += 3;
      continue;
    }
    if (c >= 0x80) {
      decoded.push(c);
      out += escape(c);
    } else {
      out += allowedRawInPath(c) ? String.fromCharCode(c) : escape(c);
      if (decoded.length) decoded.push(c);
    }
    i += 1;
  }
  // An empty or dot last segment leaves a trailing slash; after a name, close() appended a `/`
  // that is not part of the path.
  if (!close() && out.length > 1) out = out.slice(0, -1);
  if (decoded.length && !validUtf8(new Uint8Array(decoded))) {
    throw pathError('path_invalid_utf8', 'the path does not decode to UTF-8');
  }
  return out;
}

/** Percent-decodes with `+` as a space, as every query decoder does; `%` needs two hex digits. */
function queryDecode(raw, start, end) {
  const out = [];
  let i = start;
  while (i < end) {
    const b = raw[i];
    if (b === 0x25) {
      const d = i + 2 < end ? escapeAt(raw, i) : -1;
      if (d < 0) {
        throw new SigningError('NON_CANONICAL_QUERY', 'query_invalid_escape', `invalid percent-escape at byte ${i} of the query`);
      }
      out.push(d);
      i += 3;
    } else {
      out.push(b === 0x2b ? 0x20 : b);
      i += 1;
    }
  }
  return out;
}

function queryEncode(bytes) {
  let s = '';
  for (const b of bytes) s += isUnreserved(b) ? String.fromCharCode(b) : escape(b);
  return s;
}

/**
 * The canonical query of a raw query (the text after `?`, without it; null or '' for none): split
 * on `&`, empty parts dropped, each part split on its first `=`, decoded (`+` is a space),
 * re-encoded with only unreserved characters raw, sorted by name then value, joined with `&`.
 * Throws SigningError (NON_CANONICAL_QUERY) for a `%` without two hex digits.
 */
export function canonicalQuery(query) {
  const raw = bytesOf(query, 'query');
  const pairs = [];
  let start = 0;
  while (start <= raw.length) {
    let end = raw.indexOf(0x26, start);
    if (end < 0) end = raw.length;
    if (end > start) {
      let eq = raw.indexOf(0x3d, start);
      if (eq < 0 || eq > end) eq = end;
      const name = queryEncode(queryDecode(raw, start, eq));
      const value = eq < end ? queryEncode(queryDecode(raw, eq + 1, end)) : '';
      pairs.push([name, value]);
    }
    start = end + 1;
  }
  // Encoded text is ASCII, so comparing UTF-16 code units compares bytes.
  const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  pairs.sort((a, b) => cmp(a[0], b[0]) || cmp(a[1], b[1]));
  return pairs.map(([n, v]) => `${n}=${v}`).join('&');
}

function checkMethod(method) {
  if (typeof method !== 'string' || !/^[A-Z0-9!#$%&'*+\-.^_`|~]+$/.test(method)) {
    throw new SigningError('NON_CANONICAL_METHOD', 'method_not_upper_case',
      'the method must be an upper-case token such as POST (methods are case-sensitive)');
  }
}

function checkNonce(nonce) {
  if (typeof nonce !== 'string' || !/^[A-Za-z0-9_-]{16,64}$/.test(nonce)) {
    throw new SigningError('MISSING_CREDENTIALS', 'malformed_nonce', 'the nonce must be 16 to 64 characters of A-Z a-z 0-9 _ -');
  }
}

function timestampText(timestamp) {
  if (!Number.isSafeInteger(timestamp)) throw new TypeError('timestamp must be an integer (unix seconds)');
  const text = String(timestamp);
  if (timestamp < 0 || text.length > 18) {
    throw new SigningError('TIMESTAMP_OUT_OF_WINDOW', 'malformed_timestamp', 'the timestamp must be unix seconds in decimal digits');
  }
  return text;
}

let cryptoPromise;
/** WebCrypto: the global one (browsers, Node 19+), else node:crypto's (Node 18). */
function webcrypto() {
  if (globalThis.crypto?.subtle) return Promise.resolve(globalThis.crypto);
  if (!cryptoPromise) {
    // A variable specifier, so bundlers targeting browsers do not try to resolve node:crypto.
    const specifier = 'node:crypto';
    cryptoPromise = import(/* webpackIgnore: true */ /* @vite-ignore */ specifier).then((m) => m.webcrypto);
  }
  return cryptoPromise;
}

function base64(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function hex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/** A fresh nonce: 32 characters of [A-Za-z0-9_-] (24 random bytes, base64url). */
export async function newNonce() {
  const c = await webcrypto();
  const bytes = c.getRandomValues(new Uint8Array(24));
  return base64(bytes).replaceAll('+', '-').replaceAll('/', '_');
}

function splitTarget(input) {
  if (input.url !== undefined) {
    if (input.path !== undefined || input.query !== undefined) throw new TypeError('give either url or path/query');
    // Parsed as fetch parses it, so what is signed is what fetch sends.
    const u = input.url instanceof URL ? input.url : new URL(String(input.url), 'http://localhost');
    return [u.pathname, u.search.slice(1)];
  }
  if (typeof input.path !== 'string' && !(input.path instanceof Uint8Array)) {
    throw new TypeError('path (or url) is required');
  }
  if (typeof input.path === 'string' && /[?#]/.test(input.path)) {
    throw new TypeError('the path must not contain `?` or `#`: pass the query as `query`, or a full `url`');
  }
  return [input.path, input.query];
}

/**
 * Signs one request. Give the path and raw query the request line will carry (or a `url`, parsed
 * as fetch parses it) and the exact body bytes that will be sent (a string is sent as UTF-8).
 * `timestamp` (unix seconds) defaults to now, `nonce` to a fresh random one; `secret` may be a
 * string, bytes, or a WebCrypto HMAC-SHA-256 key (e.g. a non-extractable per-device key).
 * Resolves to { headers, canonicalPath, canonicalQuery, stringToSign }.
 */
export async function signRequest(input) {
  const { keyId, secret, method } = input;
  if (typeof keyId !== 'string' || keyId === '') throw new TypeError('keyId is required');
  const [path, query] = splitTarget(input);
  checkMethod(method);
  const cpath = canonicalPath(path);
  const cquery = canonicalQuery(query);
  const nonce = input.nonce ?? (await newNonce());
  checkNonce(nonce);
  const ts = timestampText(input.timestamp ?? Math.floor(Date.now() / 1000));
  const body = bytesOf(input.body, 'body');

  const c = await webcrypto();
  const bodyHash = hex(new Uint8Array(await c.subtle.digest('SHA-256', body)));
  const stringToSign = [ALGORITHM, method, cpath, cquery, ts, nonce, bodyHash].join('\n');
  let key = secret;
  if (Object.prototype.toString.call(secret) !== '[object CryptoKey]') {
    const raw = bytesOf(secret, 'secret');
    if (raw.length === 0) throw new TypeError('secret must not be empty');
    key = await c.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  }
  const mac = new Uint8Array(await c.subtle.sign('HMAC', key, encoder.encode(stringToSign)));
  return {
    headers: {
      'X-PG-Key': keyId,
      'X-PG-Timestamp': ts,
      'X-PG-Nonce': nonce,
      'X-PG-Signature': base64(mac),
    },
    canonicalPath: cpath,
    canonicalQuery: cquery,
    stringToSign,
  };
}
