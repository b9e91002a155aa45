import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { projectRoot } from './env.js';

/**
 * Validates documents with the team's validate-pidf.sh (xmllint and
 * python3-xmlschema against the official XSDs): `../shared/schemas` beside
 * the checkout when present, else the copy vendored in tests/schemas.
 */
const run = promisify(execFile);

/** The schemas folder: `../shared/schemas` beside the checkout when present, else the vendored copy. */
export function schemasDir(): string {
  const shared = join(projectRoot, '..', 'shared', 'schemas');
  return existsSync(join(shared, 'validate-pidf.sh')) ? shared : join(projectRoot, 'tests', 'schemas');
}

export function validatorPath(): string {
  const shared = join(projectRoot, '..', 'shared', 'schemas', 'validate-pidf.sh');
  return existsSync(shared) ? shared : join(projectRoot, 'tests', 'schemas', 'validate-pidf.sh');
}

export async function validatePidf(documents: Record<string, string>, strict = true): Promise<{ ok: boolean; output: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'pidf-'));
  try {
    const files: string[] = [];
    for (const [name, xml] of Object.entries(documents)) {
      const file = join(dir, `${name}.xml`);
      await writeFile(file, xml);
      files.push(file);
    }
    try {
      const { stdout, stderr } = await run('bash', [validatorPath(), ...(strict ? ['--strict'] : []), ...files], { maxBuffer: 8 << 20 });
      return { ok: true, output: stdout + stderr };
    } catch (error) {
      const e = error as { stdout?: string; stderr?: string };
      return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
