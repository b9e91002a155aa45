import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/**
 * A private PostgreSQL on an ephemeral port, in a temporary folder, for
 * tests that stop, restart or kill the database under a running service
 * (the machine's shared PostgreSQL cannot be treated that way).
 *
 * PostgreSQL refuses to run as root: as root, initdb and the server run as
 * the `postgres` OS user (runuser), in a folder that user owns.
 *
 * No leak when the test process dies in any way (a failed assertion, a tap
 * timeout, a SIGKILL): the server is started by a small shell watchdog
 * that holds a pipe from this process on its stdin. When that pipe reaches
 * end-of-file because this process is gone, the watchdog shuts the server
 * down at once (SIGQUIT, immediate mode). Normal stops go through the same
 * pipe: the watchdog is told which signal to send. An exit hook removes
 * the folder too, for an exit while no watchdog runs (between halt() and
 * start(), or during a halt).
 */
export interface PrivatePostgres {
  /** `postgres://postgres@127.0.0.1:{port}/postgres` (trust authentication). */
  readonly url: string;
  readonly port: number;
  /** Stops the server (fast mode) and starts it again on the same port and data. */
  restart(): Promise<void>;
  /** Stops the server (fast mode: sessions are terminated, a checkpoint is written), keeping the data. */
  halt(): Promise<void>;
  /** Kills the server and all its processes with SIGKILL, as a crash would; start() runs crash recovery. */
  kill(): Promise<void>;
  /** Starts a halted or killed server again, on the same port and data. */
  start(): Promise<void>;
  /** Whether the server is running (between start and halt/kill). */
  readonly running: boolean;
  /** Stops the server if it runs and removes its folder. */
  stop(): Promise<void>;
}

/** The newest installed server, e.g. /usr/lib/postgresql/15/bin; or PG_BIN_DIR. */
export function postgresBinDir(): string {
  if (process.env.PG_BIN_DIR) return process.env.PG_BIN_DIR;
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((v) => existsSync(join(base, v, 'bin', 'postgres')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) throw new Error(`no PostgreSQL server under ${base} (set PG_BIN_DIR)`);
  return join(base, versions[0] as string, 'bin');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

// The watchdog ($1: the folder, then the server's command line): runs the
// server in the background, then waits for one line on stdin naming the
// signal to send. End-of-file means the test process died: SIGQUIT
// (PostgreSQL's immediate shutdown), and the folder is removed too.
const WATCHDOG = `
folder=$1
shift
"$@" &
server=$!
# A signal to the whole process group (timeout(1), a runner's group kill)
# reaches the server too; the watchdog outlives it to remove the folder.
trap '' TERM INT HUP
if read -r signal; then
  kill -"$signal" "$server" 2>/dev/null
  wait "$server"
else
  kill -QUIT "$server" 2>/dev/null
  wait "$server"
  rm -rf "$folder"
fi
`;

/** Direct children of a process (the postmaster's backends and auxiliary processes). */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // The command name, in parentheses, may hold spaces: fields start after the last ')'.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // The process ended while the list was read.
    }
  }
  return children;
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = postgresBinDir();
  const dir = await mkdtemp(join(tmpdir(), 'private-postgres-'));
  const data = join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  // As root, every PostgreSQL program runs as the postgres user, which must own the folder.
  const command = (program: string, args: string[]): [string, string[]] => (asRoot ? ['runuser', ['-u', 'postgres', '--', program, ...args]] : [program, args]);
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(dir, uid, gid);
  }
  const [initdb, initArgs] = command(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions']);
  try {
    execFileSync(initdb, initArgs, { stdio: 'pipe' });
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`initdb failed: ${stderr || String(error)}`);
  }
  const port = await freePort();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;

  let server: { child: ChildProcess; exited: Promise<void>; log: string } | undefined;
  const start = async () => {
    if (server) throw new Error('the private PostgreSQL is already running');
    const [program, args] = command('sh', [
      '-c',
      WATCHDOG,
      'watchdog',
      dir,
      join(bin, 'postgres'),
      '-D',
      data,
      '-p',
      String(port),
      '-k',
      dir,
      '-c',
      'listen_addresses=127.0.0.1',
      // Durability of the test database itself does not matter; speed does.
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
      '-c',
      'max_connections=50',
    ]);
    const child = spawn(program, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    const current = { child, exited: new Promise<void>((resolve) => child.once('exit', () => resolve())), log: '' };
    child.stderr?.on('data', (d: Buffer) => (current.log = (current.log + d.toString()).slice(-4000)));
    server = current;
    // Ready when it accepts a query (not merely the port: recovery may still be running).
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) {
        server = undefined;
        throw new Error(`postgres exited at start (code ${child.exitCode}): ${current.log}`);
      }
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
      const ok = await client.connect().then(
        () => client.query('select 1').then(() => true),
        () => false,
      );
      await client.end().catch(() => undefined);
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`postgres not ready after 30 s: ${current.log}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const signal = async (name: 'INT' | 'QUIT' | 'KILL') => {
    const current = server;
    if (!current) return;
    if (name === 'KILL') {
      // SIGKILL of the postmaster alone would leave its backends holding the
      // shared memory (the next start would refuse); a crash takes them all.
      const pidFile = join(data, 'postmaster.pid');
      const postmaster = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').split('\n')[0]) : NaN;
      if (Number.isInteger(postmaster) && postmaster > 0) {
        for (const pid of [postmaster, ...childrenOf(postmaster)]) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
      }
    }
    current.child.stdin?.end(`${name}\n`);
    await current.exited;
    server = undefined;
  };

  await start().catch(async (error: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw error;
  });
  // On any exit of this process (an uncaught error included) the folder
  // goes; a running server is shut down by its watchdog, which removes
  // whatever this left (the server may still write while it stops).
  const removeFolder = () => {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // The watchdog finishes it.
    }
  };
  process.once('exit', removeFolder);
  return {
    url,
    port,
    get running() {
      return server !== undefined;
    },
    start,
    halt: () => signal('INT'),
    kill: () => signal('KILL'),
    restart: async () => {
      await signal('INT');
      await start();
    },
    stop: async () => {
      process.off('exit', removeFolder);
      await signal('INT');
      await rm(dir, { recursive: true, force: true });
    },
  };
}
