import { createHash } from 'node:crypto';
import { link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { generateSigningKeyPem } from '../core/identity/signing-key.js';

/**
 * The service's signing key: SIGNING_KEY if configured, else
 * `{DATA_DIR}/signing-key.pem`, created on first start with mode 0600.
 * The key is written to a private temporary file and then hard-linked into
 * place, which fails if the name exists: two processes starting at once
 * agree on one key, and neither can read a half-written file.
 */
export function keyFilePath(dataDir: string): string {
  return join(dataDir, 'signing-key.pem');
}

export async function loadOrCreateKeyPem(dataDir: string): Promise<{ pem: string; created: boolean }> {
  const { text, created } = await loadOrCreateSecret(keyFilePath(dataDir), generateSigningKeyPem);
  return { pem: text, created };
}

/**
 * The key of the Wi-Fi name digests (HMAC-SHA256, per owner): kept apart
 * from the signing key so that rotating the signing key does not change
 * the digests owners tagged their places with. NETWORK_DIGEST_KEY if set
 * (a group shares it); else `{DATA_DIR}/network-digest.key`, created on
 * first start from the signing key the way digests were keyed before, so
 * digests stored before this file existed stay valid.
 */
export async function loadOrCreateDigestKey(dataDir: string, configured: string | undefined, signingKeyPem: string): Promise<Buffer> {
  if (configured !== undefined) return Buffer.from(configured, 'base64url');
  const legacy = async () => createHash('sha256').update('presence network digest v1\0').update(signingKeyPem).digest().toString('base64url');
  const { text } = await loadOrCreateSecret(join(dataDir, 'network-digest.key'), legacy);
  const key = Buffer.from(text.trim(), 'base64url');
  if (key.length < 32) throw new Error(`${join(dataDir, 'network-digest.key')} must hold at least 32 bytes in base64url`);
  return key;
}

/** Reads a secret file, or writes it (mode 0600, atomically: first writer wins) with `make()`. */
async function loadOrCreateSecret(path: string, make: () => Promise<string>): Promise<{ text: string; created: boolean }> {
  try {
    return { text: await readFile(path, 'utf8'), created: false };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await mkdir(dirname(path), { recursive: true });
  const text = await make();
  const temporary = `${path}.${process.pid}.${crypto.randomUUID()}.tmp`;
  await writeFile(temporary, text, { mode: 0o600, flag: 'wx' });
  try {
    await link(temporary, path);
    return { text, created: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return { text: await readFile(path, 'utf8'), created: false };
  } finally {
    await rm(temporary, { force: true });
  }
}

/** For the command-line tool: never creates a key (the service owns that). */
export async function readKeyPem(dataDir: string): Promise<string> {
  return readFile(keyFilePath(dataDir), 'utf8');
}
