import { generate } from 'selfsigned';

/**
 * A throw-away certificate authority for TLS tests (EC P-256, SHA-256),
 * made with the `selfsigned` package: a CA, and server or client
 * certificates it signs, with the subjectAltNames a test asks for.
 */
export interface Pem {
  readonly cert: string;
  readonly key: string;
}

export interface IssueOptions {
  readonly dns?: readonly string[];
  readonly ips?: readonly string[];
  readonly uris?: readonly string[];
  /** A client certificate (extKeyUsage clientAuth) instead of a server one. */
  readonly client?: boolean;
  /** Validity: from now to now + days (negative: already expired). */
  readonly days?: number;
}

export interface TestCa extends Pem {
  issue(commonName: string, options?: IssueOptions): Promise<Pem>;
}

export async function createTestCa(name = 'Presence Test CA'): Promise<TestCa> {
  const root = await generate([{ name: 'commonName', value: name }], {
    keyType: 'ec',
    algorithm: 'sha256',
    notAfterDate: new Date(Date.now() + 7 * 86_400_000),
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  const ca = { cert: root.cert, key: root.private };
  return {
    ...ca,
    issue: async (commonName, options = {}) => {
      const days = options.days ?? 7;
      const notBeforeDate = new Date(Date.now() + Math.min(0, days) * 86_400_000 - 3_600_000);
      const altNames = [
        ...(options.dns ?? []).map((value) => ({ type: 2 as const, value })),
        ...(options.uris ?? []).map((value) => ({ type: 6 as const, value })),
        ...(options.ips ?? []).map((ip) => ({ type: 7 as const, ip })),
      ];
      const leaf = await generate([{ name: 'commonName', value: commonName }], {
        keyType: 'ec',
        algorithm: 'sha256',
        notBeforeDate,
        notAfterDate: new Date(Date.now() + days * 86_400_000),
        ca,
        extensions: [
          { name: 'basicConstraints', cA: false, critical: true },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
          { name: 'extKeyUsage', serverAuth: !options.client, clientAuth: options.client === true },
          ...(altNames.length > 0 ? [{ name: 'subjectAltName' as const, altNames }] : []),
        ],
      });
      return { cert: leaf.cert, key: leaf.private };
    },
  };
}
