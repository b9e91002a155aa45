import { calculateJwkThumbprint, exportJWK, exportPKCS8, generateKeyPair, importPKCS8, importJWK, type JWK } from 'jose';
import { SIGNING_ALG, type SigningKey } from './tokens.js';

/** A P-256 signing key from its PKCS#8 PEM; kid is the RFC 7638 thumbprint. */
export async function signingKeyFromPem(pem: string): Promise<SigningKey> {
  const privateKey = await importPKCS8(pem, SIGNING_ALG, { extractable: true });
  const jwk = await exportJWK(privateKey);
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256') throw new Error('signing key must be an EC P-256 key');
  const publicJwk: JWK = { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y };
  const publicKey = await importJWK(publicJwk, SIGNING_ALG);
  if (publicKey instanceof Uint8Array) throw new Error('signing key must be asymmetric');
  const kid = await calculateJwkThumbprint(publicJwk);
  return { kid, privateKey, publicKey };
}

export async function generateSigningKeyPem(): Promise<string> {
  const { privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
  return exportPKCS8(privateKey);
}

export async function publicJwkOf(key: SigningKey): Promise<JWK> {
  const jwk = await exportJWK(key.publicKey);
  return { ...jwk, kid: key.kid, alg: SIGNING_ALG, use: 'sig' };
}
