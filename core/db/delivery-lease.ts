import pg from 'pg';
import type { Log } from '../log.js';
import { pgClientConfig, type PostgresTarget } from './pg-tls.js';

/**
 * Scale-out: webhooks and SIP publications must leave from one process of
 * the group, or every watcher's URL and the SIP server would get each change
 * once per process (and the SIP server several competing publications per
 * presentity). The process holding a PostgreSQL session-level advisory lock
 * delivers; the lock goes with its session, so when that process dies (or
 * its connection does) another one's next try takes it over.
 */
// Distinct from the migration lock (core/db/connect.ts, "pres"), which every starting process waits on.
const LEASE_KEY = 0x64656c76; // "delv"

export interface DeliveryLease {
  readonly held: boolean;
  close(): Promise<void>;
}

export async function acquireDeliveryLease(target: PostgresTarget, onChange: (held: boolean) => void, log: Log, retryMs = 2000): Promise<DeliveryLease> {
  let client: pg.Client | undefined;
  let held = false;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;

  const set = (next: boolean) => {
    if (next === held) return;
    held = next;
    log.info({ held }, held ? 'delivering webhooks and SIP publications for the group' : 'delivery lease lost');
    onChange(held);
  };

  const attempt = async (): Promise<void> => {
    if (!client) {
      const next = new pg.Client(pgClientConfig(target));
      next.on('error', (err) => {
        log.warn({ err: err.message }, 'delivery lease connection lost');
        if (client === next) client = undefined;
        void next.end().catch(() => undefined);
        set(false);
      });
      await next.connect();
      client = next;
    }
    const { rows } = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1) as ok', [LEASE_KEY]);
    set(rows[0]?.ok === true);
  };

  const loop = () => {
    if (closed) return;
    timer = setTimeout(() => {
      const run = held ? Promise.resolve() : attempt();
      run.catch((err: unknown) => log.warn({ err: err instanceof Error ? err.message : String(err) }, 'delivery lease attempt failed')).finally(loop);
    }, retryMs);
    timer.unref();
  };

  await attempt().catch((err: unknown) => log.warn({ err: err instanceof Error ? err.message : String(err) }, 'delivery lease attempt failed'));
  loop();
  return {
    get held() {
      return held;
    },
    close: async () => {
      closed = true;
      clearTimeout(timer);
      set(false);
      await client?.end().catch(() => undefined);
    },
  };
}
