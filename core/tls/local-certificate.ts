import { randomBytes, X509Certificate } from 'node:crypto';
import { generate } from 'selfsigned';
import { ipAddressOf } from './host-names.js';

/**
 * The embedded default's certificates: a local certificate authority made
 * once per data directory, and a server certificate it signs for the names
 * the service answers on. Clients trust the CA once (curl --cacert,
 * mosquitto_sub --cafile, a phone's trust store); the server certificate can
 * then be replaced whenever it nears expiry or the names change, without
 * anyone trusting anything again.
 *
 * Keys are EC P-256 with ECDSA-SHA256 (RFC 8446 §4.2.3
 * ecdsa_secp256r1_sha256, which every TLS 1.2 and 1.3 client supports).
 * Pure: files are read and written by the caller (bin/tls-files.ts).
 */
export interface PemPair {
  readonly cert: string;
  readonly key: string;
}

const DAY_MS = 86_400_000;
/** The CA lives long: replacing it means every client trusts it again. */
export const CA_DAYS = 3650;
/**
 * At most 397 days: Apple platforms refuse longer-lived server certificates
 * even from a CA the user added, and browsers apply the same cap.
 */
export const SERVER_CERT_DAYS = 397;
/** A server certificate this close to expiry is replaced at start. */
export const RENEW_BEFORE_DAYS = 30;

export async function generateLocalCa(now: number): Promise<PemPair> {
  // A name of its own (RFC 5280 §4.1.2.4): clients that trust several
  // machines' CAs find each server certificate's issuer by this name.
  const pems = await generate([{ name: 'commonName', value: `Presence service local CA ${randomBytes(4).toString('hex')}` }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(now - 60_000), // a minute of slack for clocks slightly behind
    notAfterDate: new Date(now + CA_DAYS * DAY_MS),
    extensions: [
      // RFC 5280 §4.2.1.9: a CA; path length 0, so it can sign server certificates only, not other CAs.
      { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
      // RFC 5280 §4.2.1.3
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

export async function issueServerCertificate(ca: PemPair, names: readonly string[], now: number): Promise<PemPair> {
  const pems = await generate([{ name: 'commonName', value: names[0] ?? 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(now - 60_000),
    notAfterDate: new Date(now + SERVER_CERT_DAYS * DAY_MS),
    ca: { cert: ca.cert, key: ca.key },
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      // RFC 9525 §6.3 (was RFC 6125): clients match the subjectAltName entries, not the common name.
      {
        name: 'subjectAltName',
        altNames: names.map((name) => {
          const ip = ipAddressOf(name);
          return ip === undefined ? { type: 2 as const, value: name } : { type: 7 as const, ip };
        }),
      },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

/**
 * Why a stored server certificate must be replaced, or undefined if it can
 * stay: not issued by this CA (the CA was replaced), expiring within
 * RENEW_BEFORE_DAYS, or not covering every name.
 */
export function serverCertificateProblem(cert: X509Certificate, ca: X509Certificate, names: readonly string[], now: number): string | undefined {
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return 'not issued by the local CA';
  if (Date.parse(cert.validTo) - now < RENEW_BEFORE_DAYS * DAY_MS) return 'expires soon';
  if (Date.parse(cert.validFrom) > now + 60_000) return 'not valid yet';
  for (const name of names) {
    const ip = ipAddressOf(name);
    const covered = ip === undefined ? cert.checkHost(name, { subject: 'never', wildcards: false }) !== undefined : cert.checkIP(ip) !== undefined;
    if (!covered) return `does not cover ${name}`;
  }
  return undefined;
}
