import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

/**
 * A private Mosquitto on an ephemeral port, for the benchmark and for tests
 * that need a broker configured their own way (authentication, ACLs). The
 * in-flight and queue limits are raised: with the defaults (20 and 1,000)
 * Mosquitto silently drops QoS 1 messages under a fast publisher.
 */
export interface PrivateBroker {
  readonly url: string;
  readonly port: number;
  /** The folder holding the configuration (and any files given to it). */
  readonly dir: string;
  /**
   * Stops mosquitto (SIGTERM: with persistence on, it saves its sessions and
   * queued messages) and starts it again on the same port and folder.
   */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface PrivateBrokerOptions {
  /** Extra mosquitto.conf lines; `{dir}` is replaced by the broker's folder. */
  readonly config?: readonly string[];
  /** Files to write into the folder before starting (name -> content). */
  readonly files?: Readonly<Record<string, string>>;
  /**
   * Keep persistent sessions, their subscriptions and queued QoS 1/2
   * messages across restart() (saved in the folder, after every change, so
   * a crash loses nothing either). Off by default: a broker that forgets
   * everything when stopped is what most tests want.
   */
  readonly persistence?: boolean;
  /**
   * A TLS listener (the URL becomes mqtts://): the server's certificate and
   * key, and the CA clients are checked against when `requireCertificate`
   * is set. (Debian 12's Mosquitto cannot open websockets listeners.)
   */
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca: string; readonly requireCertificate?: boolean };
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

export async function startPrivateBroker(options: PrivateBrokerOptions = {}): Promise<PrivateBroker> {
  const dir = await mkdtemp(join(tmpdir(), 'private-mosquitto-'));
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  for (const [name, content] of Object.entries(options.files ?? {})) await writeFile(join(dir, name), content, { mode: 0o600 });
  const extra = (options.config ?? ['allow_anonymous true']).map((line) => line.replaceAll('{dir}', dir));
  // Listener settings follow their listener line.
  const listener: string[] = [];
  if (options.tls) {
    await writeFile(join(dir, 'tls-ca.pem'), options.tls.ca, { mode: 0o600 });
    await writeFile(join(dir, 'tls-server.pem'), options.tls.cert, { mode: 0o600 });
    await writeFile(join(dir, 'tls-server.key'), options.tls.key, { mode: 0o600 });
    listener.push(`cafile ${join(dir, 'tls-ca.pem')}`, `certfile ${join(dir, 'tls-server.pem')}`, `keyfile ${join(dir, 'tls-server.key')}`, `require_certificate ${options.tls.requireCertificate ? 'true' : 'false'}`);
  }
  const persistence = options.persistence
    ? ['persistence true', `persistence_location ${dir}/`, 'autosave_on_changes true', 'autosave_interval 1']
    : ['persistence false'];
  await writeFile(
    conf,
    // `user`: mosquitto started as root drops to user mosquitto, which could
    // not read the private files in this 0700 folder; ignored when not root.
    [`listener ${port} 127.0.0.1`, ...listener, ...extra, `user ${userInfo().username}`, ...persistence, 'max_inflight_messages 1000', 'max_queued_messages 1000000', 'log_dest none', ''].join('\n'),
  );
  let running = await launch(conf, port).catch(async (error: unknown) => {
    // The folder may hold key files: not left behind.
    await rm(dir, { recursive: true, force: true });
    throw error;
  });
  return {
    url: `${options.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${port}`,
    port,
    dir,
    restart: async () => {
      await running.stop();
      running = await launch(conf, port);
    },
    stop: async () => {
      await running.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Starts mosquitto and waits until its port is taken (it listens). */
async function launch(conf: string, port: number): Promise<{ stop(): Promise<void> }> {
  const child: ChildProcess = spawn('mosquitto', ['-c', conf], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (let i = 0; i < 100; i++) {
    // Probed by connecting, not by listening on the port: a probe that
    // listens holds the port for a moment, and mosquitto, binding it just
    // then, exits with "address in use" (seen in a full run).
    const listening = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (listening || child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (child.exitCode !== null) throw new Error(`mosquitto exited at start (code ${child.exitCode})`);
  return {
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
