import type { z } from 'zod';
import { AppError } from '../core/errors.js';
import { idSchema } from '../core/identifiers.js';
import { sphereSchema, type Sphere } from '../core/owner-settings.js';
import { parseXml, type XmlElement, type XmlLimits } from '../core/parse-xml.js';
import {
  classSetSchema,
  domainSchema,
  identitySchema,
  recurringWindowSchema,
  ruleBodySchema,
  ruleSchema,
  subHandlingSchema,
  userInputPermissionSchema,
  validityIntervalSchema,
  type ClassSet,
  type Identity,
  type LocationPrecision,
  type Rule,
  type RuleBody,
  type RuleBodyInput,
  type Transformations,
} from './rule.js';

/**
 * An owner's rules as an RFC 5025 pres-rules document
 * (`application/auth-policy+xml`): RFC 4745 common-policy rules whose
 * actions and transformations are the pres-rules ones, plus RFC 6772
 * provide-location for location precision.
 *
 * What the JSON model has and the RFCs do not (groups, recurring windows,
 * "until I arrive", zone names) is written as extension elements in our own
 * namespace (prefix `pp`), where the schemas allow elements from other
 * namespaces: in `<identity>` and `<conditions>` (common-policy.xsd
 * `##other`, RFC 4745 §6.2 extensions) and in `<transformations>`.
 *
 * Import is strict: whatever the service cannot represent exactly is refused
 * with the rule and the element named, never dropped, because a dropped
 * condition widens a rule and a dropped permission silently changes what a
 * watcher sees. Export followed by import gives back the same rule (see
 * exportPresRules for the three kinds of dead exceptions it leaves out).
 */

export const COMMON_POLICY_NS = 'urn:ietf:params:xml:ns:common-policy';
export const PRES_RULES_NS = 'urn:ietf:params:xml:ns:pres-rules';
export const POLICY_EXTENSION_NS = 'urn:x-presence:policy';
export const GEOLOCATION_POLICY_NS = 'urn:ietf:params:xml:ns:geolocation-policy';
export const LOCATION_PROFILE_NS = 'urn:ietf:params:xml:ns:location-profile';

/** The most rules one document may carry (the JSON API's limit). */
export const MAX_IMPORTED_RULES = 200;

/** One imported rule: the XML id `r-{uuid}` gives `id`; `arrivedAt` is the service-managed arrival of an until-arrival rule. */
export interface RuleInputWithId {
  id?: string;
  body: RuleBody;
  arrivedAt?: string;
}

/** RFC 6772 §6.5.2 provide-geo radius (meters) of each grid below exact. */
const RADIUS: Readonly<Record<Exclude<LocationPrecision, 'none' | 'exact'>, number>> = { city: 10000, km: 1000, '100m': 100 };
const GEODETIC_PROFILE = 'geodetic-transformation';
/** XML ids must be xs:ID (an NCName), and a UUID may start with a digit: rule ids are written `r-{uuid}`. */
const RULE_ID_PREFIX = 'r-';
const WATCHER_URN = 'urn:uuid:';

// --- export --------------------------------------------------------------------

interface Out {
  readonly name: string;
  readonly attrs: readonly (readonly [string, string])[];
  readonly children: readonly Out[];
  readonly text?: string;
}
const el = (name: string, attrs: readonly (readonly [string, string])[] = [], children: readonly Out[] = []): Out => ({ name, attrs, children });
const leaf = (name: string, text: string, attrs: readonly (readonly [string, string])[] = []): Out => ({ name, attrs, children: [], text });

/** A value XML 1.0 cannot carry at all (§2.2), not even as a character reference. */
class Unrepresentable extends Error {}
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const NON_XML_CHAR = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF\uD800-\uDFFF]/u;

function checkChars(value: string): string {
  const bad = NON_XML_CHAR.exec(value);
  if (bad) throw new Unrepresentable(`${JSON.stringify(value)} contains U+${(bad[0].codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}, which XML 1.0 cannot carry`);
  return value;
}
/** Text content: `\r` as a reference, or XML 1.0 §2.11 line-end normalization would turn it into `\n`. */
const escapeText = (value: string) => checkChars(value).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\r/g, '&#13;');
/** Attribute values: white space as references, or XML 1.0 §3.3.3 normalization would turn it into spaces. */
const escapeAttribute = (value: string) =>
  escapeText(value).replace(/"/g, '&quot;').replace(/'/g, '&apos;').replace(/\t/g, '&#9;').replace(/\n/g, '&#10;');

function serialize(node: Out, indent: string): string {
  const attrs = node.attrs.map(([k, v]) => ` ${k}="${escapeAttribute(v)}"`).join('');
  if (node.text !== undefined) return `${indent}<${node.name}${attrs}>${escapeText(node.text)}</${node.name}>`;
  if (node.children.length === 0) return `${indent}<${node.name}${attrs}/>`;
  return `${indent}<${node.name}${attrs}>\n${node.children.map((c) => serialize(c, `${indent}  `)).join('\n')}\n${indent}</${node.name}>`;
}

const urn = (id: string) => `${WATCHER_URN}${id}`;

/**
 * RFC 4745 §7.1: `<one>` per watcher, our `<pp:group>` per group, `<many
 * domain>` per domain and `<many>` for any authenticated watcher. The
 * identity matches if any child does (§7.1: logical OR).
 *
 * The JSON model applies one exception list to every `<many>`, and checks it
 * before domains (policy/evaluate-consent.ts identityMatches). RFC 4745
 * §7.1.3 scopes `<except>` to its own `<many>` and allows `<except domain>`
 * only in a `<many>` without a domain, so:
 * - every `<many>` carries the excepted watchers;
 * - the excepted domains go into the domain-less `<many>`;
 * - a domain that is also excepted matches nobody in the JSON model, so it
 *   gets no `<many domain>` at all (writing one would widen the rule).
 * Exceptions that can affect no `<many>` (none is written, or excepted
 * domains without anyAuthenticated) are dead in the JSON model and are not
 * written; those are the only changes an export-import round trip makes.
 */
function identityOut(identity: Identity): Out[] {
  const excepted = new Set(identity.except.domains);
  const exceptIds = identity.except.watchers.map((w) => el('cr:except', [['id', urn(w)]]));
  return [
    ...identity.watchers.map((w) => el('cr:one', [['id', urn(w)]])),
    ...identity.groups.map((g) => el('pp:group', [['id', urn(g)]])),
    ...identity.domains.filter((d) => !excepted.has(d)).map((d) => el('cr:many', [['domain', d]], exceptIds)),
    ...(identity.anyAuthenticated ? [el('cr:many', [], [...identity.except.domains.map((d) => el('cr:except', [['domain', d]])), ...exceptIds])] : []),
  ];
}

/**
 * common-policy.xsd allows conditions in any order, but RFC 4745 §13 lists
 * identity, sphere, validity, then extensions: keep that order. The arrival
 * (service-managed) rides on `<pp:until-arrival>`; without an until-arrival
 * condition it means nothing and is not written.
 */
function conditionsOut(rule: Rule, identity: readonly Out[]): Out {
  const c = rule.conditions;
  return el('cr:conditions', [], [
    el('cr:identity', [], identity),
    ...(c.sphere !== undefined ? [el('cr:sphere', [['value', c.sphere]])] : []),
    ...(c.validity ? [el('cr:validity', [], c.validity.flatMap((v) => [leaf('cr:from', v.from), leaf('cr:until', v.until)]))] : []),
    ...(c.recurring ?? []).map((w) =>
      el('pp:recurring', [
        ['days', w.days.join(' ')],
        ['from', w.from],
        ['to', w.to],
        ['time-zone', w.timeZone],
      ]),
    ),
    ...(c.untilArrivalAt !== undefined ? [el('pp:until-arrival', [['zone', c.untilArrivalAt], ...(rule.arrivedAt !== undefined ? [['arrived-at', rule.arrivedAt] as const] : [])])] : []),
  ]);
}

const classesOut = (name: string, all: string, set: ClassSet): Out[] =>
  set === 'all' ? [el(name, [], [el(all)])] : set.length > 0 ? [el(name, [], set.map((c) => leaf('class', c)))] : [];

/** RFC 5025 §3.3 (and RFC 6772 §6.5 for location); a permission at its lowest value is left out (RFC 5025 §3.3: absent means not granted). */
function transformationsOut(t: Transformations): Out[] {
  const flag = (on: boolean, name: string) => (on ? [leaf(name, 'true')] : []);
  return [
    ...classesOut('provide-services', 'all-services', t.services),
    ...(t.availability ? [el('provide-persons', [], [el('all-persons')])] : []),
    ...classesOut('provide-devices', 'all-devices', t.devices),
    ...flag(t.activities, 'provide-activities'),
    ...flag(t.place !== 'none', 'provide-place-type'),
    ...flag(t.place === 'zone', 'pp:provide-zone-name'),
    ...flag(t.sphere, 'provide-sphere'),
    ...flag(t.timeOffset, 'provide-time-offset'),
    ...(t.userInput !== 'false' ? [leaf('provide-user-input', t.userInput)] : []),
    ...flag(t.note, 'provide-note'),
    ...(t.location !== 'none'
      ? [
          el(
            'gp:provide-location',
            [
              ['xmlns:gp', GEOLOCATION_POLICY_NS],
              ['profile', GEODETIC_PROFILE],
            ],
            t.location === 'exact' ? [] : [el('lp:provide-geo', [['xmlns:lp', LOCATION_PROFILE_NS], ['radius', String(RADIUS[t.location])]])],
          ),
        ]
      : []),
    // RFC 4119 usage rules have no pres-rules element: an extension, written only when not the defaults.
    ...(t.locationRetransmission || t.locationRetentionDays > 0
      ? [el('pp:location-usage', [['retransmission-allowed', String(t.locationRetransmission)], ['retention-days', String(t.locationRetentionDays)]])]
      : []),
  ];
}

function ruleOut(rule: Rule): Out {
  const identity = identityOut(rule.conditions.identity);
  if (identity.length === 0) throw new Unrepresentable('it matches no watcher: every domain it names is also excepted, and RFC 4745 has no identity that matches nobody');
  const transformations = transformationsOut(rule.transformations);
  return el('cr:rule', [['id', `${RULE_ID_PREFIX}${rule.id}`]], [
    conditionsOut(rule, identity),
    el('cr:actions', [], [leaf('sub-handling', rule.actions.subHandling)]),
    ...(transformations.length > 0 ? [el('cr:transformations', [], transformations)] : []),
  ]);
}

/**
 * The owner's rules as one pres-rules document, in rule order. Throws
 * AppError `not_acceptable` (the JSON form still works) for a rule XML
 * cannot carry: a zone name with a character XML 1.0 does not allow, or a
 * rule whose exceptions cancel every domain it names.
 */
export function exportPresRules(rules: readonly Rule[]): string {
  const out = rules.map((rule) => {
    try {
      return serialize(ruleOut(rule), '  ');
    } catch (error) {
      if (error instanceof Unrepresentable) throw new AppError('not_acceptable', `Rule ${rule.id} cannot be written as pres-rules: ${error.message}.`);
      throw error;
    }
  });
  const open = `<cr:ruleset xmlns:cr="${COMMON_POLICY_NS}" xmlns="${PRES_RULES_NS}" xmlns:pp="${POLICY_EXTENSION_NS}"`;
  return `<?xml version="1.0" encoding="UTF-8"?>\n${out.length === 0 ? `${open}/>` : `${open}>\n${out.join('\n')}\n</cr:ruleset>`}\n`;
}

// --- import --------------------------------------------------------------------

const PREFIXES: Readonly<Record<string, string>> = {
  [COMMON_POLICY_NS]: 'cr:',
  [PRES_RULES_NS]: '',
  [POLICY_EXTENSION_NS]: 'pp:',
  [GEOLOCATION_POLICY_NS]: 'gp:',
  [LOCATION_PROFILE_NS]: 'lp:',
};
const label = (e: XmlElement) => `${PREFIXES[e.ns] ?? (e.ns === '' ? '' : `{${e.ns}}`)}${e.name}`;
const is = (e: XmlElement, ns: string, name: string) => e.ns === ns && e.name === name;

/** RFC 5025 §3.3.2 boolean permissions the service has no data for: `false` is accepted (it grants nothing), `true` is refused. */
const UNSUPPORTED_PERMISSIONS: Readonly<Record<string, string>> = {
  'provide-class': 'class',
  'provide-deviceID': 'device ids',
  'provide-mood': 'mood',
  'provide-place-is': 'place-is',
  'provide-privacy': 'privacy',
  'provide-relationship': 'relationship',
  'provide-status-icon': 'a status icon',
  'provide-unknown-attribute': 'unknown attributes',
};

/** Why a pres-rules selector the service does not support is refused (RFC 5025 §3.3.1). */
const UNSUPPORTED_SELECTORS: Readonly<Record<string, string>> = {
  'occurrence-id': 'selecting by occurrence-id is not supported (occurrence ids are not stable here)',
  deviceID: 'selecting devices by deviceID is not supported; use <class> or <all-devices/>',
  'service-uri': 'selecting services by service-uri is not supported; use <class> or <all-services/>',
  'service-uri-scheme': 'selecting services by service-uri-scheme is not supported; use <class> or <all-services/>',
};

const zodProblems = (error: z.ZodError) => error.issues.map((i) => `${i.path.length > 0 ? `${i.path.join('.')}: ` : ''}${i.message}`);

const NCNAME = /^[\p{L}_][\p{L}\p{N}\p{M}_.\-\u00B7\u203F\u2040]*$/u;
const MAX_PROBLEMS = 50;

class Importer {
  /** The first MAX_PROBLEMS problems; `total` counts them all (and tells a step whether it added any). */
  readonly problems: string[] = [];
  total = 0;

  problem(path: string, message: string): undefined {
    this.total += 1;
    if (this.problems.length < MAX_PROBLEMS) this.problems.push(`${path}: ${message}`);
    return undefined;
  }

  /** Children with their paths; same-named siblings get an index. */
  children(parent: XmlElement, path: string): [XmlElement, string][] {
    const counts = new Map<string, number>();
    for (const c of parent.children) counts.set(label(c), (counts.get(label(c)) ?? 0) + 1);
    const seen = new Map<string, number>();
    return parent.children.map((c) => {
      const name = label(c);
      const n = (seen.get(name) ?? 0) + 1;
      seen.set(name, n);
      return [c, `${path}/${name}${(counts.get(name) ?? 0) > 1 ? `[${n}]` : ''}`];
    });
  }

  unknown(e: XmlElement, path: string): undefined {
    return this.problem(path, `<${e.name}> in ${e.ns === '' ? 'no namespace' : `namespace ${e.ns}`} is not supported here`);
  }

  /** Refuses attributes the element does not define (they would otherwise be ignored). */
  attributes(e: XmlElement, path: string, allowed: readonly string[]): void {
    for (const name of Object.keys(e.attributes)) if (!allowed.includes(name)) this.problem(path, `unexpected attribute ${name}`);
  }

  /** An element with attributes only. */
  empty(e: XmlElement, path: string, allowed: readonly string[] = []): void {
    this.attributes(e, path, allowed);
    if (e.children.length > 0) this.problem(path, `unexpected child <${label(e.children[0] as XmlElement)}>`);
    if (e.text !== '') this.problem(path, `unexpected text ${JSON.stringify(e.text.slice(0, 40))}`);
  }

  /** An element with text only. */
  textOf(e: XmlElement, path: string): string {
    this.attributes(e, path, []);
    if (e.children.length > 0) this.problem(path, `unexpected child <${label(e.children[0] as XmlElement)}>`);
    return e.text;
  }

  /** An element with children only. */
  container(e: XmlElement, path: string, allowed: readonly string[] = []): [XmlElement, string][] {
    this.attributes(e, path, allowed);
    if (e.text !== '') this.problem(path, `unexpected text ${JSON.stringify(e.text.slice(0, 40))}`);
    return this.children(e, path);
  }

  attribute(e: XmlElement, path: string, name: string): string | undefined {
    const value = e.attributes[name];
    if (value === undefined) this.problem(path, `missing attribute ${name}`);
    return value;
  }

  /** xs:boolean (XML Schema Part 2 §3.2.2): true, false, 1, 0. */
  boolean(e: XmlElement, path: string): boolean | undefined {
    const text = this.textOf(e, path);
    if (text === 'true' || text === '1') return true;
    if (text === 'false' || text === '0') return false;
    return this.problem(path, `${JSON.stringify(text)} is not a boolean (true or false)`);
  }

  /** RFC 5025 §3.1.1.2: the identity is a URI; here every watcher is named by the id the service gave it. */
  watcherId(value: string, path: string): string | undefined {
    if (value.startsWith(WATCHER_URN)) {
      const id = value.slice(WATCHER_URN.length);
      if (idSchema.safeParse(id).success) return id;
      return this.problem(path, `${JSON.stringify(value)} is not urn:uuid: followed by a lower-case UUID`);
    }
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(value)?.[1]?.toLowerCase();
    if (scheme === 'sip' || scheme === 'sips' || scheme === 'mailto' || scheme === 'tel' || scheme === 'pres' || scheme === 'xmpp') {
      return this.problem(path, `${JSON.stringify(value)} is a ${scheme}: address; watchers are named by urn:uuid:{watcher id}, the id the service gave the watcher, not by SIP or mail address`);
    }
    return this.problem(path, `${JSON.stringify(value)} is not a watcher: watchers are named by urn:uuid:{watcher id}`);
  }

  /** RFC 4745 §7.1.3 compares domains without regard to case; the JSON model keeps them lower case. */
  domain(value: string, path: string): string | undefined {
    const parsed = domainSchema.safeParse(value.toLowerCase());
    return parsed.success ? parsed.data : this.problem(path, `${JSON.stringify(value)} is not a DNS domain`);
  }

  // --- the document ------------------------------------------------------------

  ruleset(root: XmlElement): RuleInputWithId[] {
    if (!is(root, COMMON_POLICY_NS, 'ruleset')) {
      throw new AppError('invalid_document', `The root element must be <ruleset> in ${COMMON_POLICY_NS} (RFC 4745 §13), not <${root.name}> in ${root.ns || 'no namespace'}.`);
    }
    const rules = this.container(root, '/cr:ruleset');
    if (rules.length > MAX_IMPORTED_RULES) throw new AppError('invalid_document', `More than ${MAX_IMPORTED_RULES} rules (${rules.length}).`);
    const ids = new Set<string>();
    const out: RuleInputWithId[] = [];
    rules.forEach(([e, indexPath], index) => {
      if (!is(e, COMMON_POLICY_NS, 'rule')) return this.unknown(e, indexPath);
      const xmlId = e.attributes.id;
      const path = xmlId === undefined ? `/cr:ruleset/cr:rule[${index + 1}]` : `/cr:ruleset/cr:rule[@id=${JSON.stringify(xmlId)}]`;
      if (xmlId !== undefined) {
        // RFC 4745 §6.1: the id identifies the rule within the document (xs:ID).
        if (ids.has(xmlId)) this.problem(path, `duplicate rule id ${JSON.stringify(xmlId)}`);
        ids.add(xmlId);
        if (!NCNAME.test(xmlId)) this.problem(path, `rule id ${JSON.stringify(xmlId)} is not an xs:ID (it must start with a letter or _)`);
      }
      const rule = this.rule(e, path);
      if (rule) out.push(rule);
    });
    return out;
  }

  rule(e: XmlElement, path: string): RuleInputWithId | undefined {
    const before = this.total;
    const xmlId = this.attribute(e, path, 'id');
    let conditions: ReturnType<Importer['conditions']>;
    let subHandling: RuleBody['actions']['subHandling'] | undefined;
    let transformations: Transformations | undefined;
    const seen = new Set<string>();
    for (const [child, p] of this.container(e, path, ['id'])) {
      if (child.ns !== COMMON_POLICY_NS || !['conditions', 'actions', 'transformations'].includes(child.name)) {
        this.unknown(child, p);
        continue;
      }
      if (seen.has(child.name)) {
        this.problem(p, `a second <cr:${child.name}> (a rule has at most one, RFC 4745 §6)`);
        continue;
      }
      seen.add(child.name);
      if (child.name === 'conditions') conditions = this.conditions(child, p, path);
      else if (child.name === 'actions') subHandling = this.actions(child, p);
      else transformations = this.transformations(child, p);
    }
    if (!seen.has('conditions')) this.missingIdentity(path);
    if (!seen.has('actions')) {
      this.problem(path, 'no <cr:actions>: say what to do with subscriptions in <cr:actions><sub-handling>allow|confirm|polite-block|block</sub-handling></cr:actions> (RFC 5025 §3.2.1); the service does not assume one');
    }
    if (this.total > before || !conditions || subHandling === undefined) return undefined;

    // No <transformations> grants nothing (RFC 5025 §3.3): the schema's defaults.
    const input: RuleBodyInput = { conditions: conditions.conditions, actions: { subHandling }, ...(transformations ? { transformations } : {}) };
    const parsed = ruleBodySchema.safeParse(input);
    if (!parsed.success) {
      for (const message of zodProblems(parsed.error)) this.problem(path, message);
      return undefined;
    }
    // Only ids this service wrote (r-{uuid}) are kept; any other id names a new rule.
    const id = xmlId?.startsWith(RULE_ID_PREFIX) ? xmlId.slice(RULE_ID_PREFIX.length) : undefined;
    return {
      ...(id !== undefined && idSchema.safeParse(id).success ? { id } : {}),
      body: parsed.data,
      ...(conditions.arrivedAt !== undefined ? { arrivedAt: conditions.arrivedAt } : {}),
    };
  }

  missingIdentity(path: string): undefined {
    return this.problem(
      path,
      'no <cr:identity>: RFC 4745 §7.1 makes such a rule match everyone, anonymous watchers included, which the service does not support; to mean every authenticated watcher write <cr:identity><cr:many/></cr:identity> (anyAuthenticated)',
    );
  }

  /** RFC 4745 §7: every condition must hold. Several `<pp:recurring>` windows are one condition: any window (like the intervals of one `<validity>`, §7.4). */
  conditions(e: XmlElement, path: string, rulePath: string): { conditions: RuleBodyInput['conditions']; arrivedAt: string | undefined } | undefined {
    const before = this.total;
    let identity: Identity | undefined;
    let sphere: Sphere | undefined;
    let validity: { from: string; until: string }[] | undefined;
    const recurring: z.input<typeof recurringWindowSchema>[] = [];
    let untilArrivalAt: string | undefined;
    let arrivedAt: string | undefined;
    const seen = new Set<string>();
    for (const [child, p] of this.container(e, path)) {
      const key = `${child.ns} ${child.name}`;
      if (seen.has(key) && !is(child, POLICY_EXTENSION_NS, 'recurring')) {
        // Two identities (or spheres, ...) would all have to match (RFC 4745 §7): the JSON model has one of each.
        this.problem(p, `a second <${label(child)}>: the service supports one per rule`);
        continue;
      }
      seen.add(key);
      if (is(child, COMMON_POLICY_NS, 'identity')) identity = this.identity(child, p);
      else if (is(child, COMMON_POLICY_NS, 'sphere')) sphere = this.sphere(child, p);
      else if (is(child, COMMON_POLICY_NS, 'validity')) validity = this.validity(child, p);
      else if (is(child, POLICY_EXTENSION_NS, 'recurring')) {
        const window = this.recurring(child, p);
        if (window) recurring.push(window);
      } else if (is(child, POLICY_EXTENSION_NS, 'until-arrival')) {
        this.empty(child, p, ['zone', 'arrived-at']);
        untilArrivalAt = this.attribute(child, p, 'zone');
        arrivedAt = child.attributes['arrived-at'];
        if (arrivedAt !== undefined && !ruleSchema.shape.arrivedAt.safeParse(arrivedAt).success) {
          this.problem(p, `arrived-at ${JSON.stringify(arrivedAt)} is not an RFC 3339 date-time with an offset`);
        }
      } else {
        this.unknown(child, p);
      }
    }
    if (!seen.has(`${COMMON_POLICY_NS} identity`)) return this.missingIdentity(rulePath);
    if (this.total > before || identity === undefined) return undefined;
    return {
      conditions: {
        identity,
        ...(sphere !== undefined ? { sphere } : {}),
        ...(validity !== undefined ? { validity } : {}),
        ...(recurring.length > 0 ? { recurring } : {}),
        ...(untilArrivalAt !== undefined ? { untilArrivalAt } : {}),
      },
      arrivedAt,
    };
  }

  /** RFC 4745 §7.1 (with §7.1.2 `<one>` and §7.1.3 `<many>`/`<except>`) and our `<pp:group>`. */
  identity(e: XmlElement, path: string): Identity | undefined {
    const watchers: string[] = [];
    const groups: string[] = [];
    const domains: string[] = [];
    let anyAuthenticated = false;
    const manys: { path: string; any: boolean; domain: string | undefined; ids: string[]; domains: string[] }[] = [];
    const before = this.total;
    const children = this.container(e, path);
    if (children.length === 0) this.problem(path, 'an empty <cr:identity> (RFC 4745 §7.1 needs at least one <one> or <many>)');
    for (const [child, p] of children) {
      if (is(child, COMMON_POLICY_NS, 'one')) {
        this.empty(child, p, ['id']);
        const id = this.attribute(child, p, 'id');
        const watcher = id === undefined ? undefined : this.watcherId(id, p);
        if (watcher) watchers.push(watcher);
      } else if (is(child, POLICY_EXTENSION_NS, 'group')) {
        this.empty(child, p, ['id']);
        const id = this.attribute(child, p, 'id');
        const group = id === undefined ? undefined : id.startsWith(WATCHER_URN) && idSchema.safeParse(id.slice(WATCHER_URN.length)).success ? id.slice(WATCHER_URN.length) : undefined;
        if (group) groups.push(group);
        else if (id !== undefined) this.problem(p, `group ${JSON.stringify(id)} is not urn:uuid: followed by the group's lower-case UUID`);
      } else if (is(child, COMMON_POLICY_NS, 'many')) {
        const rawDomain = child.attributes.domain;
        const domain = rawDomain === undefined ? undefined : this.domain(rawDomain, p);
        const many = { path: p, any: rawDomain === undefined, domain, ids: [] as string[], domains: [] as string[] };
        for (const [x, xp] of this.container(child, p, ['domain'])) {
          if (!is(x, COMMON_POLICY_NS, 'except')) {
            this.unknown(x, xp);
            continue;
          }
          this.empty(x, xp, ['id', 'domain']);
          const { id, domain: exceptDomain } = x.attributes;
          if ((id === undefined) === (exceptDomain === undefined)) {
            this.problem(xp, '<cr:except> needs exactly one of id and domain');
          } else if (id !== undefined) {
            const watcher = this.watcherId(id, xp);
            if (watcher) many.ids.push(watcher);
          } else if (exceptDomain !== undefined) {
            // RFC 4745 §7.1.3: <except domain> only within a <many> that has no domain.
            if (rawDomain !== undefined) this.problem(xp, `<cr:except domain> inside <cr:many domain=${JSON.stringify(rawDomain)}> is meaningless (RFC 4745 §7.1.3): put excepted domains in a <cr:many> without a domain`);
            else {
              const d = this.domain(exceptDomain, xp);
              if (d) many.domains.push(d);
            }
          }
        }
        manys.push(many);
        if (rawDomain === undefined) anyAuthenticated = true;
        else if (domain) domains.push(domain);
      } else {
        this.unknown(child, p);
      }
    }

    // The JSON model has one exception list, applied to every <many>.
    const sorted = (list: readonly string[]) => JSON.stringify([...list].sort());
    const first = manys[0];
    for (const m of manys.slice(1)) {
      if (first && sorted(m.ids) !== sorted(first.ids)) {
        this.problem(m.path, `its <cr:except id> list differs from that of ${first.path}; the JSON model applies one exception list to every <cr:many>, so give every <cr:many> the same excepted watchers`);
      }
    }
    const anyManys = manys.filter((m) => m.any);
    const firstAny = anyManys[0];
    for (const m of anyManys.slice(1)) {
      if (firstAny && sorted(m.domains) !== sorted(firstAny.domains)) {
        this.problem(m.path, `its <cr:except domain> list differs from that of ${firstAny.path}; the JSON model applies one exception list to every <cr:many>`);
      }
    }
    const exceptDomains = firstAny?.domains ?? [];
    for (const m of manys) {
      if (m.domain !== undefined && exceptDomains.includes(m.domain)) {
        this.problem(m.path, `domain ${m.domain} is also excepted; the JSON model applies the exceptions to every <cr:many>, so this one would match nobody`);
      }
    }
    if (this.total > before) return undefined;
    const parsed = identitySchema.safeParse({ watchers, groups, domains, anyAuthenticated, except: { watchers: first?.ids ?? [], domains: exceptDomains } });
    if (!parsed.success) {
      for (const message of zodProblems(parsed.error)) this.problem(path, message);
      return undefined;
    }
    return parsed.data;
  }

  /** RFC 4745 §7.3; RFC 5025 §3.1.2: the owner's current sphere. */
  sphere(e: XmlElement, path: string): Sphere | undefined {
    this.empty(e, path, ['value']);
    const value = this.attribute(e, path, 'value');
    if (value === undefined) return undefined;
    const parsed = sphereSchema.safeParse(value);
    return parsed.success ? parsed.data : this.problem(path, `sphere ${JSON.stringify(value)} is not one the service knows (${sphereSchema.options.join(', ')})`);
  }

  /** RFC 4745 §7.4: `<from>`/`<until>` pairs, any of which may hold. */
  validity(e: XmlElement, path: string): { from: string; until: string }[] | undefined {
    const children = this.container(e, path);
    const intervals: { from: string; until: string }[] = [];
    const before = this.total;
    if (children.length === 0) this.problem(path, 'an empty <cr:validity> (RFC 4745 §7.4 needs <from>/<until> pairs)');
    for (let i = 0; i < children.length; i += 2) {
      const [from, fromPath] = children[i] as [XmlElement, string];
      const pair = children[i + 1];
      if (!is(from, COMMON_POLICY_NS, 'from')) {
        this.problem(fromPath, 'expected <cr:from> (validity is a list of <from>/<until> pairs)');
        continue;
      }
      if (!pair || !is(pair[0], COMMON_POLICY_NS, 'until')) {
        this.problem(pair?.[1] ?? path, 'expected <cr:until> after <cr:from>');
        continue;
      }
      const interval = { from: this.textOf(from, fromPath), until: this.textOf(pair[0], pair[1]) };
      const parsed = validityIntervalSchema.safeParse(interval);
      if (parsed.success) intervals.push(interval);
      else for (const message of zodProblems(parsed.error)) this.problem(fromPath, message);
    }
    return this.total > before ? undefined : intervals;
  }

  /** Our recurring window: days, HH:MM from/to, IANA time zone. */
  recurring(e: XmlElement, path: string): z.input<typeof recurringWindowSchema> | undefined {
    this.empty(e, path, ['days', 'from', 'to', 'time-zone']);
    const days = this.attribute(e, path, 'days');
    const from = this.attribute(e, path, 'from');
    const to = this.attribute(e, path, 'to');
    const timeZone = this.attribute(e, path, 'time-zone');
    if (days === undefined || from === undefined || to === undefined || timeZone === undefined) return undefined;
    const window = { days: days.split(/\s+/).filter((d) => d !== ''), from, to, timeZone };
    const parsed = recurringWindowSchema.safeParse(window);
    if (parsed.success) return parsed.data;
    for (const message of zodProblems(parsed.error)) this.problem(path, message);
    return undefined;
  }

  /** RFC 5025 §3.2.1: exactly one `<sub-handling>`. */
  actions(e: XmlElement, path: string): RuleBody['actions']['subHandling'] | undefined {
    const children = this.container(e, path);
    let value: RuleBody['actions']['subHandling'] | undefined;
    let found = false;
    for (const [child, p] of children) {
      if (!is(child, PRES_RULES_NS, 'sub-handling')) {
        this.unknown(child, p);
        continue;
      }
      if (found) {
        this.problem(p, 'a second <sub-handling>');
        continue;
      }
      found = true;
      const text = this.textOf(child, p).replace(/\s+/g, ' ');
      const parsed = subHandlingSchema.safeParse(text);
      if (parsed.success) value = parsed.data;
      else this.problem(p, `${JSON.stringify(text)} is not a sub-handling (${subHandlingSchema.options.join(', ')})`);
    }
    if (!found) this.problem(path, 'no <sub-handling> (RFC 5025 §3.2.1); the service does not assume one');
    return value;
  }

  /** RFC 5025 §3.3.1 `<provide-devices>` / `<provide-services>`: all, or by class. */
  classes(e: XmlElement, path: string, all: string): ClassSet | undefined {
    const children = this.container(e, path);
    const [only] = children;
    if (only && children.length === 1 && is(only[0], PRES_RULES_NS, all)) {
      this.empty(...only);
      return 'all';
    }
    const classes: string[] = [];
    for (const [child, p] of children) {
      if (is(child, PRES_RULES_NS, 'class')) {
        const value = this.textOf(child, p);
        if (classSetSchema.safeParse([value]).success) classes.push(value);
        else this.problem(p, `${JSON.stringify(value)} is not a device class (lower-case letters, digits and -, such as phone)`);
      } else if (child.ns === PRES_RULES_NS && UNSUPPORTED_SELECTORS[child.name]) {
        this.problem(p, UNSUPPORTED_SELECTORS[child.name] as string);
      } else if (is(child, PRES_RULES_NS, all)) {
        this.problem(p, `<${all}/> must stand alone`);
      } else {
        this.unknown(child, p);
      }
    }
    return classes;
  }

  /** RFC 5025 §3.3: each permission absent means not granted; RFC 6772 §6.5 for location. */
  transformations(e: XmlElement, path: string): Transformations | undefined {
    const before = this.total;
    let availability = false;
    let activities = false;
    let placeType = false;
    let zoneName: string | undefined;
    let sphere = false;
    let location: LocationPrecision = 'none';
    let locationRetransmission = false;
    let locationRetentionDays = 0;
    let userInput: Transformations['userInput'] = 'false';
    let devices: ClassSet = [];
    let services: ClassSet = [];
    let note = false;
    let timeOffset = false;
    let allAttributes = false;
    const seen = new Set<string>();
    for (const [child, p] of this.container(e, path)) {
      const key = `${child.ns} ${child.name}`;
      if (seen.has(key) && !is(child, PRES_RULES_NS, 'provide-unknown-attribute')) {
        this.problem(p, `a second <${label(child)}>`);
        continue;
      }
      seen.add(key);
      if (child.ns === PRES_RULES_NS) {
        switch (child.name) {
          case 'provide-persons': {
            // RFC 5025 §3.3.1.2: the service has one person component, so it is all or none.
            const persons = this.container(child, p);
            for (const [x, xp] of persons) {
              if (is(x, PRES_RULES_NS, 'all-persons') && persons.length === 1) this.empty(x, xp);
              else if (x.ns === PRES_RULES_NS && (x.name === 'occurrence-id' || x.name === 'class')) this.problem(xp, `selecting persons by ${x.name} is not supported; use <all-persons/>`);
              else if (is(x, PRES_RULES_NS, 'all-persons')) this.problem(xp, '<all-persons/> must stand alone');
              else this.unknown(x, xp);
            }
            availability = persons.length === 1;
            break;
          }
          case 'provide-devices':
            devices = this.classes(child, p, 'all-devices') ?? [];
            break;
          case 'provide-services':
            services = this.classes(child, p, 'all-services') ?? [];
            break;
          case 'provide-activities':
            activities = this.boolean(child, p) ?? false;
            break;
          case 'provide-place-type':
            placeType = this.boolean(child, p) ?? false;
            break;
          case 'provide-sphere':
            sphere = this.boolean(child, p) ?? false;
            break;
          case 'provide-note':
            note = this.boolean(child, p) ?? false;
            break;
          case 'provide-time-offset':
            timeOffset = this.boolean(child, p) ?? false;
            break;
          case 'provide-user-input': {
            const text = this.textOf(child, p);
            const parsed = userInputPermissionSchema.safeParse(text);
            if (parsed.success) userInput = parsed.data;
            else this.problem(p, `${JSON.stringify(text)} is not a user-input permission (${userInputPermissionSchema.options.join(', ')})`);
            break;
          }
          case 'provide-all-attributes':
            this.empty(child, p);
            allAttributes = true;
            break;
          default: {
            const what = UNSUPPORTED_PERMISSIONS[child.name];
            if (what === undefined) this.unknown(child, p);
            else if (child.name === 'provide-unknown-attribute') {
              this.attributes(child, p, ['name', 'ns']);
              if (child.text !== 'false' && child.text !== '0') this.problem(p, `granting ${what} is not supported: the service never shows them`);
            } else if (this.boolean(child, p)) this.problem(p, `granting ${what} is not supported: the service never shows it`);
          }
        }
      } else if (is(child, POLICY_EXTENSION_NS, 'provide-zone-name')) {
        zoneName = this.boolean(child, p) ? p : undefined;
      } else if (is(child, GEOLOCATION_POLICY_NS, 'provide-location')) {
        location = this.location(child, p) ?? 'none';
      } else if (is(child, POLICY_EXTENSION_NS, 'location-usage')) {
        this.empty(child, p, ['retransmission-allowed', 'retention-days']);
        const retransmission = child.attributes['retransmission-allowed'] ?? 'false';
        const days = child.attributes['retention-days'] ?? '0';
        if (retransmission !== 'true' && retransmission !== 'false') this.problem(p, 'retransmission-allowed is true or false');
        else locationRetransmission = retransmission === 'true';
        if (!/^\d{1,3}$/.test(days) || Number(days) > 365) this.problem(p, 'retention-days is a whole number of days, 0 to 365');
        else locationRetentionDays = Number(days);
      } else {
        this.unknown(child, p);
      }
    }
    // The zone name says where the owner is more precisely than the place type: the JSON model only grants it with the type.
    if (zoneName !== undefined && !placeType && !allAttributes) this.problem(zoneName, '<pp:provide-zone-name> needs <provide-place-type>true</provide-place-type> (the zone implies its type)');
    if (this.total > before) return undefined;
    // RFC 5025 §3.3.2.15 provide-all-attributes: every person attribute the
    // service has. It only widens: permissions combine to the most
    // permissive value (RFC 4745 §10.2), so an explicit false beside it
    // grants the attribute all the same.
    return {
      availability,
      activities: activities || allAttributes,
      place: allAttributes || zoneName !== undefined ? 'zone' : placeType ? 'type' : 'none',
      sphere: sphere || allAttributes,
      location,
      locationRetransmission,
      locationRetentionDays,
      userInput: allAttributes ? 'full' : userInput,
      devices,
      services,
      note: note || allAttributes,
      timeOffset: timeOffset || allAttributes,
    };
  }

  /** RFC 6772 §6.5.2 geodetic profile: no `<provide-geo>` is the exact fix, else one of our grids. */
  location(e: XmlElement, path: string): LocationPrecision | undefined {
    const children = this.container(e, path, ['profile']);
    const profile = e.attributes.profile;
    if (profile !== GEODETIC_PROFILE) return this.problem(path, `profile ${JSON.stringify(profile ?? '')} is not supported; use ${GEODETIC_PROFILE} (RFC 6772 §6.5.2)`);
    if (children.length === 0) return 'exact';
    const [child, p] = children[0] as [XmlElement, string];
    if (children.length > 1) return this.problem(children[1]?.[1] ?? path, 'only one <lp:provide-geo> is supported');
    if (!is(child, LOCATION_PROFILE_NS, 'provide-geo')) return this.unknown(child, p);
    this.empty(child, p, ['radius']);
    const radius = this.attribute(child, p, 'radius');
    if (radius === undefined) return undefined;
    const precision = (Object.keys(RADIUS) as (keyof typeof RADIUS)[]).find((k) => String(RADIUS[k]) === radius.trim());
    if (precision === undefined) return this.problem(p, `radius ${JSON.stringify(radius)} is not supported; the service snaps to ${Object.values(RADIUS).join(', ')} meters`);
    return precision;
  }
}

/**
 * Reads a pres-rules document (RFC 5025) into rule bodies, in document
 * order. Throws AppError `invalid_document` listing every problem (up to
 * 50), each with the rule and the element path, when anything in it is
 * unsafe, malformed, or not representable exactly. Accepts what
 * exportPresRules writes, plus the equivalent forms: booleans written
 * `false` or `0`, empty `<provide-persons/>`/`<provide-devices/>`, RFC 5025
 * permissions the service has no data for written `false`, and
 * `<provide-all-attributes/>` (RFC 5025 §3.3.2.15), read as every person
 * attribute the service has: activities, place with zone name, sphere,
 * user input `full`, note and time offset (not availability, devices,
 * services or location, which RFC 5025 §3.3.1 and RFC 6772 grant
 * separately).
 */
export function importPresRules(xml: string, limits?: Partial<XmlLimits>): RuleInputWithId[] {
  const importer = new Importer();
  const rules = importer.ruleset(parseXml(xml, limits));
  if (importer.total > 0) {
    const [first] = importer.problems;
    const more = importer.total > 1 ? ` (and ${importer.total - 1} more)` : '';
    throw new AppError('invalid_document', `pres-rules document refused: ${first}${more}`, importer.problems);
  }
  return rules;
}
