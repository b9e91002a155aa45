import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import type { SecureContextOptions, TlsOptions } from 'node:tls';

/**
 * What every inbound TLS listener serves (HTTPS, MQTT over TLS, and MQTT
 * over secure WebSockets, which rides on the HTTPS listener): one
 * certificate chain and its key, checked once at start so that a wrong file
 * is a clear start-up error rather than a failed handshake per client.
 */
export interface ServerTls {
  /** The chain as served: the server certificate first, then intermediates (RFC 8446 §4.4.2). */
  readonly certPem: string;
  readonly keyPem: string;
  /** The server certificate (the first of the chain). */
  readonly certificate: X509Certificate;
  /** Where a client finds the CA to trust, when the service made it; undefined for the operator's certificate. */
  readonly caFile: string | undefined;
}

/** A certificate or key that cannot be used; its message names the file and the fix. */
export class TlsSetupError extends Error {
  override readonly name = 'TlsSetupError';
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificates of a PEM file, in order (anything between blocks is ignored, as OpenSSL does). */
export function certificatesOf(pem: string, source: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new TlsSetupError(`${source}: no PEM certificate found (expected "-----BEGIN CERTIFICATE-----")`);
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw new TlsSetupError(`${source}: certificate ${index + 1} of the file cannot be parsed`);
    }
  });
}

export function privateKeyOf(pem: string, source: string): KeyObject {
  if (/ENCRYPTED/.test(pem)) throw new TlsSetupError(`${source}: the private key is encrypted; give an unencrypted key (protect the file with its permissions instead)`);
  try {
    return createPrivateKey(pem);
  } catch {
    throw new TlsSetupError(`${source}: not a PEM private key (PKCS#8, SEC1 or PKCS#1)`);
  }
}

/**
 * Checks a chain and key before any listener uses them: the key must be
 * the server certificate's, and the certificate must be valid now. The
 * chain's trust is the clients' business (they may trust a private CA).
 */
export function serverTls(input: { certPem: string; keyPem: string; certSource: string; keySource: string; caFile: string | undefined }, now: number): ServerTls {
  const chain = certificatesOf(input.certPem, input.certSource);
  const certificate = chain[0] as X509Certificate;
  const key = privateKeyOf(input.keyPem, input.keySource);
  if (!certificate.checkPrivateKey(key)) throw new TlsSetupError(`${input.keySource}: this key does not belong to the certificate in ${input.certSource} (the server certificate must come first)`);
  if (Date.parse(certificate.validTo) <= now) throw new TlsSetupError(`${input.certSource}: the certificate expired on ${new Date(certificate.validTo).toISOString()}`);
  if (Date.parse(certificate.validFrom) > now) throw new TlsSetupError(`${input.certSource}: the certificate is not valid before ${new Date(certificate.validFrom).toISOString()}`);
  return { certPem: chain.map((c) => c.toString()).join(''), keyPem: input.keyPem, certificate, caFile: input.caFile };
}

/**
 * Options for node:tls and node:https servers. TLS 1.2 at least (RFC 9325
 * §3.1.1; Node's default too, stated so that it stays); TLS 1.3 (RFC 8446)
 * is preferred by both sides when available. A handshake that has not
 * finished after 10 s is dropped, so half-open connections cannot pile up
 * before any limit counts them as clients.
 */
export function tlsServerOptions(tls: ServerTls): SecureContextOptions & Pick<TlsOptions, 'handshakeTimeout'> {
  return { cert: tls.certPem, key: tls.keyPem, minVersion: 'TLSv1.2', handshakeTimeout: 10_000 };
}
