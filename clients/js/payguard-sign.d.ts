// Types of payguard-sign.js (PG-HMAC-SHA256 request signing, docs/client-signing.md).

export declare const ALGORITHM: 'PG-HMAC-SHA256';

/** Problem codes payguard answers refused inputs with. */
export type SigningErrorCode =
  | 'NON_CANONICAL_METHOD'
  | 'NON_CANONICAL_PATH'
  | 'NON_CANONICAL_QUERY'
  | 'MISSING_CREDENTIALS'
  | 'TIMESTAMP_OUT_OF_WINDOW';

/** An input payguard would refuse. */
export declare class SigningError extends Error {
  constructor(code: SigningErrorCode, reason: string, message: string);
  readonly name: 'SigningError';
  /** payguard's problem code, e.g. `NON_CANONICAL_PATH`. */
  readonly code: SigningErrorCode;
  /** The finer reason, e.g. `path_encoded_slash` (as in clients/vectors.json). */
  readonly reason: string;
}

/**
 * A WebCrypto key: the global `CryptoKey` of browsers and Node 19+, or `webcrypto.CryptoKey` of
 * `node:crypto`. Written out so the types need neither the DOM library nor Node's.
 */
export interface WebCryptoKey {
  readonly type: string;
  readonly extractable: boolean;
  readonly algorithm: object;
  readonly usages: readonly string[];
}

/** Bytes, or a string (taken as its UTF-8 bytes). */
export type BytesInput = string | Uint8Array | ArrayBuffer | ArrayBufferView;

export interface SignInputBase {
  /** Access key id (`X-PG-Key`). */
  keyId: string;
  /** The key's secret, or a WebCrypto HMAC SHA-256 key with the `sign` usage. */
  secret: BytesInput | WebCryptoKey;
  /** Upper-case method, e.g. `POST`. */
  method: string;
  /** The exact body bytes that will be sent; absent or null for none. */
  body?: BytesInput | null;
  /** Unix seconds; default now. */
  timestamp?: number;
  /** 16–64 characters of `[A-Za-z0-9_-]`; default a fresh random one. */
  nonce?: string;
}

export interface SignPathInput extends SignInputBase {
  /** The path as sent, without the query (no `?` or `#`). */
  path: string | Uint8Array;
  /** The raw query, without `?`; absent, null or '' for none. */
  query?: BytesInput | null;
  url?: undefined;
}

export interface SignUrlInput extends SignInputBase {
  /** A URL (or a path with a query), parsed as fetch parses it. */
  url: string | URL;
  path?: undefined;
  query?: undefined;
}

export interface SignatureHeaders {
  'X-PG-Key': string;
  'X-PG-Timestamp': string;
  'X-PG-Nonce': string;
  'X-PG-Signature': string;
}

export interface Signed {
  /** The four headers to send with the request. */
  headers: SignatureHeaders;
  /** The path payguard forwards and the signature covers. */
  canonicalPath: string;
  /** The query payguard forwards and the signature covers. */
  canonicalQuery: string;
  /** The seven-line string that was signed. */
  stringToSign: string;
}

/** Signs one request. Rejects with SigningError for inputs payguard would refuse. */
export declare function signRequest(input: SignPathInput | SignUrlInput): Promise<Signed>;

/** The canonical path of a path as sent. Throws SigningError (NON_CANONICAL_PATH). */
export declare function canonicalPath(path: string | Uint8Array): string;

/** The canonical query of a raw query. Throws SigningError (NON_CANONICAL_QUERY). */
export declare function canonicalQuery(query: BytesInput | null | undefined): string;

/** A fresh nonce: 32 characters of `[A-Za-z0-9_-]`. */
export declare function newNonce(): Promise<string>;
