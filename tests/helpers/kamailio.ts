import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseMessage, type SipRequest } from '../../api/sip/message.js';
import { createUdpTransport } from '../../api/sip/transport.js';
import { projectRoot } from './env.js';

/**
 * A real Kamailio 5.6 presence server for tests, on an ephemeral port
 * (UDP and TCP) with its runtime files in a private temporary folder, and
 * sipp watchers to observe what it NOTIFYs. Configuration:
 * tests/kamailio/kamailio.cfg.template; scenarios: tests/kamailio/sipp/.
 *
 * Only processes started here are ever stopped, by their own PID (and, for
 * Kamailio, its own process group: the children it forked).
 */

const run = promisify(execFile);
const KAMAILIO_DIR = join(projectRoot, 'tests', 'kamailio');
const SQL_DIR = '/usr/share/kamailio/db_sqlite';

/** The Debian 12 packages the SIP integration test needs (the CI installs them). */
export const KAMAILIO_PACKAGES = ['kamailio', 'kamailio-presence-modules', 'kamailio-sqlite-modules', 'sqlite3', 'sip-tester'] as const;

async function onPath(binary: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${binary}`]);
    return true;
  } catch {
    return false;
  }
}

async function installed(): Promise<string | undefined> {
  for (const binary of ['kamailio', 'sipp', 'sqlite3']) if (!(await onPath(binary))) return `${binary} is not on PATH`;
  if (await onPath('dpkg')) {
    try {
      await run('dpkg', ['-s', ...KAMAILIO_PACKAGES]);
    } catch {
      return `not every package of ${KAMAILIO_PACKAGES.join(' ')} is installed`;
    }
  }
  if (!existsSync(join(SQL_DIR, 'presence-create.sql'))) return `${SQL_DIR}/presence-create.sql is missing`;
  return undefined;
}

let availability: Promise<string | undefined> | undefined;

/**
 * Undefined when Kamailio, sipp and sqlite3 are usable. When something is
 * missing, tries `apt-get install` (as start.sh does: root and apt-get
 * needed) and returns why it could not, for a skip message.
 */
export function kamailioUnavailable(): Promise<string | undefined> {
  availability ??= (async () => {
    const missing = await installed();
    if (missing === undefined) return undefined;
    const root = process.getuid?.() === 0;
    if (!root || !(await onPath('apt-get'))) return `${missing}; install ${KAMAILIO_PACKAGES.join(' ')} (apt-get needs root)`;
    try {
      await run('apt-get', ['update', '-qq'], { timeout: 120_000 });
      await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...KAMAILIO_PACKAGES], { timeout: 300_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    } catch (error) {
      return `${missing}, and apt-get install failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`;
    }
    const after = await installed();
    return after === undefined ? undefined : `${after} (even after apt-get install ${KAMAILIO_PACKAGES.join(' ')})`;
  })();
  return availability;
}

/** A port free for both TCP and UDP on 127.0.0.1 (Kamailio and sipp listen on both). */
export async function freeSipPort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const tcp = createServer();
    const port = await new Promise<number>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(0, '127.0.0.1', () => {
        const address = tcp.address();
        resolve(typeof address === 'object' && address ? address.port : 0);
      });
    });
    const udp = createSocket('udp4');
    const udpFree = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
    if (udpFree) {
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      return port;
    }
    udp.close();
  }
  throw new Error('no port free for both TCP and UDP');
}

/** The Debian 12 package of Kamailio's TLS module (SIP over TLS tests only). */
export const KAMAILIO_TLS_PACKAGE = 'kamailio-tls-modules';

let tlsAvailability: Promise<string | undefined> | undefined;

/** Undefined when Kamailio can serve TLS (its tls module is installed, or apt-get installed it now); else why not. */
export function kamailioTlsUnavailable(): Promise<string | undefined> {
  tlsAvailability ??= (async () => {
    const base = await kamailioUnavailable();
    if (base !== undefined) return base;
    const present = async () => {
      try {
        await run('dpkg', ['-s', KAMAILIO_TLS_PACKAGE]);
        return true;
      } catch {
        return false;
      }
    };
    if (await present()) return undefined;
    if (process.getuid?.() !== 0 || !(await onPath('apt-get'))) return `${KAMAILIO_TLS_PACKAGE} is not installed (apt-get needs root)`;
    try {
      await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', KAMAILIO_TLS_PACKAGE], { timeout: 300_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    } catch (error) {
      return `${KAMAILIO_TLS_PACKAGE} is not installed, and apt-get install failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`;
    }
    return (await present()) ? undefined : `${KAMAILIO_TLS_PACKAGE} is not installed`;
  })();
  return tlsAvailability;
}

export interface KamailioOptions {
  /** Demand digest credentials for PUBLISH (users named www* get 401, the others 407). */
  readonly auth?: { readonly password: string; readonly algorithm: 'MD5' | 'SHA-256' };
  /** publ_cache=2 / subs_db_mode=0 (see the template for the refresh quirk). */
  readonly inMemory?: boolean;
  /** Also SIP over TLS, with this server certificate and key (see kamailioTlsUnavailable). */
  readonly tls?: { readonly cert: string; readonly key: string };
}

export interface KamailioServer {
  readonly port: number;
  /** The TLS port, when started with `tls`. */
  readonly tlsPort: number | undefined;
  readonly dir: string;
  /** The server URI for the gateway configuration (`sips:` for TLS). */
  uri(transport: 'udp' | 'tcp' | 'tls'): string;
  /** What Kamailio logged so far. */
  log(): Promise<string>;
  stop(): Promise<void>;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Kills a process this module started: SIGTERM, then SIGKILL (its own process group when `group`). */
async function stopChild(child: ChildProcess, group: boolean): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (await waitExit(child, 5000)) return;
  try {
    if (group) process.kill(-pid, 'SIGKILL');
    else child.kill('SIGKILL');
  } catch {
    // already gone
  }
  await waitExit(child, 2000);
}

/** Starts Kamailio from the template on a free port and waits until it answers OPTIONS. */
export async function startKamailio(options: KamailioOptions = {}): Promise<KamailioServer> {
  // One more try on a fresh port and folder: a start can lose a race for its
  // port with another test, or (rarely) meet sqlite's lock while its children start.
  try {
    return await startKamailioOnce(options);
  } catch {
    return startKamailioOnce(options);
  }
}

async function startKamailioOnce(options: KamailioOptions): Promise<KamailioServer> {
  const dir = await mkdtemp(join(tmpdir(), 'kamailio-test-'));
  const port = await freeSipPort();
  const tlsPort = options.tls ? await freeSipPort() : undefined;
  const template = await readFile(join(KAMAILIO_DIR, 'kamailio.cfg.template'), 'utf8');
  const config = template
    .replaceAll('{{PORT}}', String(port))
    .replaceAll('{{TLS_PORT}}', String(tlsPort ?? 0))
    .replaceAll('{{RUNDIR}}', dir)
    .replaceAll('{{PASSWORD}}', options.auth?.password ?? '');
  const cfg = join(dir, 'kamailio.cfg');
  await writeFile(cfg, config);
  if (options.tls) {
    await writeFile(join(dir, 'tls-server.pem'), options.tls.cert);
    await writeFile(join(dir, 'tls-server.key'), options.tls.key, { mode: 0o600 });
    // The tls module's own configuration (one server profile, no client certificate required).
    await writeFile(
      join(dir, 'tls.cfg'),
      ['[server:default]', 'method = TLSv1.2+', 'verify_certificate = no', 'require_certificate = no', `private_key = ${join(dir, 'tls-server.key')}`, `certificate = ${join(dir, 'tls-server.pem')}`, '', '[client:default]', 'verify_certificate = no', 'require_certificate = no', ''].join('\n'),
    );
  }
  const db = join(dir, 'presence.db');
  if (options.inMemory) await writeFile(db, '');
  else {
    for (const schema of ['standard-create.sql', 'presence-create.sql']) await run('sh', ['-c', `sqlite3 "${db}" < "${join(SQL_DIR, schema)}"`]);
    // WAL is a property of the file: set once here, no child has to switch it at start.
    await run('sqlite3', [db, 'PRAGMA journal_mode=WAL;']);
  }

  const defines: string[] = [];
  if (options.auth) defines.push('-A', 'WITH_AUTH');
  if (options.auth?.algorithm === 'SHA-256') defines.push('-A', 'AUTH_SHA256');
  if (options.inMemory) defines.push('-A', 'IN_MEMORY');
  if (options.tls) defines.push('-A', 'WITH_TLS');
  try {
    await run('kamailio', ['-c', '-f', cfg, ...defines]);
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`kamailio rejected the configuration: ${error instanceof Error ? error.message : String(error)}`);
  }
  const logFile = join(dir, 'kamailio.log');
  const fd = openSync(logFile, 'a');
  // -DD: no daemon (it still forks its workers), -E: log to stderr. detached: its
  // own process group, so its workers can be reached if it must be killed.
  const child = spawn('kamailio', ['-f', cfg, '-DD', '-E', '-m', '64', '-M', '8', ...defines], { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  const log = (): Promise<string> => readFile(logFile, 'utf8').catch(() => '');
  const stop = async (): Promise<void> => {
    await stopChild(child, true);
    // KAMAILIO_TEST_KEEP=1 keeps the configuration and log for debugging.
    if (process.env.KAMAILIO_TEST_KEEP === '1') process.stderr.write(`kept ${dir}\n`);
    else await rm(dir, { recursive: true, force: true });
  };

  // Ready when it answers an OPTIONS (the config answers 200).
  const probe = await createUdpTransport({ remoteHost: '127.0.0.1', remotePort: port, timers: { t1Ms: 50, timerFMs: 200 } });
  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`kamailio exited (code ${child.exitCode}): ${(await log()).slice(-2000)}`);
      const ok = await probe
        .send({ method: 'OPTIONS', requestUri: `sip:127.0.0.1:${port}`, from: { uri: 'sip:probe@127.0.0.1', tag: `p${i}` }, to: { uri: `sip:127.0.0.1:${port}` }, callId: `probe-${i}-${port}`, cseq: 1 })
        .then((r) => r.status === 200)
        .catch(() => false);
      if (ok) break;
      if (i > 50) throw new Error(`kamailio did not answer on port ${port}: ${(await log()).slice(-2000)}`);
    }
  } catch (error) {
    await stop();
    throw error;
  } finally {
    await probe.close();
  }
  return { port, tlsPort, dir, uri: (transport) => (transport === 'tls' ? `sips:127.0.0.1:${tlsPort ?? 0}` : `sip:127.0.0.1:${port};transport=${transport}`), log, stop };
}

export interface SippRun {
  readonly port: number;
  /** Lines the scenario's <log> actions wrote so far. */
  logLines(): Promise<string[]>;
  /** Resolves with sipp's exit code when the scenario ends. */
  readonly exited: Promise<number | null>;
  /** The messages sipp received (parsed), once it ended. */
  received(): Promise<SipRequest[]>;
  /** sipp's error file (why a call failed). */
  errors(): Promise<string>;
  stop(): Promise<void>;
}

/** Runs one call of a scenario from tests/kamailio/sipp/ against the server. */
export async function startSipp(server: KamailioServer, scenario: string, transport: 'udp' | 'tcp', keys: Readonly<Record<string, string>>, dir: string): Promise<SippRun> {
  const port = await freeSipPort();
  const base = join(dir, `${scenario}-${transport}-${port}`);
  const args = [
    `127.0.0.1:${server.port}`,
    '-sf',
    join(KAMAILIO_DIR, 'sipp', `${scenario}.xml`),
    '-m',
    '1',
    '-i',
    '127.0.0.1',
    '-p',
    String(port),
    '-t',
    transport === 'udp' ? 'u1' : 't1',
    '-nostdin',
    '-timeout',
    '30',
    '-timeout_error',
    '-trace_msg',
    '-message_file',
    `${base}.msg`,
    '-trace_logs',
    '-log_file',
    `${base}.log`,
    '-trace_err',
    '-error_file',
    `${base}.err`,
  ];
  for (const [key, value] of Object.entries(keys)) args.push('-key', key, value);
  const child = spawn('sipp', args, { stdio: 'ignore' });
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(-1));
  });
  return {
    port,
    exited,
    logLines: async () =>
      (await readFile(`${base}.log`, 'utf8').catch(() => ''))
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean),
    received: async () => parseSippTrace(await readFile(`${base}.msg`, 'utf8').catch(() => '')),
    errors: () => readFile(`${base}.err`, 'utf8').catch(() => ''),
    stop: () => stopChild(child, false),
  };
}

/** The requests in a sipp -trace_msg file that sipp received (NOTIFYs and the like). */
export function parseSippTrace(trace: string): SipRequest[] {
  const out: SipRequest[] = [];
  for (const chunk of trace.split(/^-{20,}.*$/m)) {
    const match = /^\s*(?:UDP|TCP) message received \[(\d+)\] bytes :\r?\n\r?\n/.exec(chunk);
    if (!match) continue;
    const text = chunk.slice(match[0].length);
    const parsed = parseMessage(Buffer.from(text, 'utf8'));
    if (parsed.ok && parsed.value.kind === 'request') out.push(parsed.value);
  }
  return out;
}
