import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Test } from 'tap';
import type { ServiceOptions } from '../../bin/service.js';
import type { Config } from '../../core/config.js';
import { projectRoot, tempDir } from './env.js';
import { startTestService, testConfig, type TestService } from './service.js';

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

export interface EmbeddedWithCli {
  readonly dataDir: string;
  readonly config: Config;
  /** The service running now (restart() replaces it). */
  readonly service: TestService;
  /** The tool's environment: the data directory (for the signing key) and the running service's URL. */
  readonly cliEnv: () => Record<string, string>;
  readonly ctl: (...args: string[]) => Promise<Record<string, string>>;
  /** Closes the service, runs `between` (a change to the data directory), and starts another on the same data directory. */
  restart(between?: () => Promise<unknown>): Promise<TestService>;
}

/**
 * The service on the embedded defaults (PGlite under a fresh DATA_DIR, the
 * in-process broker), with `presencectl` pointed at it, for the tests that
 * set it up by hand as the README shows. Call it before any assertion at
 * the top level of a file: tap ends a root test that has asserted and has
 * no subtest queued, running its teardowns.
 */
export async function startEmbeddedWithCli(t: Test, options: ServiceOptions = {}): Promise<EmbeddedWithCli> {
  const dataDir = await tempDir(t);
  const config = await testConfig(t, { DATA_DIR: dataDir });
  let service = await startTestService(t, config, options);
  const cliEnv = () => ({ DATA_DIR: dataDir, PRESENCE_URL: service.httpUrl });
  return {
    dataDir,
    config,
    get service() {
      return service;
    },
    cliEnv,
    ctl: ctlFor(cliEnv),
    restart: async (between) => {
      await service.close();
      await between?.();
      service = await startTestService(t, config, options);
      return service;
    },
  };
}

/**
 * The README's hand set-up, through the tool: alice with a phone, Bob (a
 * person she allows) and Some App (a stranger with no rule), each watcher
 * with a token.
 */
export async function setUpAliceByHand(ctl: EmbeddedWithCli['ctl']) {
  const owner = await ctl('owner', 'create', 'alice', '--name', 'Alice');
  const device = await ctl('device', 'add', 'alice', '--class', 'phone');
  const watcher = await ctl('watcher', 'add', '--kind', 'person', '--name', 'Bob');
  const stranger = await ctl('watcher', 'add', '--kind', 'app', '--name', 'Some App');
  const watcherToken = (await ctl('token', 'watcher', watcher.id as string)).token as string;
  const strangerToken = (await ctl('token', 'watcher', stranger.id as string)).token as string;
  await ctl('allow', 'alice', watcher.id as string);
  return { owner, device, watcher, stranger, watcherToken, strangerToken };
}
