import pg from 'pg';
import { z } from 'zod';
import { handleSchema } from '../identifiers.js';
import type { Log } from '../log.js';
import { pgClientConfig, type PostgresTarget } from './pg-tls.js';

/**
 * Scale-out, control plane: PostgreSQL LISTEN on the channel the triggers of
 * migration 0008 notify after every committed change to owners, devices,
 * watchers, rules, groups, manual statuses, publications and webhooks, and
 * (0012) to token revocations and (0014) to links to external accounts. Each
 * process reloads what changed, so a rule revoked through one process holds
 * on every process at the next read (privacy invariant 5). Since 0016 the
 * payloads name the part of an owner that changed (`overrides`) and go on
 * presence_control_v2; 0017 stopped the earlier payloads on
 * presence_control, kept by 0016 for a rolling upgrade from the version
 * before it. Since 0018 a webhook of a handle no owner holds is announced
 * by that handle.
 *
 * A dedicated connection (LISTEN is per session). If it drops, changes may
 * have been missed while it was down: after reconnecting, `onResync` asks
 * for everything to be reloaded.
 */
export const CONTROL_CHANNEL = 'presence_control_v2';

const changeSchema = z.union([
  z.object({ owner: z.uuid() }).strict(),
  // Only these owners' manual statuses, app sessions or publications changed (migration 0016, one per statement): those alone are reloaded.
  z.object({ overrides: z.array(z.uuid()).min(1).max(100) }).strict(),
  z.object({ watcher: z.uuid() }).strict(),
  // The webhooks waiting on a handle no owner holds changed (migration 0018): those of that handle are reloaded.
  z.object({ handle: handleSchema }).strict(),
  // Token revocations by id or admin subject changed (migration 0012): reload them whole.
  z.object({ tokens: z.literal(true) }).strict(),
  // A link to an external account was removed or changed (migration 0014): verified tokens are forgotten.
  z.object({ identities: z.literal(true) }).strict(),
]);
export type ControlChange = z.infer<typeof changeSchema>;

export interface ControlListener {
  close(): Promise<void>;
}

export async function listenForChanges(
  target: PostgresTarget,
  handlers: {
    /** `ownConnection`: the change was committed on one of this process's own connections (see `isOwnBackend`). */
    onChange: (change: ControlChange, ownConnection: boolean) => void;
    onResync: () => void;
    /** Whether a notifying backend (by process id) is one of this process's own database connections. */
    isOwnBackend?: (processId: number) => boolean;
  },
  log: Log,
  retryMs = 1000,
): Promise<ControlListener> {
  let closed = false;
  let client: pg.Client | undefined;
  let retry: NodeJS.Timeout | undefined;

  const connect = async (): Promise<void> => {
    const next = new pg.Client(pgClientConfig(target));
    next.on('notification', (message) => {
      if (message.channel !== CONTROL_CHANNEL) return;
      let json: unknown;
      try {
        json = JSON.parse(message.payload ?? '');
      } catch {
        json = undefined;
      }
      const parsed = changeSchema.safeParse(json);
      if (parsed.success) handlers.onChange(parsed.data, handlers.isOwnBackend?.(message.processId) ?? false);
      else log.warn({ channel: CONTROL_CHANNEL }, 'control notification ignored (unexpected payload)');
    });
    next.on('error', (err) => {
      log.warn({ err: err.message }, 'control channel lost; reconnecting');
      void next.end().catch(() => undefined);
      if (client === next) client = undefined;
      schedule();
    });
    await next.connect();
    await next.query(`LISTEN ${CONTROL_CHANNEL}`);
    client = next;
  };

  const schedule = () => {
    if (closed || retry) return;
    retry = setTimeout(() => {
      retry = undefined;
      connect().then(
        () => handlers.onResync(),
        (err: unknown) => {
          log.warn({ err: err instanceof Error ? err.message : String(err) }, 'control channel reconnect failed');
          schedule();
        },
      );
    }, retryMs);
    retry.unref();
  };

  await connect();
  return {
    close: async () => {
      closed = true;
      clearTimeout(retry);
      await client?.end().catch(() => undefined);
    },
  };
}
