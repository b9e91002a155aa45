import { z } from 'zod';
import { sensorEventSchema } from './events.js';

/**
 * Scale-out: several service processes share one broker and one database.
 * Devices' messages are split between them by an MQTT shared subscription;
 * what each process applies it also publishes on a sync topic that every
 * process subscribes to, so each holds every owner's signals and a read or a
 * stream on any process sees what any other ingested. Merging signals is
 * commutative, associative and idempotent (core/signal-store.ts), so order,
 * duplicates and which process saw what first do not matter.
 *
 * Durability: a process writes what it ingested (write-behind) and then says
 * so (`persisted`, up to a sequence number). Until then the other processes
 * hold those owners as pending for it. When a process dies, the broker
 * publishes its will (`gone`), and the survivors write its pending owners
 * themselves. A device message is acknowledged (PUBACK) only after its sync
 * message was written to the same connection, so if the broker has the
 * acknowledgement it has the sync message too (TCP keeps the order); if it
 * does not, it delivers the device message again. Right after a
 * reconnect, while mqtt.js resends the messages it stored (one
 * acknowledgement at a time), it queues new publications and writes them
 * only when the resend is done: acknowledgements wait for that queue too,
 * and a queue dropped because that connection closed as well is published
 * again (both in ingest/cluster-sync.ts).
 */

/** One process lifetime: the MQTT client id (stable, unique per process) and a random suffix per start. */
export const nodeIdSchema = z.string().regex(/^[A-Za-z0-9_.-]{1,64}#[0-9a-z]{1,16}$/, 'must be {clientId}#{incarnation}');

const replicatedSignalSchema = z.object({ deviceId: z.uuid(), event: sensorEventSchema });

/** Signals one process applied to one owner (from a device, or its full set when taking over). */
export const syncSignalsSchema = z.object({
  v: z.literal(1),
  type: z.literal('signals'),
  node: nodeIdSchema,
  seq: z.number().int().nonnegative(),
  owner: z.uuid(),
  signals: z.array(replicatedSignalSchema).min(1).max(512),
});

/** Everything `node` applied up to `seq` is stored. */
export const syncPersistedSchema = z.object({ v: z.literal(1), type: z.literal('persisted'), node: nodeIdSchema, seq: z.number().int().nonnegative() });

/** The broker's will for `node`: its connection ended without a DISCONNECT. */
export const syncGoneSchema = z.object({ v: z.literal(1), type: z.literal('gone'), node: nodeIdSchema });

export const syncMessageSchema = z.discriminatedUnion('type', [syncSignalsSchema, syncPersistedSchema, syncGoneSchema]);

export type SyncMessage = z.infer<typeof syncMessageSchema>;
export type SyncSignals = z.infer<typeof syncSignalsSchema>;

/** Remembered dead incarnations (a bound: each restart adds one). */
const MAX_GONE = 1024;

/**
 * What this process holds on other processes' behalf: owners they applied
 * but have not yet said are stored. Pure bookkeeping; the caller does the
 * I/O.
 */
export class ReplicaLedger {
  private readonly pending = new Map<string, Map<string, number>>();
  private readonly gone = new Set<string>();

  /**
   * Notes that `node` applied signals of `owner` as its `seq`. Returns
   * 'write-here' when that node is gone (its late messages are this
   * process's to store), else 'pending'.
   */
  received(node: string, seq: number, owner: string): 'pending' | 'write-here' {
    if (this.gone.has(node)) return 'write-here';
    let owners = this.pending.get(node);
    if (!owners) {
      owners = new Map();
      this.pending.set(node, owners);
    }
    owners.set(owner, Math.max(seq, owners.get(owner) ?? 0));
    return 'pending';
  }

  /** `node` stored everything up to `seq`; a node that says so is alive (after a reconnect, say). */
  persisted(node: string, seq: number): void {
    this.gone.delete(node);
    const owners = this.pending.get(node);
    if (!owners) return;
    for (const [owner, s] of owners) if (s <= seq) owners.delete(owner);
    if (owners.size === 0) this.pending.delete(node);
  }

  /** `node` died: returns the owners it had not stored, now this process's to write. */
  takeOver(node: string): string[] {
    this.gone.add(node);
    if (this.gone.size > MAX_GONE) this.gone.delete(this.gone.values().next().value as string);
    const owners = [...(this.pending.get(node)?.keys() ?? [])];
    this.pending.delete(node);
    return owners;
  }

  /** Owners held for other processes (a gauge). */
  get pendingCount(): number {
    let n = 0;
    for (const owners of this.pending.values()) n += owners.size;
    return n;
  }
}
