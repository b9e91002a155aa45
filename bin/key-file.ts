import { link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
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
  const path = keyFilePath(dataDir);
  try {
    return { pem: await readFile(path, 'utf8'), created: false };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await mkdir(dataDir, { recursive: true });
  const pem = await generateSigningKeyPem();
  const temporary = `${path}.${process.pid}.${crypto.randomUUID()}.tmp`;
  await writeFile(temporary, pem, { mode: 0o600, flag: 'wx' });
  try {
    await link(temporary, path);
    return { pem, created: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return { pem: await readFile(path, 'utf8'), created: false };
  } finally {
    await rm(temporary, { force: true });
  }
}

/** For the command-line tool: never creates a key (the service owns that). */
export async function readKeyPem(dataDir: string): Promise<string> {
  return readFile(keyFilePath(dataDir), 'utf8');
}
