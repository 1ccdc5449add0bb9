// Compile-only check of payguard-sign.d.ts (not run by clients/test, which needs no TypeScript):
//   npx -p typescript@5 tsc --strict --noEmit --module nodenext --target es2022 test/types-check.ts
import {
  ALGORITHM, SigningError, canonicalPath, canonicalQuery, newNonce, signRequest,
  type Signed, type WebCryptoKey,
} from '../payguard-sign.js';

declare const deviceKey: WebCryptoKey;

export async function typesCheck(): Promise<void> {
  const s: Signed = await signRequest({ keyId: 'k', secret: 's', method: 'POST', url: 'http://h/v1?a=1', body: '{}' });
  const sig: string = s.headers['X-PG-Signature'];
  await signRequest({
    keyId: 'k', secret: new Uint8Array([1]), method: 'GET', path: '/v1', query: null,
    body: new ArrayBuffer(0), timestamp: 1, nonce: 'x'.repeat(16),
  });
  await signRequest({ keyId: 'k', secret: deviceKey, method: 'GET', path: '/' });
  // @ts-expect-error a url, or a path and query, not both
  await signRequest({ keyId: 'k', secret: 's', method: 'GET', path: '/', url: 'http://h/' });
  try {
    canonicalPath('/a');
    canonicalQuery(undefined);
  } catch (e) {
    if (e instanceof SigningError) {
      const why: string = `${e.code} ${e.reason}`;
      void why;
    }
  }
  const nonce: string = await newNonce();
  const algorithm: 'PG-HMAC-SHA256' = ALGORITHM;
  void [sig, nonce, algorithm];
}
