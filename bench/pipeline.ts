import { sensorEventSchema, type SensorEvent } from '../core/events.js';
import { randomUUID } from 'node:crypto';
import { PresenceHub } from '../core/presence-hub.js';
import { decodeMessage } from '../ingest/decode-message.js';
import { evaluateConsent } from '../policy/evaluate-consent.js';
import { RuleBook } from '../policy/rule-book.js';
import { ruleBodySchema } from '../policy/rule.js';

/**
 * The ingest pipeline without the network, to see where CPU goes: per event,
 * decoding (JSON + zod) and applying, to owners someone watches (signal
 * merge + derivation, watchers told) and to owners nobody watches (signal
 * merge; the state is derived when next read), next to a bare JSON.parse
 * of the same payloads measured in the same run.
 *
 *   npm run build && node dist/bench/pipeline.js
 *
 * BENCH_EVENTS (default 200000), BENCH_OWNERS (1000).
 *
 * Then what resting costs (PresenceHub.restIdle; issue 6, memory):
 * BENCH_REST_OWNERS (default 20000) owners with five signals from two
 * devices (as bench/memory-child.ts), per owner: putting them at rest (two
 * sweeps: the signals packed, the derived state dropped), then one event
 * each to owners at rest (unpacked, merged, not derived: nobody watches),
 * against the same event to the same owners while busy and watched
 * (merged and derived), measured in the same run, and while busy and
 * unwatched (merged, the held state dropped).
 *
 * And what resting costs a consent policy (RuleBook.restIdle): as many
 * owners with one allow rule naming one watcher (UUID ids, as
 * bench/memory-child.ts), per owner: putting the policy at rest (two
 * sweeps: packed), then a read's consent decision for an owner at rest
 * (unpacked, frozen, indexed, evaluated) and resting again, against the
 * same decision for an owner whose policy is held, measured in the same
 * run.
 */
const events = Number(process.env.BENCH_EVENTS ?? 200_000);
const owners = Number(process.env.BENCH_OWNERS ?? 1000);
const base = Date.now() - events;
const payloads = Array.from({ length: events }, (_, i) =>
  Buffer.from(`{"kind":"user-input","at":"${new Date(base + i).toISOString()}","state":"${i % 2 ? 'active' : 'idle'}","lastInput":"${new Date(base).toISOString()}"}`),
);

function time(run: () => void): number {
  const start = performance.now();
  run();
  return ((performance.now() - start) * 1000) / events; // µs per event
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const bare: number[] = [];
const decode: number[] = [];
const apply: number[] = [];
const applyUnwatched: number[] = [];
for (let round = 0; round < 3; round++) {
  bare.push(time(() => payloads.forEach((p) => JSON.parse(p.toString('utf8')))));
  const decoded = payloads.map((p) => decodeMessage(p, { maxBytes: 16_384, maxClockSkewMs: 300_000 }, Date.now()));
  decode.push(time(() => payloads.forEach((p) => decodeMessage(p, { maxBytes: 16_384, maxClockSkewMs: 300_000 }, Date.now()))));
  for (const watched of [true, false]) {
    const hub = new PresenceHub({ offlineAfterMs: 3_600_000 });
    if (watched) for (let o = 0; o < owners; o++) hub.watch(`o${o}`, () => undefined);
    (watched ? apply : applyUnwatched).push(
      time(() =>
        decoded.forEach((d, i) => {
          if (d.ok) hub.apply(`o${i % owners}`, `d${i % owners}`, d.events, base + i);
        }),
      ),
    );
  }
}
const restOwners = Number(process.env.BENCH_REST_OWNERS ?? 20_000);
const ev = (raw: Record<string, unknown>): SensorEvent => sensorEventSchema.parse(raw);
const iso = (ms: number) => new Date(ms).toISOString();
/** An owner's five signals, as bench/memory-child.ts gives them (the Wi-Fi name already a digest). */
function fill(hub: PresenceHub, i: number, at: number) {
  hub.apply(`o${i}`, `p${i}`, [ev({ kind: 'call', at: iso(at), state: 'idle' }), ev({ kind: 'user-input', at: iso(at), state: 'active', lastInput: iso(at - 20_000) }), ev({ kind: 'network', at: iso(at), connection: 'wifi', network: 'abcdefghijABCDEFGHIJ_-' })], at);
  hub.apply(`o${i}`, `w${i}`, [ev({ kind: 'motion', at: iso(at), activity: 'still', confidence: 90, since: iso(at - 600_000) }), ev({ kind: 'battery', at: iso(at), level: i % 101, charging: false })], at);
}
const perOwner = (run: () => void | Promise<void>) => async () => {
  const start = performance.now();
  await run();
  return ((performance.now() - start) * 1000) / restOwners;
};
const rest: number[] = [];
const wake: number[] = [];
const busy: number[] = [];
const busyUnwatched: number[] = [];
for (let round = 0; round < 3; round++) {
  const hub = new PresenceHub({ offlineAfterMs: 3_600_000 });
  const at = Date.now() - 60_000;
  for (let i = 0; i < restOwners; i++) fill(hub, i, at);
  const call = (ms: number) => [ev({ kind: 'call', at: iso(ms), state: 'in-call' })];
  const later = call(at + 1000);
  // Watched while busy (a stream, a webhook, a SIP subscription): every change is derived and told.
  const unwatch = Array.from({ length: restOwners }, (_, i) => hub.watch(`o${i}`, () => undefined));
  busy.push(await perOwner(() => {
    for (let i = 0; i < restOwners; i++) hub.apply(`o${i}`, `p${i}`, later, at + 1000);
  })());
  for (const off of unwatch) off();
  const unwatchedLater = call(at + 1500);
  busyUnwatched.push(await perOwner(() => {
    for (let i = 0; i < restOwners; i++) hub.apply(`o${i}`, `p${i}`, unwatchedLater, at + 1500);
  })());
  hub.takeDirty();
  rest.push(await perOwner(async () => {
    await hub.restIdle();
    await hub.restIdle();
  })());
  if (hub.activeCount !== 0) throw new Error('owners still busy after two sweeps');
  const latest = call(at + 2000);
  wake.push(await perOwner(() => {
    for (let i = 0; i < restOwners; i++) hub.apply(`o${i}`, `p${i}`, latest, at + 2000);
  })());
}
const RULE_BODY = ruleBodySchema.parse({ conditions: { identity: { watchers: [randomUUID()] } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: true, place: 'type' } });
const policyRest: number[] = [];
const policyWake: number[] = [];
const policyHeld: number[] = [];
const policyRestAgain: number[] = [];
for (let round = 0; round < 3; round++) {
  const book = new RuleBook();
  const ownerIds = Array.from({ length: restOwners }, () => randomUUID());
  const watcherIds = ownerIds.map(() => randomUUID());
  ownerIds.forEach((ownerId, i) =>
    book.replace(ownerId, [{ ...RULE_BODY, id: randomUUID(), conditions: { ...RULE_BODY.conditions, identity: { ...RULE_BODY.conditions.identity, watchers: [watcherIds[i] as string] } } }]),
  );
  const context = { now: Date.now(), sphere: undefined, zone: undefined };
  let allowed = 0;
  const decideAll = () => {
    for (let i = 0; i < restOwners; i++) if (evaluateConsent(book.policy(ownerIds[i] as string), { id: watcherIds[i] as string, domain: undefined }, context).kind === 'allow') allowed += 1;
  };
  decideAll(); // indexed once, as a read would have
  policyHeld.push(await perOwner(decideAll)());
  policyRest.push(await perOwner(async () => {
    await book.restIdle();
    await book.restIdle();
  })());
  if (book.heldCount !== 0) throw new Error('policies still held after two sweeps');
  policyWake.push(await perOwner(decideAll)());
  // Resting again after a read: the usual cycle (a rule unpacked here packs again without serializing its skeleton).
  policyRestAgain.push(await perOwner(async () => {
    await book.restIdle();
    await book.restIdle();
  })());
  if (book.heldCount !== 0) throw new Error('policies still held after two more sweeps');
  if (allowed !== 3 * restOwners) throw new Error(`${3 * restOwners - allowed} decisions were not allow`);
}
const b = median(bare);
process.stdout.write(
  [
    `Pipeline without the network: ${events} events over ${owners} owners, median of 3 rounds`,
    '',
    '| step | µs per event | ratio to bare JSON.parse |',
    '|---|---|---|',
    `| bare JSON.parse (baseline) | ${b.toFixed(2)} | 1.00 |`,
    `| decode (JSON + zod + skew check) | ${median(decode).toFixed(2)} | ${(median(decode) / b).toFixed(2)} |`,
    `| apply, owner watched (signal merge + derivation, watchers told) | ${median(apply).toFixed(2)} | ${(median(apply) / b).toFixed(2)} |`,
    `| apply, owner unwatched (signal merge; derived when next read) | ${median(applyUnwatched).toFixed(2)} | ${(median(applyUnwatched) / b).toFixed(2)} |`,
    '',
    `Owners at rest: ${restOwners} owners with five signals from two devices, median of 3 rounds`,
    '',
    '| step | µs per owner | ratio to an event applied to a busy owner |',
    '|---|---|---|',
    `| one event, owner busy and watched (merge + derivation; baseline) | ${median(busy).toFixed(2)} | 1.00 |`,
    `| one event, owner busy and unwatched (merge; the held state dropped) | ${median(busyUnwatched).toFixed(2)} | ${(median(busyUnwatched) / median(busy)).toFixed(2)} |`,
    `| putting the owner at rest (two sweeps: pack, drop any derived state) | ${median(rest).toFixed(2)} | ${(median(rest) / median(busy)).toFixed(2)} |`,
    `| one event, owner at rest and unwatched (unpack + merge, no derivation) | ${median(wake).toFixed(2)} | ${(median(wake) / median(busy)).toFixed(2)} |`,
    '',
    `Policies at rest: ${restOwners} owners with one allow rule naming one watcher, median of 3 rounds`,
    '',
    '| step | µs per owner | ratio to a decision with the policy held |',
    '|---|---|---|',
    `| a read's consent decision, policy held (baseline) | ${median(policyHeld).toFixed(2)} | 1.00 |`,
    `| putting the policy at rest after a change (two sweeps: packed, its skeleton serialized) | ${median(policyRest).toFixed(2)} | ${(median(policyRest) / median(policyHeld)).toFixed(2)} |`,
    `| putting it at rest again after a read (the usual cycle) | ${median(policyRestAgain).toFixed(2)} | ${(median(policyRestAgain) / median(policyHeld)).toFixed(2)} |`,
    `| a read's consent decision, policy at rest (unpacked, frozen, indexed, evaluated) | ${median(policyWake).toFixed(2)} | ${(median(policyWake) / median(policyHeld)).toFixed(2)} |`,
    '',
  ].join('\n'),
);
