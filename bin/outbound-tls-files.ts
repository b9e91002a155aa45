import { readFile } from 'node:fs/promises';
import type { Config, DatabaseSslMode, TlsFiles } from '../core/config.js';
import { checkTlsMaterial, PemError, type TlsMaterial } from '../core/tls/pem.js';

/**
 * The PEM files of the outbound TLS settings (MQTT_*_FILE, DATABASE_*_FILE,
 * SIP_*_FILE), read once at start and checked (core/tls/pem.ts) before
 * anything connects: an unreadable or wrong file stops the start with an
 * error naming the variable and the path. Later changes to the files are
 * not picked up (restart the service after renewing a certificate).
 */
export interface OutboundTls {
  readonly mqtt: TlsMaterial | undefined;
  readonly database: { readonly mode: DatabaseSslMode; readonly material: TlsMaterial } | undefined;
  readonly sip: TlsMaterial | undefined;
  /** Things an operator should know (an expired certificate, a database connection that does not verify). */
  readonly warnings: readonly string[];
}

export class TlsFileError extends Error {
  override readonly name = 'TlsFileError';
}

async function readPem(variable: string, path: string | undefined): Promise<string | undefined> {
  if (path === undefined) return undefined;
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : error instanceof Error ? error.message : String(error);
    throw new TlsFileError(`${variable}: cannot read ${path}: ${why}`);
  }
}

async function load(prefix: 'MQTT' | 'DATABASE' | 'SIP', files: TlsFiles, now: number, warnings: string[]): Promise<TlsMaterial> {
  const names = { ca: `${prefix}_CA_FILE`, cert: `${prefix}_CERT_FILE`, key: `${prefix}_KEY_FILE` };
  const [ca, cert, key] = await Promise.all([readPem(names.ca, files.caFile), readPem(names.cert, files.certFile), readPem(names.key, files.keyFile)]);
  const material: TlsMaterial = { ...(ca === undefined ? {} : { ca }), ...(cert === undefined ? {} : { cert }), ...(key === undefined ? {} : { key }) };
  try {
    const checked = checkTlsMaterial(
      { ca: `${names.ca} (${files.caFile ?? ''})`, cert: `${names.cert} (${files.certFile ?? ''})`, key: `${names.key} (${files.keyFile ?? ''})` },
      material,
      now,
    );
    warnings.push(...checked.warnings);
  } catch (error) {
    if (error instanceof PemError) throw new TlsFileError(error.message);
    throw error;
  }
  return material;
}

export async function loadOutboundTls(tls: Config['outboundTls'], now = Date.now()): Promise<OutboundTls> {
  const warnings: string[] = [];
  const mqtt = tls.mqtt ? await load('MQTT', tls.mqtt, now, warnings) : undefined;
  const database = tls.database ? { mode: tls.database.mode, material: await load('DATABASE', tls.database.files, now, warnings) } : undefined;
  if (database?.mode === 'require') warnings.push("DATABASE_SSL=require: the database connection is encrypted but the server's certificate is not verified (use verify-full with DATABASE_CA_FILE)");
  const sip = tls.sip ? await load('SIP', tls.sip, now, warnings) : undefined;
  return { mqtt, database, sip, warnings };
}
