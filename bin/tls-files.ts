import { X509Certificate } from 'node:crypto';
import { chmod, link, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TlsSetting } from '../core/config.js';
import type { Log } from '../core/log.js';
import { generateLocalCa, issueServerCertificate, serverCertificateProblem, type PemPair } from '../core/tls/local-certificate.js';
import { certificatesOf, privateKeyOf, serverTls, TlsSetupError, type ServerTls } from '../core/tls/server-tls.js';

/**
 * The files behind inbound TLS. TLS_CERT_FILE/TLS_KEY_FILE are read as
 * given. Otherwise the service keeps, under DATA_DIR/tls/:
 *
 * - ca.pem, ca-key.pem: the local certificate authority, made on first
 *   start and then kept (clients trust ca.pem; replacing it would make them
 *   trust a new one), the key with mode 0600;
 * - server.pem, server-key.pem: the server certificate it signed, made
 *   again at start when it expires within 30 days, no longer covers the
 *   listen names, or was signed by another CA.
 */
export function tlsDir(dataDir: string): string {
  return join(dataDir, 'tls');
}

export async function loadServerTls(setting: Exclude<TlsSetting, { mode: 'off' }>, dataDir: string, now: number, log: Log): Promise<ServerTls> {
  if (setting.mode === 'files') {
    // One after the other: the first problem reported is always the same one.
    const certPem = await readText(setting.certFile, 'TLS_CERT_FILE');
    const keyPem = await readText(setting.keyFile, 'TLS_KEY_FILE');
    return serverTls({ certPem, keyPem, certSource: `TLS_CERT_FILE ${setting.certFile}`, keySource: `TLS_KEY_FILE ${setting.keyFile}`, caFile: undefined }, now);
  }
  const dir = tlsDir(dataDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caFile = join(dir, 'ca.pem');
  const ca = await loadOrCreateCa(dir, now, log);
  const caCertificate = certificatesOf(ca.cert, caFile)[0] as X509Certificate;
  const serverFile = join(dir, 'server.pem');
  const serverKeyFile = join(dir, 'server-key.pem');
  const stored = await readServerCertificate(serverFile, serverKeyFile);
  const problem = stored ? serverCertificateProblem(stored.certificate, caCertificate, setting.names, now) : 'none yet';
  let pair: PemPair;
  if (stored && problem === undefined) {
    pair = stored.pair;
  } else {
    pair = await issueServerCertificate(ca, setting.names, now);
    // Key first, then certificate, each replaced atomically: a crash in
    // between leaves a pair that does not match, which the next start
    // detects (the key check below) and replaces.
    await replaceFile(serverKeyFile, pair.key, 0o600);
    await replaceFile(serverFile, pair.cert, 0o644);
    log.info({ names: setting.names, reason: problem }, 'TLS: server certificate issued by the local certificate authority');
  }
  return serverTls({ certPem: pair.cert, keyPem: pair.key, certSource: serverFile, keySource: serverKeyFile, caFile }, now);
}

async function readText(path: string, variable: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new TlsSetupError(`${variable} ${path}: cannot be read (${code})`);
  }
}

/** The CA pair; made if neither file exists. One without the other is an error: the operator decides. */
async function loadOrCreateCa(dir: string, now: number, log: Log): Promise<PemPair> {
  const certFile = join(dir, 'ca.pem');
  const keyFile = join(dir, 'ca-key.pem');
  const [cert, key] = await Promise.all([readIfPresent(certFile), readIfPresent(keyFile)]);
  if (cert !== undefined && key !== undefined) {
    const certificate = certificatesOf(cert, certFile)[0] as X509Certificate;
    if (!certificate.checkPrivateKey(privateKeyOf(key, keyFile))) throw new TlsSetupError(`${keyFile} is not the key of ${certFile}: restore the pair, or remove both to make a new CA (clients then trust the new ca.pem)`);
    if (Date.parse(certificate.validTo) <= now) throw new TlsSetupError(`${certFile}: the local CA expired; remove ca.pem and ca-key.pem to make a new one (clients then trust the new ca.pem)`);
    return { cert, key };
  }
  if (cert !== undefined || key !== undefined) {
    throw new TlsSetupError(`${cert === undefined ? certFile : keyFile} is missing while ${cert === undefined ? keyFile : certFile} exists: restore it, or remove both to make a new CA (clients then trust the new ca.pem)`);
  }
  const made = await generateLocalCa(now);
  // The key is created exclusively (wx): two processes starting on one data
  // directory at once cannot both make a CA; the second one fails here and
  // its next start uses the first one's.
  await createExclusive(keyFile, made.key, 0o600);
  await replaceFile(certFile, made.cert, 0o644);
  log.info({}, 'TLS: local certificate authority created');
  return made;
}

async function readServerCertificate(certFile: string, keyFile: string): Promise<{ pair: PemPair; certificate: X509Certificate } | undefined> {
  const [cert, key] = await Promise.all([readIfPresent(certFile), readIfPresent(keyFile)]);
  if (cert === undefined || key === undefined) return undefined;
  try {
    // Ours to replace: anything unusable is simply issued again.
    const certificate = certificatesOf(cert, certFile)[0] as X509Certificate;
    if (!certificate.checkPrivateKey(privateKeyOf(key, keyFile))) return undefined;
    return { pair: { cert, key }, certificate };
  } catch {
    return undefined;
  }
}

async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TlsSetupError(`${path}: cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** Writes a temporary file with its final mode, then renames it over `path` (atomic on POSIX). */
async function replaceFile(path: string, text: string, mode: number): Promise<void> {
  const temporary = `${path}.${process.pid}.${crypto.randomUUID()}.tmp`;
  try {
    await writeFile(temporary, text, { mode, flag: 'wx' });
    await chmod(temporary, mode); // the umask may have narrowed it
    await rename(temporary, path);
  } finally {
    await rm(temporary, { force: true });
  }
}

async function createExclusive(path: string, text: string, mode: number): Promise<void> {
  const temporary = `${path}.${process.pid}.${crypto.randomUUID()}.tmp`;
  try {
    await writeFile(temporary, text, { mode, flag: 'wx' });
    await link(temporary, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new TlsSetupError(`${path}: another process is creating the local CA; start again`);
    throw error;
  } finally {
    await rm(temporary, { force: true });
  }
}
