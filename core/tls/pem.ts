import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';

/**
 * PEM material for a TLS client connection (to the MQTT broker, PostgreSQL
 * or the SIP server): the CA certificates that anchor the server's chain,
 * and the client certificate chain with its key, when the server asks for
 * one. Checked here, once at start, so that a wrong file is reported by
 * its variable name before anything connects, not as an opaque handshake
 * error later. Reading the files is an edge's job (bin/outbound-tls-files.ts).
 */
export interface TlsMaterial {
  /** PEM CA certificates; undefined: the public roots Node.js trusts. */
  readonly ca?: string;
  /** PEM client certificate (chain), with `key`. */
  readonly cert?: string;
  /** PEM private key of `cert`. */
  readonly key?: string;
}

const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export class PemError extends Error {
  override readonly name = 'PemError';
}

/** The certificates in a PEM text (at least one), or a PemError naming `what`. */
export function parseCertificates(what: string, pem: string): X509Certificate[] {
  const blocks = pem.match(CERTIFICATE_BLOCK) ?? [];
  if (blocks.length === 0) throw new PemError(`${what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (error) {
      throw new PemError(`${what}: certificate ${i + 1} is not a valid X.509 certificate (${error instanceof Error ? error.message : String(error)})`);
    }
  });
}

/** The private key in a PEM text (unencrypted: the service has nobody to ask for a passphrase). */
export function parsePrivateKey(what: string, pem: string): KeyObject {
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) throw new PemError(`${what} holds no PEM private key (-----BEGIN PRIVATE KEY-----)`);
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(pem)) throw new PemError(`${what} holds an encrypted private key: give the key unencrypted (and readable by the service only)`);
  try {
    return createPrivateKey(pem);
  } catch (error) {
    throw new PemError(`${what} is not a usable private key (${error instanceof Error ? error.message : String(error)})`);
  }
}

/**
 * Checks CA, client certificate and key: each parses, the client
 * certificate's public key matches the key (else every handshake would fail
 * with "key values mismatch"), and nothing has expired yet at `now` (a
 * warning for the operator, returned rather than thrown: the clock may be
 * wrong, the server decides).
 */
export function checkTlsMaterial(names: { ca: string; cert: string; key: string }, material: TlsMaterial, now: number): { warnings: string[] } {
  const warnings: string[] = [];
  const expiry = (what: string, certificate: X509Certificate) => {
    if (Date.parse(certificate.validTo) < now) warnings.push(`${what}: certificate ${certificate.subject.replace(/\n/g, ', ')} expired on ${certificate.validTo}`);
  };
  if (material.ca !== undefined) for (const certificate of parseCertificates(names.ca, material.ca)) expiry(names.ca, certificate);
  if ((material.cert === undefined) !== (material.key === undefined)) throw new PemError(`${names.cert} and ${names.key}: give both or neither`);
  if (material.cert !== undefined && material.key !== undefined) {
    const [leaf] = parseCertificates(names.cert, material.cert);
    const key = parsePrivateKey(names.key, material.key);
    if (leaf === undefined || !leaf.checkPrivateKey(key)) throw new PemError(`${names.key} is not the private key of the first certificate in ${names.cert}`);
    expiry(names.cert, leaf);
  }
  return { warnings };
}
