import type { ClientConfig } from 'pg';
import type { DatabaseSslMode } from '../config.js';
import type { TlsMaterial } from '../tls/pem.js';

/**
 * How every PostgreSQL connection of the service is opened: the pool, the
 * migration runner, the LISTEN/NOTIFY control channel and the delivery
 * lease all build their client settings here, so they share one TLS
 * policy (DATABASE_SSL, DATABASE_*_FILE).
 *
 * With `tls` given, the URL's TLS parameters are removed and the TLS
 * options passed explicitly: node-postgres lets the connection string
 * override explicit options, reads files named in it (sslrootcert, ...)
 * itself and treats sslmode=require as verify-full; PGSSLMODE is ignored.
 *
 * - disable: plain TCP;
 * - require: TLS, the server's certificate is not checked (protects
 *   against eavesdropping only, like libpq's require without a root CA);
 * - verify-full: TLS, the chain must lead to DATABASE_CA_FILE (or to a
 *   public root Node.js trusts) and the certificate must name the URL's
 *   host (a DNS name, or an IP address in its subjectAltName).
 */
export interface PostgresTls {
  readonly mode: DatabaseSslMode;
  readonly material?: TlsMaterial;
}

export interface PostgresTarget {
  readonly url: string;
  /** Unset: the URL alone decides, the driver's way (tests, benchmarks). */
  readonly tls?: PostgresTls;
}

const URL_TLS_PARAMS = ['sslmode', 'ssl', 'sslrootcert', 'sslcert', 'sslkey', 'sslcrl', 'sslpassword', 'uselibpqcompat'];

export function pgClientConfig(target: PostgresTarget): ClientConfig {
  if (!target.tls) return { connectionString: target.url };
  const url = new URL(target.url);
  for (const name of URL_TLS_PARAMS) url.searchParams.delete(name);
  const { mode, material = {} } = target.tls;
  if (mode === 'disable') return { connectionString: url.toString(), ssl: false };
  const client = { ...(material.cert === undefined ? {} : { cert: material.cert }), ...(material.key === undefined ? {} : { key: material.key }) };
  if (mode === 'require') return { connectionString: url.toString(), ssl: { ...client, rejectUnauthorized: false } };
  // verify-full. node-postgres passes the URL's host to tls.connect (and as
  // SNI only when it is a name: RFC 6066 §3), so Node's default identity
  // check compares the certificate with the host the URL names.
  if (url.hostname === '') throw new Error('DATABASE_SSL=verify-full needs a host name or address in DATABASE_URL');
  return { connectionString: url.toString(), ssl: { ...client, ...(material.ca === undefined ? {} : { ca: material.ca }), rejectUnauthorized: true } };
}
