import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, chmod, chown, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

/**
 * A private PostgreSQL with TLS for tests of DATABASE_SSL and the
 * DATABASE_*_FILE settings: its own data folder and an ephemeral port on
 * 127.0.0.1 and 127.0.0.2, ssl=on with the certificate and key given, and
 * a pg_hba.conf that refuses every connection without TLS:
 *
 *   hostssl   all {certUser} 127.0.0.0/8 cert    (client certificate, CN = user)
 *   hostssl   all all        127.0.0.0/8 trust
 *   hostnossl all all        127.0.0.0/8 reject
 *
 * The machine's PostgreSQL is never touched. PostgreSQL refuses to run as
 * root, so when the tests run as root it runs as user postgres (runuser),
 * in a folder owned by that user. Only the server started here is stopped
 * (pg_ctl on its own data folder).
 */
const run = promisify(execFile);

export interface TlsPostgres {
  readonly port: number;
  /** A URL for `database` on `host` (127.0.0.1 by default) as `user` (postgres by default), no TLS parameters. */
  url(options?: { host?: string; user?: string; database?: string }): string;
  /** Creates a database (over TLS, as postgres) and returns its name. */
  createDatabase(prefix: string): Promise<string>;
  /** A client with superuser rights, over TLS without verification (for assertions). */
  admin(database?: string): Promise<pg.Client>;
  stop(): Promise<void>;
}

export interface TlsPostgresOptions {
  readonly cert: string;
  readonly key: string;
  /** CA for client certificates (ssl_ca_file). */
  readonly clientCa: string;
  /** The role that must log in with a client certificate (created here). */
  readonly certUser: string;
}

async function binDir(): Promise<string | undefined> {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = (await readdir(root)).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(root, versions[0], 'bin');
}

/** Why a private PostgreSQL cannot be started here, or undefined. */
export async function tlsPostgresUnavailable(): Promise<string | undefined> {
  if (!(await binDir())) return 'no PostgreSQL server binaries under /usr/lib/postgresql/*/bin';
  if (process.getuid?.() === 0) {
    try {
      await run('id', ['postgres']);
      await run('sh', ['-c', 'command -v runuser']);
    } catch {
      return 'running as root without a postgres user or runuser';
    }
  }
  return undefined;
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

export async function startTlsPostgres(options: TlsPostgresOptions): Promise<TlsPostgres> {
  const bin = await binDir();
  if (!bin) throw new Error('no PostgreSQL server binaries');
  const asRoot = process.getuid?.() === 0;
  const ids = asRoot ? await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]).then(([u, g]) => ({ uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()) })) : undefined;
  const as = (command: string, args: string[]) => (asRoot ? run('runuser', ['-u', 'postgres', '--', command, ...args]) : run(command, args));
  const own = async (path: string) => {
    if (ids) await chown(path, ids.uid, ids.gid);
  };

  const dir = await mkdtemp(join(tmpdir(), 'postgres-tls-'));
  await own(dir);
  const data = join(dir, 'data');
  const port = await freePort();
  try {
    await as(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8']);
    // PostgreSQL wants its key private to the user it runs as (0600).
    for (const [name, text, mode] of [
      ['server.crt', options.cert, 0o644],
      ['server.key', options.key, 0o600],
      ['client-ca.crt', options.clientCa, 0o644],
    ] as const) {
      const path = join(data, name);
      await writeFile(path, text);
      await chmod(path, mode);
      await own(path);
    }
    await appendFile(
      join(data, 'postgresql.conf'),
      [
        '',
        "listen_addresses = '127.0.0.1,127.0.0.2'",
        `port = ${port}`,
        `unix_socket_directories = '${dir}'`,
        'ssl = on',
        "ssl_cert_file = 'server.crt'",
        "ssl_key_file = 'server.key'",
        "ssl_ca_file = 'client-ca.crt'",
        'fsync = off',
        'max_connections = 40',
        'shared_buffers = 16MB',
        '',
      ].join('\n'),
    );
    await writeFile(
      join(data, 'pg_hba.conf'),
      ['local all all trust', `hostssl all ${options.certUser} 127.0.0.0/8 cert`, 'hostssl all all 127.0.0.0/8 trust', 'hostnossl all all 127.0.0.0/8 reject', ''].join('\n'),
    );
    await as(join(bin, 'pg_ctl'), ['-D', data, '-l', join(dir, 'server.log'), '-w', '-t', '30', 'start']);
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`private PostgreSQL did not start: ${error instanceof Error ? error.message : String(error)}`);
  }

  const url: TlsPostgres['url'] = ({ host = '127.0.0.1', user = 'postgres', database = 'postgres' } = {}) => `postgres://${user}@${host}:${port}/${database}`;
  const admin = async (database = 'postgres') => {
    const client = new pg.Client({ connectionString: url({ database }), ssl: { rejectUnauthorized: false } });
    await client.connect();
    return client;
  };
  const setup = await admin();
  await setup.query(`create role ${options.certUser} login superuser`);
  await setup.end();
  let counter = 0;
  return {
    port,
    url,
    admin,
    createDatabase: async (prefix) => {
      const name = `${prefix}_${++counter}`;
      const client = await admin();
      await client.query(`create database ${name}`);
      await client.end();
      return name;
    },
    stop: async () => {
      await as(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
