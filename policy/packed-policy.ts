import type { OwnerPolicy } from './evaluate-consent.js';
import { deepFreeze } from '../core/deep-freeze.js';
import type { Group, Rule } from './rule.js';

/**
 * An owner's rules and groups at rest, as one compact string (issue 6:
 * "resident memory per owner with state ... target at most 1 KB each").
 *
 * Held as objects, one allow rule naming one watcher costs about 450 bytes
 * of heap (measured in heap snapshots of bench/memory.ts): the policy, the
 * rule list, the rule, its conditions and identity, the watcher list and
 * two ids, each an object or array of its own. Most of a rule is the same
 * for many owners: what it grants, its actions, which identity lists are
 * empty, its time conditions as presets set them. So a rule is packed as
 * its skeleton (the rule with its id and watcher list emptied, as canonical
 * JSON, held once in a bounded table and named by its index) and the two
 * things that are its own, the id and the watchers. The usual policy (no
 * groups, UUIDs as the service issues them) packs to a compact form, each
 * id as its 16 bytes: one allow rule naming one watcher is 36 characters.
 * Any other packs as JSON, a UUID as the 22 characters of its 16 bytes in
 * base64url (one allow rule naming one watcher: about 60 characters).
 *
 * Packing is exact: a rule's JSON keys keep their order (the id and the
 * watcher list are put back in the places they were emptied in), so an
 * unpacked rule serializes to the very text the packed one did; rules are
 * plain JSON data (parsed by zod from request bodies and stored jsonb), and
 * a rule holding anything JSON would not give back (undefined, a number
 * that is not finite) is not packed. The round trip over generated rules
 * is checked by tests/unit/packed-policy.test.ts.
 *
 * Unpacked rules are made by the caller's `hold` (the rule book freezes
 * and hash-conses them, as every rule it is given); by default they are
 * left as they are.
 */

/** Makes a rule as the caller holds it (the rule book freezes and hash-conses it); by default, as it is. */
export type HoldRule = (rule: Rule) => Rule;
const asItIs: HoldRule = (rule) => rule;

/**
 * Skeletons by index, each held once (one per distinct rule shape, about 400
 * bytes each, twice that once parsed). Bounded: past the bound, a rule
 * carries its own skeleton. Indexes are never reused, so a packed policy
 * always finds its own.
 */
export class SkeletonTable {
  private readonly index = new Map<string, number>();
  private readonly texts: string[] = [];
  /** Each skeleton parsed once, as held (frozen): unpacking copies it instead of parsing it. */
  private readonly parsed: (Rule | undefined)[] = [];

  constructor(private readonly max = 4096) {}

  /** The skeleton's index, or undefined once the table is full. */
  indexOf(text: string): number | undefined {
    let at = this.index.get(text);
    if (at === undefined && this.texts.length < this.max) {
      at = this.texts.push(text) - 1;
      this.index.set(text, at);
    }
    return at;
  }

  skeleton(at: number, hold: HoldRule): Rule {
    let skeleton = this.parsed[at];
    if (skeleton === undefined) {
      const text = this.texts[at];
      if (text === undefined) throw new Error(`no rule skeleton ${at}`);
      skeleton = deepFreeze(hold(JSON.parse(text) as Rule));
      this.parsed[at] = skeleton;
    }
    return skeleton;
  }
}

const SHARED = new SkeletonTable();

/** A rule's parts: the skeleton (its index, or the skeleton itself once the table is full), the id and the watchers (ids as packId gives them in the JSON form; as text once unpacked). */
type PackedRule = readonly [skeleton: number | Rule, id: string, watchers: readonly string[]];

const LOWER_CASE_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const isLowerCaseUuid = (id: string) => id.length === 36 && LOWER_CASE_UUID.test(id);
const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');
const TILDE = 0x7e;
const OPEN_BRACKET = 0x5b;

/**
 * An id as packed: a lower-case UUID (every id the service issues,
 * core/identifiers.ts) as the base64url of its 16 bytes, 22 characters
 * instead of 36; anything else (ids made up by tests) as "~" and the id.
 */
function packId(id: string): string {
  if (isLowerCaseUuid(id)) return Buffer.from(id.replaceAll('-', ''), 'hex').toString('base64url');
  return `~${id}`;
}

/** The id again, as one flat string (a template literal would give a tree of parts). */
function unpackId(packed: string): string {
  if (packed.charCodeAt(0) === TILDE) return packed.slice(1);
  const bytes = Buffer.from(packed, 'base64url');
  if (bytes.length !== 16) throw new Error(`not a packed id: ${packed}`);
  return uuidText(bytes, 0);
}

/** The lower-case UUID text of the 16 bytes at `from`. */
function uuidText(bytes: Buffer, from: number): string {
  const text = Buffer.allocUnsafe(36);
  let at = 0;
  for (let b = 0; b < 16; b++) {
    if (b === 4 || b === 6 || b === 8 || b === 10) text[at++] = 0x2d; // '-'
    const byte = bytes[from + b] as number;
    text[at++] = HEX_DIGITS[byte >> 4] as number;
    text[at++] = HEX_DIGITS[byte & 15] as number;
  }
  return text.toString('latin1');
}

type PackedPolicy = readonly [rules: readonly PackedRule[], groups: readonly Group[]];

/** Whether JSON gives back exactly this value: plain data, no undefined, only finite numbers. */
function jsonExact(value: unknown): boolean {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true;
  if (typeof value === 'number') return Number.isFinite(value) && !Object.is(value, -0);
  if (Array.isArray(value)) return value.every(jsonExact);
  if (typeof value !== 'object') return false;
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  return Object.values(value as Record<string, unknown>).every(jsonExact);
}

function skeletonOf(rule: Rule): Rule {
  // Spreads keep every key where it was; id and watchers are emptied in place.
  return { ...rule, id: '', conditions: { ...rule.conditions, identity: { ...rule.conditions.identity, watchers: [] } } };
}

/** The rule's skeleton: its index in the table, or itself once the table is full; undefined when JSON would not give the rule back exactly. */
function skeletonFor(rule: Rule, table: SkeletonTable): number | Rule | undefined {
  if (!jsonExact(rule)) return undefined;
  const skeleton = skeletonOf(rule);
  return table.indexOf(JSON.stringify(skeleton)) ?? skeleton;
}

/**
 * The policy as one string, or undefined when it would not come back exactly
 * (see the module comment) or there is nothing to pack.
 */
export function packPolicy(policy: OwnerPolicy, table = SHARED): string | undefined {
  if (policy.rules.length === 0 && policy.groups.length === 0) return undefined;
  if (!jsonExact(policy.groups)) return undefined;
  const skeletons: (number | Rule)[] = [];
  for (const rule of policy.rules) {
    const skeleton = skeletonFor(rule, table);
    if (skeleton === undefined) return undefined;
    skeletons.push(skeleton);
  }
  const compact = policy.groups.length === 0 ? packCompact(policy.rules, skeletons) : undefined;
  if (compact !== undefined) return compact;
  const rules = policy.rules.map((rule, i): PackedRule => [skeletons[i] as number | Rule, packId(rule.id), rule.conditions.identity.watchers.map(packId)]);
  const packed: PackedPolicy = [rules, policy.groups];
  return flat(JSON.stringify(packed));
}

/**
 * The compact form, for the usual policy (no groups; every rule's skeleton
 * in the table, its id and watchers UUIDs as the service issues them): each
 * rule as its skeleton's index and its watcher count, in base 36 and each
 * followed by '.', then the 16 bytes of its id and of each watcher, one
 * character a byte. One allow rule naming one watcher is 36 characters,
 * against 62 as JSON (issue 6, memory per owner: 56 bytes held instead of
 * 80). The JSON form starts with '[', this one with a base-36 digit.
 */
function packCompact(rules: readonly Rule[], skeletons: readonly (number | Rule)[]): string | undefined {
  let size = 0;
  for (const [i, rule] of rules.entries()) {
    const skeleton = skeletons[i];
    const watchers = rule.conditions.identity.watchers;
    if (typeof skeleton !== 'number' || !isLowerCaseUuid(rule.id) || !watchers.every(isLowerCaseUuid)) return undefined;
    size += skeleton.toString(36).length + watchers.length.toString(36).length + 2 + 16 * (1 + watchers.length);
  }
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const [i, rule] of rules.entries()) {
    const watchers = rule.conditions.identity.watchers;
    at += out.write(`${(skeletons[i] as number).toString(36)}.${watchers.length.toString(36)}.`, at, 'latin1');
    at += out.write(rule.id.replaceAll('-', ''), at, 'hex');
    for (const watcher of watchers) at += out.write(watcher.replaceAll('-', ''), at, 'hex');
  }
  return out.toString('latin1');
}

const DOT = 0x2e;

/** The compact form's rules. */
function unpackCompact(packed: string): PackedRule[] {
  const bytes = Buffer.from(packed, 'latin1');
  const rules: PackedRule[] = [];
  let at = 0;
  const number = (): number => {
    const end = bytes.indexOf(DOT, at);
    const value = end < 0 ? NaN : parseInt(bytes.toString('latin1', at, end), 36);
    if (!Number.isInteger(value)) throw new Error('not a packed policy');
    at = end + 1;
    return value;
  };
  const id = (): string => {
    if (at + 16 > bytes.length) throw new Error('not a packed policy');
    const text = uuidText(bytes, at);
    at += 16;
    return text;
  };
  while (at < bytes.length) {
    const skeleton = number();
    const count = number();
    const ruleId = id();
    const watchers: string[] = [];
    for (let w = 0; w < count; w++) watchers.push(id());
    rules.push([skeleton, ruleId, watchers]);
  }
  return rules;
}

/**
 * A flat copy of the text. V8's JSON.stringify returns a tree of
 * concatenated parts past 32 characters (measured in heap snapshots: 160
 * bytes held for a 90-character policy, against 104 flat), and this text
 * is what stays held. The JSON is well-formed UTF-16 (JSON.stringify
 * escapes lone surrogates), so the UTF-8 round trip gives it back exactly.
 */
function flat(text: string): string {
  return Buffer.from(text, 'utf8').toString('utf8');
}

/**
 * The rules and groups of a packed policy, equal to those packed, each rule
 * made as `hold` makes it (the rule book's frozen, shared rules). A rule is
 * its skeleton copied with its own id and watchers put back in place: the
 * skeleton's parts are the ones `hold` made of it, so a rule book that
 * shares equal parts finds them at once.
 */
export function unpackPolicy(packed: string, table = SHARED, hold: HoldRule = asItIs): { rules: Rule[]; groups: Group[] } {
  const json = packed.charCodeAt(0) === OPEN_BRACKET;
  const [rules, groups]: readonly [readonly PackedRule[], readonly Group[]] = json ? unpackJson(packed) : [unpackCompact(packed), []];
  return {
    rules: rules.map(([skeleton, id, watchers]) => {
      const base = typeof skeleton === 'number' ? table.skeleton(skeleton, hold) : skeleton;
      // Object.assign onto a copy keeps every key where the skeleton has it.
      const identity = Object.assign({}, base.conditions.identity, { watchers });
      return hold(Object.assign({}, base, { id, conditions: Object.assign({}, base.conditions, { identity }) }));
    }),
    groups: groups as Group[],
  };
}

/** The JSON form's rules (their ids unpacked) and groups. */
function unpackJson(packed: string): readonly [PackedRule[], readonly Group[]] {
  const [rules, groups] = JSON.parse(packed) as PackedPolicy;
  return [rules.map(([skeleton, packedId, packedWatchers]) => [skeleton, unpackId(packedId), packedWatchers.map(unpackId)]), groups];
}
