import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { projectRoot } from './env.js';

const run = promisify(execFile);

/** Runs the real `presencectl` binary; returns its exit code and parsed JSON output. */
export async function presencectl(env: Record<string, string>, ...args: string[]): Promise<{ code: number; json: unknown; stderr: string }> {
  const bin = join(projectRoot, 'dist', 'bin', 'presencectl.js');
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], { env: { PATH: process.env.PATH ?? '', ...env } });
    return { code: 0, json: JSON.parse(stdout) as unknown, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    const firstLine = (e.stderr ?? '').split('\n')[0] ?? '';
    let json: unknown;
    try {
      json = JSON.parse(firstLine);
    } catch {
      json = undefined;
    }
    return { code: typeof e.code === 'number' ? e.code : -1, json, stderr: e.stderr ?? '' };
  }
}

/**
 * `presencectl` for a test's set-up steps: the environment is read at each
 * call (a test that restarts its service hands the tool the new URL), and
 * a failure throws with what the tool printed.
 */
export function ctlFor(env: () => Record<string, string>): (...args: string[]) => Promise<Record<string, string>> {
  return async (...args) => {
    const result = await presencectl(env(), ...args);
    if (result.code !== 0) throw new Error(`presencectl ${args.join(' ')} failed: ${result.stderr}`);
    return result.json as Record<string, string>;
  };
}
