import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8';
import { Directory } from '../core/directory.js';
import { sanitizeEvent } from '../core/events.js';
import { ownerSettingsSchema } from '../core/owner-settings.js';
import { PresenceHub } from '../core/presence-hub.js';
import { decodeMessage } from '../ingest/decode-message.js';
import { RuleBook } from '../policy/rule-book.js';
import { ruleBodySchema, type RuleBodyInput } from '../policy/rule.js';

/**
 * One measurement of bench/memory.ts in a fresh process (so heaps of
 * different sizes and of the service and the baseline never mix):
 *
 *   node --expose-gc dist/bench/memory-child.js <service|baseline> <owners> [snapshot]
 *
 * Builds `owners` owners' state, stage by stage, and measures resident
 * memory (rss) and heap (heapUsed + external) after full GCs (two before the
 * first stage and after the last, one between the service's stages), and
 * resident memory again once settled (settle()).
 * Prints one JSON line: MemoryResult.
 *
 * service: the service's own in-memory structures, built through their
 * public APIs the way the service fills them (bin/service.ts loadSnapshot
 * at start, then ingest):
 *   - Directory: the owner (id, handle), its settings as loaded at start
 *     (the settings column defaults to {}, which is parsed into a settings
 *     object per owner), and two devices (a phone and a watch);
 *   - RuleBook: one allow rule per owner naming one watcher (availability,
 *     activities, place type), parsed by ruleBodySchema as at start;
 *   - PresenceHub: two MQTT messages decoded by ingest's decodeMessage and
 *     sanitized as the ingest pipeline does, the phone's (call, user-input,
 *     network with a Wi-Fi name, digested) and the watch's (motion,
 *     battery), applied with hub.apply (signals and the derived state);
 *     the write-behind's takeDirty drains the dirty set every 10,000 owners
 *     as the persister would, and the hub's sweep (restIdle, every 15 s in
 *     bin/service.ts) runs as often, so owners idle since the previous
 *     sweep rest (signals packed, derived state dropped) as they would in a
 *     service whose owners report over time; two more sweeps at the end put
 *     the last ones at rest; BENCH_MEMORY_ROUNDS (default 1) sends every owner's messages
 *     that many times, for the churn of a service that has run a while;
 *   - one hub.current per owner, as a read would (all owners busy at once),
 *     then two sweeps (the hub's and the rule book's, as bin/service.ts
 *     runs them) with nothing read or changed: the last sample, the
 *     headline, is every owner at rest, as most of a million owners are
 *     at any time (an owner rests 15 to 30 s after it was last read or
 *     changed; the stage before is the most the hub holds).
 * Every structure gets its own copy of the id strings, as when each is
 * loaded from its own database rows at start. The inputs are made on the
 * fly from ids kept outside the heap, so they are not counted.
 *
 * baseline: the same information held as plainly as possible, a
 * Map<ownerId, string> of one compact JSON text per owner: the handle, the
 * devices (id, class), the rule as the owner sent it and the last message
 * each device sent (after the same sanitizing: the digest, not the Wi-Fi
 * name), as flat strings. Derived state is left out: it can be computed
 * from the rest. Then, as a second stage, a second Map holding only the
 * owner's signals (the two messages with their device ids), for reference.
 *
 * With `snapshot`, a heap snapshot is written after the build, summarised
 * by node type and constructor, and deleted (the parent compares two sizes,
 * so that what does not grow with the owners cancels out).
 */
type Mode = 'service' | 'baseline';

export interface Sample {
  readonly stage: string;
  /** Resident memory once settled (see settle()): the headline. */
  readonly rss: number;
  /** Resident memory right after the stage's full GCs, before settling: V8 may still be returning freed pages. */
  readonly rssAtOnce: number;
  readonly heap: number;
  /** How long the stage took to build, without the measurement. */
  readonly ms: number;
}

export interface MemoryResult {
  readonly mode: Mode;
  readonly owners: number;
  /** Before the first stage, then after each stage (cumulative). */
  readonly samples: readonly Sample[];
  /** Mean length in characters of the baseline's JSON texts per owner. */
  readonly textChars?: { readonly all: number; readonly signals: number };
  readonly buildMs: number;
  /** The whole heap after the build by "type:constructor" (snapshot mode): self sizes and counts. */
  readonly snapshot?: readonly { readonly what: string; readonly bytes: number; readonly count: number }[];
}

const [modeArg, ownersArg, snapshotArg] = process.argv.slice(2);
if (modeArg !== 'service' && modeArg !== 'baseline') throw new Error('usage: memory-child.js <service|baseline> <owners> [snapshot]');
const mode: Mode = modeArg;
const owners = Number(ownersArg);
if (!Number.isInteger(owners) || owners < 1) throw new Error(`bad owner count ${ownersArg}`);
const takeSnapshots = snapshotArg === 'snapshot';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');
const collect: () => void = gc;

let stageStarted = performance.now();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const MiB = 1024 * 1024;

/**
 * Lets the heap settle: full GCs until one no longer shrinks the heap by a
 * MiB (V8 moves only a few MB out of fragmented pages per full GC, so pages
 * left sparse by the stage's garbage are emptied over several, as they are
 * over the many full GCs of a service that has run a while), then waits
 * until resident memory stops falling (V8 returns the pages it freed from a
 * background thread, after the GC: measured right after, tens of MB of
 * already freed pages still count as resident). At most 8 GCs and 2 s.
 */
async function settle(): Promise<void> {
  let heapTotal = process.memoryUsage().heapTotal;
  for (let pass = 0; pass < 8; pass++) {
    collect();
    const now = process.memoryUsage().heapTotal;
    const shrunk = heapTotal - now;
    heapTotal = now;
    if (shrunk < MiB) break;
  }
  let rss = process.memoryUsage().rss;
  for (let waited = 0; waited < 2000; waited += 100) {
    await sleep(100);
    const now = process.memoryUsage().rss;
    if (rss - now < MiB / 4) break;
    rss = now;
  }
}

/**
 * BENCH_MEMORY_SPACES=1: each sample also prints V8's heap spaces to stderr
 * (MB resident and used), to see where resident memory above the heap goes.
 */
const showSpaces = process.env.BENCH_MEMORY_SPACES === '1';
function logSpaces(stage: string, rss: number): void {
  const mb = (n: number) => (n / MiB).toFixed(1);
  const spaces = getHeapSpaceStatistics()
    .filter((s) => s.physical_space_size > MiB)
    .map((s) => `${s.space_name} ${mb(s.physical_space_size)}/${mb(s.space_used_size)}`)
    .join(', ');
  process.stderr.write(`[${mode} ${owners}] ${stage}: rss ${mb(rss)} MB; resident/used MB: ${spaces}\n`);
}

/**
 * Two full GCs before the samples the headline is computed from, one
 * between the service's stages (a full GC of a 5 GB heap takes seconds);
 * resident memory then as it is at once, and settled (the headline).
 */
async function measure(stage: string, passes = 2): Promise<Sample> {
  const ms = performance.now() - stageStarted;
  for (let pass = 0; pass < passes; pass++) collect();
  const rssAtOnce = process.memoryUsage().rss;
  await settle();
  const m = process.memoryUsage();
  if (showSpaces) logSpaces(stage, m.rss);
  stageStarted = performance.now();
  return { stage, rss: m.rss, rssAtOnce, heap: m.heapUsed + m.external, ms };
}

const NOW = Date.now();
const ROUNDS = Number(process.env.BENCH_MEMORY_ROUNDS ?? 1);
/** RFC 3339 in UTC, as Date#toISOString, without its cost (the bench makes millions). */
const minutePrefixes = new Map<number, string>();
function iso(ms: number): string {
  const minute = ms - (ms % 60_000);
  let prefix = minutePrefixes.get(minute);
  if (prefix === undefined) {
    prefix = new Date(minute).toISOString().slice(0, 17);
    minutePrefixes.set(minute, prefix);
  }
  const rest = ms - minute;
  return `${prefix}${String(Math.floor(rest / 1000)).padStart(2, '0')}.${String(rest % 1000).padStart(3, '0')}Z`;
}
const DECODE_LIMITS = { maxBytes: 64 * 1024, maxClockSkewMs: 300_000 };
const DIGEST_KEY = randomBytes(32);
/** As bin/service.ts digests a Wi-Fi name (keyed, per owner, 22 characters). */
const digestNetworkName = (ownerId: string, ssid: string) => createHmac('sha256', DIGEST_KEY).update(ownerId).update('\0').update(ssid).digest('base64url').slice(0, 22);
const NAMES = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'ivan', 'judy'];
const SSIDS = ['HomeNet-5G', 'FRITZ!Box 7590 XY', 'eduroam', 'Office-Guest', 'Vodafone-8F2C'];

/**
 * The owners' random ids (owner, phone, watch, rule, the watcher the rule
 * names), kept as bytes outside the JavaScript heap, so that the inputs are
 * not counted and cost the GC nothing. Each call returns a new flat string,
 * as each structure gets its own when loaded from its own database rows at
 * start. (crypto.randomUUID() itself returns a tree of concatenated strings,
 * ~490 bytes on Node 20, until something flattens it.)
 */
const ID_KINDS = ['owner', 'phone', 'watch', 'rule', 'watcher'] as const;
type IdKind = (typeof ID_KINDS)[number];
const HEX = Buffer.from('0123456789abcdef', 'latin1');

class Ids {
  private readonly bytes: Buffer;
  private readonly text = Buffer.alloc(36);

  constructor(count: number) {
    this.bytes = randomBytes(count * ID_KINDS.length * 16);
    for (let at = 0; at < this.bytes.length; at += 16) {
      this.bytes[at + 6] = ((this.bytes[at + 6] ?? 0) & 0x0f) | 0x40; // RFC 9562 version 4
      this.bytes[at + 8] = ((this.bytes[at + 8] ?? 0) & 0x3f) | 0x80; // variant
    }
  }

  id(i: number, kind: IdKind): string {
    const from = (i * ID_KINDS.length + ID_KINDS.indexOf(kind)) * 16;
    let out = 0;
    for (let b = 0; b < 16; b++) {
      if (b === 4 || b === 6 || b === 8 || b === 10) this.text[out++] = 0x2d;
      const byte = this.bytes[from + b] ?? 0;
      this.text[out++] = HEX[byte >> 4] ?? 0;
      this.text[out++] = HEX[byte & 15] ?? 0;
    }
    return this.text.toString('latin1');
  }
}

const handleOf = (i: number) => Buffer.from(`${NAMES[i % NAMES.length]}.${i.toString(36)}`, 'latin1').toString('latin1');

function ruleOf(ids: Ids, i: number): RuleBodyInput {
  return {
    conditions: { identity: { watchers: [ids.id(i, 'watcher')] } },
    actions: { subHandling: 'allow' },
    transformations: { availability: true, activities: true, place: 'type' },
  };
}

/** What the owner's phone and watch report (times within the last minute). */
function eventsOf(i: number) {
  const ago = () => NOW - Math.floor(Math.random() * 60_000);
  const phoneAt = ago();
  const watchAt = ago();
  return {
    phone: [
      { kind: 'call', at: iso(phoneAt), state: i % 10 === 0 ? 'in-call' : 'idle' },
      { kind: 'user-input', at: iso(phoneAt), state: 'active', lastInput: iso(phoneAt - Math.floor(Math.random() * 30_000)) },
      { kind: 'network', at: iso(phoneAt), connection: 'wifi', ssid: SSIDS[i % SSIDS.length] as string },
    ],
    watch: [
      { kind: 'motion', at: iso(watchAt), activity: i % 7 === 0 ? 'walking' : 'still', confidence: 80 + (i % 20), since: iso(watchAt - 600_000) },
      { kind: 'battery', at: iso(watchAt), level: i % 101, charging: i % 3 === 0 },
    ],
  };
}

/** The MQTT payloads, as the devices publish them. */
function messagesOf(i: number): { phone: string; watch: string } {
  const events = eventsOf(i);
  return { phone: JSON.stringify({ events: events.phone }), watch: JSON.stringify({ events: events.watch }) };
}

/** As ingest does: decode (JSON, zod, skew check), then sanitize. */
function decoded(ownerId: string, payload: string) {
  const result = decodeMessage(Buffer.from(payload), DECODE_LIMITS, NOW);
  if (!result.ok) throw new Error(`bench event refused: ${result.reason}`);
  return result.events.map((event) => sanitizeEvent(event, (ssid) => digestNetworkName(ownerId, ssid)));
}

interface Service {
  readonly directory: Directory;
  readonly ruleBook: RuleBook;
  readonly hub: PresenceHub;
}

/** Builds the service's structures for `count` owners, calling `after` after each stage (`last` for the last). */
async function buildService(ids: Ids, count: number, after: (stage: string, last: boolean) => Promise<void>): Promise<Service> {
  const directory = new Directory();
  const ruleBook = new RuleBook();
  const hub = new PresenceHub({ offlineAfterMs: 900_000 }, (ownerId) => directory.settings(ownerId));
  for (let i = 0; i < count; i++) {
    directory.putOwner({ id: ids.id(i, 'owner'), handle: handleOf(i) });
    directory.putDevice({ id: ids.id(i, 'phone'), ownerId: ids.id(i, 'owner'), deviceClass: 'phone', revoked: false });
    directory.putDevice({ id: ids.id(i, 'watch'), ownerId: ids.id(i, 'owner'), deviceClass: 'watch', revoked: false });
  }
  await after('directory: owners and devices', false);
  for (let i = 0; i < count; i++) directory.putSettings(ids.id(i, 'owner'), ownerSettingsSchema.parse({}));
  await after('directory: settings parsed at start', false);
  // Keyed as bin/service.ts applySnapshot keys them: by the directory's copy of the owner id.
  for (let i = 0; i < count; i++) ruleBook.replace(directory.ownerId(ids.id(i, 'owner')), [{ ...ruleBodySchema.parse(ruleOf(ids, i)), id: ids.id(i, 'rule') }]);
  await after('rule book: one allow rule', false);
  // Every owner's devices report, ROUNDS times over.
  for (let step = 0; step < ROUNDS * count; step++) {
    const i = step % count;
    // Ingest takes the owner from the device record the topic names.
    const phone = directory.activeDevice(ids.id(i, 'phone'));
    const watch = directory.activeDevice(ids.id(i, 'watch'));
    if (!phone || !watch) throw new Error('device missing');
    const messages = messagesOf(i);
    hub.apply(phone.ownerId, phone.id, decoded(phone.ownerId, messages.phone), NOW);
    hub.apply(watch.ownerId, watch.id, decoded(watch.ownerId, messages.watch), NOW);
    if ((step + 1) % 10_000 === 0) {
      hub.takeDirty(); // the write-behind drains it
      // And the sweep runs (bin/service.ts, every STATE_REST_MS): owners idle
      // since the previous sweep rest, so no more than the last two slices
      // are ever busy, as in a service whose owners report over time rather
      // than all at once.
      await hub.restIdle();
      await ruleBook.restIdle();
    }
  }
  hub.takeDirty();
  await after('hub: signals and derived state (apply, swept as it goes)', false);
  // Every owner read at once: each holds its derived state again (the most
  // the hub holds: every owner read within one sweep period).
  let online = 0;
  for (let i = 0; i < count; i++) {
    const ownerId = ids.id(i, 'owner');
    // A read consults the owner's policy (api/watcher-views.ts) and state.
    if (ruleBook.policy(ownerId).rules.length !== 1) throw new Error('policy missing');
    if (hub.current(ownerId, NOW).availability !== 'offline') online += 1;
  }
  if (online !== count) throw new Error(`${count - online} owners derived offline`);
  await after('one read each: policy and state (all owners busy)', false);
  // Two more sweeps with nothing read or changed: every owner is at rest
  // (bin/service.ts sweeps the hub and the rule book together).
  for (let sweep = 0; sweep < 2; sweep++) {
    await hub.restIdle();
    await ruleBook.restIdle();
  }
  if (hub.activeCount !== 0) throw new Error(`${hub.activeCount} owners not at rest`);
  if (ruleBook.heldCount !== 0) throw new Error(`${ruleBook.heldCount} owners' policies not at rest`);
  await after('two idle sweeps (all owners at rest: signals and policies packed)', true);
  return { directory, ruleBook, hub };
}

/** A flat copy: JSON.stringify returns a tree of concatenated parts, not what a bare store would keep. */
const flat = (text: string) => Buffer.from(text, 'latin1').toString('latin1');

/**
 * Two plain maps, one after the other: first everything the service is
 * given for the owner (the headline baseline), then the owner's signals
 * alone (the devices' last messages with their device ids).
 */
async function buildBaseline(ids: Ids, count: number, after: (stage: string) => Promise<void>): Promise<{ maps: Map<string, string>[]; chars: number; signalChars: number }> {
  const all = new Map<string, string>();
  let chars = 0;
  // The events as the service keeps them (the Wi-Fi name replaced by its
  // digest), without the decoding: the baseline needs no validation.
  const messages = (i: number, ownerId: string) => {
    const { phone, watch } = eventsOf(i);
    const sanitized = phone.map((event) => {
      const { ssid, ...rest } = event;
      return ssid === undefined ? event : { ...rest, network: digestNetworkName(ownerId, ssid) };
    });
    return [
      { device: ids.id(i, 'phone'), events: sanitized },
      { device: ids.id(i, 'watch'), events: watch },
    ];
  };
  for (let i = 0; i < count; i++) {
    const ownerId = ids.id(i, 'owner');
    const text = flat(
      JSON.stringify({
        handle: handleOf(i),
        devices: [
          { id: ids.id(i, 'phone'), class: 'phone' },
          { id: ids.id(i, 'watch'), class: 'watch' },
        ],
        rules: [{ id: ids.id(i, 'rule'), ...ruleOf(ids, i) }],
        messages: messages(i, ownerId),
      }),
    );
    chars += text.length;
    all.set(ownerId, text);
  }
  await after('baseline: owner data as JSON text in a Map');
  const signals = new Map<string, string>();
  let signalChars = 0;
  for (let i = 0; i < count; i++) {
    const ownerId = ids.id(i, 'owner');
    const text = flat(JSON.stringify(messages(i, ownerId)));
    signalChars += text.length;
    signals.set(ownerId, text);
  }
  await after('baseline: owner signals as JSON text in a Map');
  return { maps: [all, signals], chars: chars / count, signalChars: signalChars / count };
}

/** Bytes (self size) and counts by "type:name" in a V8 heap snapshot. */
function summariseSnapshot(file: string): Map<string, { bytes: number; count: number }> {
  interface Snapshot {
    snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
    nodes: number[];
    strings: string[];
  }
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const out = new Map<string, { bytes: number; count: number }>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt] ?? 0] ?? '?';
    // Strings are grouped by type only (their names are their contents).
    const name = type === 'string' || type === 'concatenated string' || type === 'sliced string' || type === 'number' ? '' : (snap.strings[snap.nodes[i + nameAt] ?? 0] ?? '?');
    const key = name ? `${type}:${name.slice(0, 60)}` : type;
    const entry = out.get(key) ?? { bytes: 0, count: 0 };
    entry.bytes += snap.nodes[i + sizeAt] ?? 0;
    entry.count += 1;
    out.set(key, entry);
  }
  return out;
}

function snapshotNow(): Map<string, { bytes: number; count: number }> {
  collect();
  collect();
  const file = writeHeapSnapshot(join(tmpdir(), `presence-memory-${process.pid}.heapsnapshot`));
  try {
    return summariseSnapshot(file);
  } finally {
    rmSync(file, { force: true });
  }
}

// Warm up with a throwaway set: the code is compiled and the young
// generation has grown before the first sample, so neither is counted.
const warmCount = Math.min(5000, Math.ceil(owners / 20));
const nothing = () => Promise.resolve();
if (mode === 'service') await buildService(new Ids(warmCount), warmCount, nothing);
else await buildBaseline(new Ids(warmCount), warmCount, nothing);

const ids = new Ids(owners);
const samples: Sample[] = [await measure('before')];
let keep: unknown;
let textChars: MemoryResult['textChars'];
if (mode === 'service') {
  keep = await buildService(ids, owners, async (stage, last) => void samples.push(await measure(stage, last ? 2 : 1)));
} else {
  const built = await buildBaseline(ids, owners, async (stage) => void samples.push(await measure(stage)));
  keep = built.maps;
  textChars = { all: built.chars, signals: built.signalChars };
}
// The stages' own time, without the measurements' GCs.
const buildMs = samples.reduce((sum, s) => sum + s.ms, 0) - (samples[0]?.ms ?? 0);

const snapshot: MemoryResult['snapshot'] = takeSnapshots ? [...snapshotNow()].map(([what, { bytes, count }]) => ({ what, bytes, count })) : undefined;

// Still referenced here, so nothing was collected before the last sample.
if (keep === undefined) throw new Error('unreachable');
const result: MemoryResult = { mode, owners, samples, buildMs, ...(textChars !== undefined ? { textChars } : {}), ...(snapshot ? { snapshot } : {}) };
process.stdout.write(`${JSON.stringify(result)}\n`);
