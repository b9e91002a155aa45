import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import t from 'tap';
import { AppError } from '../../core/errors.js';
import { parseXml } from '../../core/parse-xml.js';
import { identityMatches } from '../../policy/evaluate-consent.js';
import { COMMON_POLICY_NS, exportPresRules, importPresRules, POLICY_EXTENSION_NS, PRES_RULES_NS, type RuleInputWithId } from '../../policy/pres-rules-xml.js';
import { NOTHING, ruleBodySchema, ruleSchema, type Group, type Identity, type Rule, type RuleBody } from '../../policy/rule.js';
import { schemasDir, validatePidf } from '../helpers/pidf-validator.js';

/**
 * RFC 5025 pres-rules import and export (policy/pres-rules-xml.ts) and the
 * safe XML parser under it (core/parse-xml.ts): golden documents, schema
 * validation of what we write, round trips (a table and a property), the
 * RFC's own sample, one row per refusal, and the parser's defenses.
 */

// --- fixtures ------------------------------------------------------------------

const W1 = '11111111-1111-4111-8111-111111111111';
const W2 = '22222222-2222-4222-8222-222222222222';
const W3 = '33333333-3333-4333-8333-333333333333';
const W4 = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';
const G1 = '9a9a9a9a-0000-4000-8000-000000000001';
const G2 = '9a9a9a9a-0000-4000-8000-000000000002';
const RULE_ID = '0b9c7c4e-7a51-4c1c-9d57-0b3c6f5e8a11';
const ruleId = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;

const rule = (input: Record<string, unknown>, id = RULE_ID): Rule => ruleSchema.parse({ id, ...input });
const body = ({ id: _id, arrivedAt: _arrivedAt, ...rest }: Rule): RuleBody => rest;

/** What import must give back for a rule this service exported. */
const expectedImport = (r: Rule): RuleInputWithId => ({ id: r.id, body: body(r), ...(r.arrivedAt !== undefined && r.conditions.untilArrivalAt !== undefined ? { arrivedAt: r.arrivedAt } : {}) });

const representative = rule({
  conditions: {
    identity: { watchers: [W1], groups: [G1], domains: ['example.com'], anyAuthenticated: true, except: { watchers: [W3], domains: ['bad.example'] } },
    sphere: 'work',
    validity: [{ from: '2025-01-01T00:00:00Z', until: '2025-12-31T23:59:59+01:00' }],
    recurring: [{ days: ['mon', 'tue'], from: '09:00', to: '17:00', timeZone: 'Europe/Berlin' }],
    untilArrivalAt: 'Office & "Lab" <1>',
  },
  actions: { subHandling: 'allow' },
  transformations: { availability: true, activities: true, place: 'zone', sphere: true, location: 'km', userInput: 'thresholds', devices: ['phone', 'pc'], services: 'all', note: true, timeOffset: true },
  arrivedAt: '2025-03-01T10:00:00Z',
});

/** Uses nothing outside common-policy and pres-rules, so it must pass the strict schema check too. */
const plain = rule(
  {
    conditions: {
      identity: { watchers: [W1, W2], domains: ['example.com', 'example.org'], anyAuthenticated: true, except: { watchers: [W3], domains: ['bad.example'] } },
      sphere: 'home',
      validity: [
        { from: '2025-01-01T00:00:00Z', until: '2025-02-01T00:00:00Z' },
        { from: '2025-06-01T08:00:00.250+02:00', until: '2025-06-30T20:00:00-05:00' },
      ],
    },
    actions: { subHandling: 'confirm' },
    transformations: { availability: true, activities: true, place: 'type', sphere: true, userInput: 'full', devices: 'all', services: ['phone'], note: true, timeOffset: true },
  },
  ruleId(2),
);

const GOLDEN_REPRESENTATIVE = `<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" xmlns="urn:ietf:params:xml:ns:pres-rules" xmlns:pp="urn:x-presence:policy">
  <cr:rule id="r-0b9c7c4e-7a51-4c1c-9d57-0b3c6f5e8a11">
    <cr:conditions>
      <cr:identity>
        <cr:one id="urn:uuid:11111111-1111-4111-8111-111111111111"/>
        <pp:group id="urn:uuid:9a9a9a9a-0000-4000-8000-000000000001"/>
        <cr:many domain="example.com">
          <cr:except id="urn:uuid:33333333-3333-4333-8333-333333333333"/>
        </cr:many>
        <cr:many>
          <cr:except domain="bad.example"/>
          <cr:except id="urn:uuid:33333333-3333-4333-8333-333333333333"/>
        </cr:many>
      </cr:identity>
      <cr:sphere value="work"/>
      <cr:validity>
        <cr:from>2025-01-01T00:00:00Z</cr:from>
        <cr:until>2025-12-31T23:59:59+01:00</cr:until>
      </cr:validity>
      <pp:recurring days="mon tue" from="09:00" to="17:00" time-zone="Europe/Berlin"/>
      <pp:until-arrival zone="Office &amp; &quot;Lab&quot; &lt;1&gt;" arrived-at="2025-03-01T10:00:00Z"/>
    </cr:conditions>
    <cr:actions>
      <sub-handling>allow</sub-handling>
    </cr:actions>
    <cr:transformations>
      <provide-services>
        <all-services/>
      </provide-services>
      <provide-persons>
        <all-persons/>
      </provide-persons>
      <provide-devices>
        <class>phone</class>
        <class>pc</class>
      </provide-devices>
      <provide-activities>true</provide-activities>
      <provide-place-type>true</provide-place-type>
      <pp:provide-zone-name>true</pp:provide-zone-name>
      <provide-sphere>true</provide-sphere>
      <provide-time-offset>true</provide-time-offset>
      <provide-user-input>thresholds</provide-user-input>
      <provide-note>true</provide-note>
      <gp:provide-location xmlns:gp="urn:ietf:params:xml:ns:geolocation-policy" profile="geodetic-transformation">
        <lp:provide-geo xmlns:lp="urn:ietf:params:xml:ns:location-profile" radius="1000"/>
      </gp:provide-location>
    </cr:transformations>
  </cr:rule>
</cr:ruleset>
`;

const GOLDEN_PLAIN = `<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" xmlns="urn:ietf:params:xml:ns:pres-rules" xmlns:pp="urn:x-presence:policy">
  <cr:rule id="r-00000000-0000-4000-8000-000000000002">
    <cr:conditions>
      <cr:identity>
        <cr:one id="urn:uuid:11111111-1111-4111-8111-111111111111"/>
        <cr:one id="urn:uuid:22222222-2222-4222-8222-222222222222"/>
        <cr:many domain="example.com">
          <cr:except id="urn:uuid:33333333-3333-4333-8333-333333333333"/>
        </cr:many>
        <cr:many domain="example.org">
          <cr:except id="urn:uuid:33333333-3333-4333-8333-333333333333"/>
        </cr:many>
        <cr:many>
          <cr:except domain="bad.example"/>
          <cr:except id="urn:uuid:33333333-3333-4333-8333-333333333333"/>
        </cr:many>
      </cr:identity>
      <cr:sphere value="home"/>
      <cr:validity>
        <cr:from>2025-01-01T00:00:00Z</cr:from>
        <cr:until>2025-02-01T00:00:00Z</cr:until>
        <cr:from>2025-06-01T08:00:00.250+02:00</cr:from>
        <cr:until>2025-06-30T20:00:00-05:00</cr:until>
      </cr:validity>
    </cr:conditions>
    <cr:actions>
      <sub-handling>confirm</sub-handling>
    </cr:actions>
    <cr:transformations>
      <provide-services>
        <class>phone</class>
      </provide-services>
      <provide-persons>
        <all-persons/>
      </provide-persons>
      <provide-devices>
        <all-devices/>
      </provide-devices>
      <provide-activities>true</provide-activities>
      <provide-place-type>true</provide-place-type>
      <provide-sphere>true</provide-sphere>
      <provide-time-offset>true</provide-time-offset>
      <provide-user-input>full</provide-user-input>
      <provide-note>true</provide-note>
    </cr:transformations>
  </cr:rule>
</cr:ruleset>
`;

/** Rules that between them use every field and value, for the round-trip table and the schema check. */
const roundTrips: Record<string, Rule> = {
  'minimal block rule, nothing granted': rule({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'block' } }),
  'polite-block for any authenticated watcher': rule({ conditions: { identity: { anyAuthenticated: true } }, actions: { subHandling: 'polite-block' } }),
  'domains with excepted watchers': rule({ conditions: { identity: { domains: ['a.example', 'b.example'], except: { watchers: [W1, W2] } } }, actions: { subHandling: 'allow' }, transformations: { availability: true } }),
  'any authenticated minus domains and watchers': rule({
    conditions: { identity: { anyAuthenticated: true, except: { watchers: [W2], domains: ['bad.example', 'worse.example'] } } },
    actions: { subHandling: 'allow' },
    transformations: { activities: true },
  }),
  'groups only': rule({ conditions: { identity: { groups: [G1, G2] } }, actions: { subHandling: 'allow' }, transformations: { note: true } }),
  'several validity intervals with offsets and fractions': plain,
  'recurring windows, one across midnight': rule({
    conditions: {
      identity: { watchers: [W4] },
      recurring: [
        { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '09:00', to: '17:30', timeZone: 'Europe/Berlin' },
        { days: ['sat'], from: '22:00', to: '02:00', timeZone: 'America/New_York' },
      ],
    },
    actions: { subHandling: 'allow' },
    transformations: { availability: true, timeOffset: true },
  }),
  'until arrival, not yet arrived': rule({ conditions: { identity: { watchers: [W1] }, untilArrivalAt: 'Home' }, actions: { subHandling: 'allow' }, transformations: { location: 'city' } }),
  'until arrival, arrived': rule({
    conditions: { identity: { watchers: [W1] }, untilArrivalAt: 'Home' },
    actions: { subHandling: 'allow' },
    transformations: { location: '100m' },
    arrivedAt: '2025-05-05T17:45:12.5+02:00',
  }),
  'exact location': rule({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'allow' }, transformations: { location: 'exact', userInput: 'bare' } }),
  'place type without the zone name': rule({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'allow' }, transformations: { place: 'type', devices: ['phone', 'watch'], services: 'all' } }),
  'zone name with markup, quotes and white space': rule({
    conditions: { identity: { watchers: [W1] }, untilArrivalAt: 'Bob\'s "Lab" & <Co>\tA\nB\rC é 😀' },
    actions: { subHandling: 'allow' },
    transformations: { place: 'zone', userInput: 'full', devices: 'all', services: ['phone', 'car-kit'] },
  }),
  'sphere condition and sphere permission': rule({ conditions: { identity: { watchers: [W1] }, sphere: 'home' }, actions: { subHandling: 'allow' }, transformations: { sphere: true, userInput: 'thresholds' } }),
  representative,
};

const NS = `xmlns:cr="${COMMON_POLICY_NS}" xmlns="${PRES_RULES_NS}" xmlns:pp="${POLICY_EXTENSION_NS}"`;
const ruleset = (...rules: string[]) => `<?xml version="1.0" encoding="UTF-8"?>\n<cr:ruleset ${NS}>${rules.join('')}</cr:ruleset>`;
const ALLOW = '<cr:actions><sub-handling>allow</sub-handling></cr:actions>';
const ONE = `<cr:one id="urn:uuid:${W1}"/>`;
/** One rule with the given parts; `identity` is the content of <cr:identity>. */
const oneRule = (p: { id?: string; identity?: string; conditions?: string; actions?: string; transformations?: string }) =>
  ruleset(
    `<cr:rule id="${p.id ?? 'rule-under-test'}"><cr:conditions><cr:identity>${p.identity ?? ONE}</cr:identity>${p.conditions ?? ''}</cr:conditions>${p.actions ?? ALLOW}` +
      `${p.transformations !== undefined ? `<cr:transformations>${p.transformations}</cr:transformations>` : ''}</cr:rule>`,
  );

/** Throws (so fast-check shrinks and reports) with a readable reason. */
function ensure(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new Error(typeof message === 'string' ? message : message());
}
function ensureEqual(actual: unknown, expected: unknown, what: string): void {
  ensure(isDeepStrictEqual(actual, expected), () => `${what}\n  actual:   ${JSON.stringify(actual)}\n  expected: ${JSON.stringify(expected)}`);
}
/** Runs a property, reporting fast-check's counterexample (with its seed) as the failure message. */
function holds(test: { pass(message: string): unknown; fail(message: string): unknown }, name: string, run: () => void): void {
  try {
    run();
    test.pass(name);
  } catch (error) {
    // fast-check keeps the property's own error as the cause.
    const cause = error instanceof Error && error.cause instanceof Error ? `\n${error.cause.message}` : '';
    test.fail(`${name}\n${error instanceof Error ? error.message : String(error)}${cause}`);
  }
}

/** The AppError a call throws, or undefined. */
function errorOf(f: () => unknown): AppError | undefined {
  try {
    f();
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
  return undefined;
}

// --- generated rules ------------------------------------------------------------

const WATCHERS = [W1, W2, W3, W4];
const GROUP_IDS = [G1, G2];
const DOMAINS = ['a.example', 'b.example', 'c.example'];
const GROUPS: Group[] = [
  { id: G1, name: 'family', members: [W1, W2] },
  { id: G2, name: 'work', members: [W3] },
];
const MINUTE = 60_000;
const BASE = Date.parse('2025-01-01T00:00:00Z');

/** An RFC 3339 instant with a random offset and fraction (both kept verbatim by the round trip). */
const instantArb = fc
  .record({ minutes: fc.integer({ min: 0, max: 5 * 365 * 24 * 60 }), offset: fc.integer({ min: -12 * 4, max: 14 * 4 }), millis: fc.constantFrom('', '.5', '.123') })
  .map(({ minutes, offset, millis }) => {
    if (offset === 0) return new Date(BASE + minutes * MINUTE).toISOString().replace('.000Z', `${millis}Z`);
    const shift = offset * 15;
    const local = new Date(BASE + (minutes + shift) * MINUTE).toISOString().slice(0, 19);
    const abs = Math.abs(shift);
    return `${local}${millis}${shift < 0 ? '-' : '+'}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
  });
const intervalArb = fc.tuple(instantArb, instantArb).filter(([a, b]) => Date.parse(a) !== Date.parse(b)).map(([a, b]) => (Date.parse(a) < Date.parse(b) ? { from: a, until: b } : { from: b, until: a }));
const hhmmArb = fc.integer({ min: 0, max: 1439 }).map((m) => `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`);
const windowArb = fc
  .record({
    days: fc.array(fc.constantFrom('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'), { minLength: 1, maxLength: 7 }),
    from: hhmmArb,
    to: hhmmArb,
    timeZone: fc.constantFrom('UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata'),
  })
  .filter((w) => w.from !== w.to);
/** Zone names with everything XML escaping must get right: markup, quotes, white space (kept inside, trimmed at the ends by the schema), non-ASCII. */
const zoneArb = fc
  .string({ unit: fc.constantFrom('a', 'Z', ' ', '&', '<', '>', '"', "'", '\t', '\n', '\r', 'é', '😀', ']]>'), minLength: 1, maxLength: 10 })
  .filter((s) => s.trim() !== '');
const classSetArb = fc.oneof(fc.constant('all' as const), fc.array(fc.constantFrom('phone', 'pc', 'watch', 'car-kit'), { maxLength: 3 }));
const maybe = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });

/** Any valid rule, built through the schema (so defaults apply), exceptions included whether or not they can matter. */
const anyRuleArb: fc.Arbitrary<Rule> = fc
  .record({
    id: fc.uuid({ version: 4 }),
    identity: fc.record({
      watchers: fc.array(fc.constantFrom(...WATCHERS), { maxLength: 3 }),
      groups: fc.array(fc.constantFrom(...GROUP_IDS), { maxLength: 2 }),
      domains: fc.array(fc.constantFrom(...DOMAINS), { maxLength: 3 }),
      anyAuthenticated: fc.boolean(),
      except: fc.record({ watchers: fc.array(fc.constantFrom(...WATCHERS), { maxLength: 3 }), domains: fc.array(fc.constantFrom(...DOMAINS), { maxLength: 2 }) }),
    }),
    sphere: maybe(fc.constantFrom('home', 'work')),
    validity: maybe(fc.array(intervalArb, { minLength: 1, maxLength: 3 })),
    recurring: maybe(fc.array(windowArb, { minLength: 1, maxLength: 3 })),
    untilArrivalAt: maybe(zoneArb),
    arrivedAt: maybe(instantArb),
    subHandling: fc.constantFrom('block', 'confirm', 'polite-block', 'allow'),
    transformations: fc.record({
      availability: fc.boolean(),
      activities: fc.boolean(),
      place: fc.constantFrom('none', 'type', 'zone'),
      sphere: fc.boolean(),
      location: fc.constantFrom('none', 'city', 'km', '100m', 'exact'),
      userInput: fc.constantFrom('false', 'bare', 'thresholds', 'full'),
      devices: classSetArb,
      services: classSetArb,
      note: fc.boolean(),
      timeOffset: fc.boolean(),
    }),
  })
  .filter((r) => r.identity.watchers.length + r.identity.groups.length + r.identity.domains.length > 0 || r.identity.anyAuthenticated)
  .map(({ id, identity, sphere, validity, recurring, untilArrivalAt, arrivedAt, subHandling, transformations }) =>
    ruleSchema.parse({
      id,
      // Absent, not undefined: the importer leaves out what the document does not say.
      conditions: Object.fromEntries(Object.entries({ identity, sphere, validity, recurring, untilArrivalAt }).filter(([, v]) => v !== undefined)),
      actions: { subHandling },
      transformations,
      ...(arrivedAt !== undefined ? { arrivedAt } : {}),
    }),
  );

/**
 * What export keeps of an identity (see identityOut in pres-rules-xml.ts):
 * a domain that is also excepted matches nobody and is left out; exceptions
 * are written only where a <many> can carry them.
 */
function canonicalIdentity(identity: Identity): Identity {
  const domains = identity.domains.filter((d) => !identity.except.domains.includes(d));
  const someMany = identity.anyAuthenticated || domains.length > 0;
  return { ...identity, domains, except: { watchers: someMany ? identity.except.watchers : [], domains: identity.anyAuthenticated ? identity.except.domains : [] } };
}
const canonical = (r: Rule): Rule => ({ ...r, conditions: { ...r.conditions, identity: canonicalIdentity(r.conditions.identity) } });
const matchesNobody = (i: Identity) => i.watchers.length + i.groups.length + i.domains.length === 0 && !i.anyAuthenticated;
/** The rules whose exceptions all matter: export writes them exactly. */
const canonicalRuleArb = anyRuleArb.map(canonical).filter((r) => !matchesNobody(r.conditions.identity));

// --- export --------------------------------------------------------------------

t.test('golden: a representative rule exports to exactly this document', async (t) => {
  t.equal(exportPresRules([representative]), GOLDEN_REPRESENTATIVE);
});

t.test('golden: a rule without extensions exports to exactly this document', async (t) => {
  t.equal(exportPresRules([plain]), GOLDEN_PLAIN);
  t.notMatch(GOLDEN_PLAIN, /<pp:|<gp:|<lp:/, 'no extension element');
});

t.test('an empty rule set is an empty <cr:ruleset> and imports as no rules', async (t) => {
  const xml = exportPresRules([]);
  t.match(xml, /<cr:ruleset [^>]*\/>\n$/);
  t.same(importPresRules(xml), []);
});

t.test('every exported document passes the official schemas', async (t) => {
  const generated = fc.sample(anyRuleArb, { numRuns: 60, seed: 4745 }).filter((r) => errorOf(() => exportPresRules([r])) === undefined);
  const documents = {
    representative: exportPresRules([representative]),
    table: exportPresRules(Object.values(roundTrips).map((r, i) => ({ ...r, id: ruleId(100 + i) }))),
    generated: exportPresRules(generated.map((r, i) => ({ ...r, id: ruleId(1000 + i) }))),
    empty: exportPresRules([]),
  };
  const lax = await validatePidf(documents, false);
  t.ok(lax.ok, lax.output);
  t.equal((lax.output.match(/: OK/g) ?? []).length, Object.keys(documents).length, 'every document validated');
  // The extension namespaces have no schema, so only a document without them can pass --strict.
  const strict = await validatePidf({ plain: GOLDEN_PLAIN }, true);
  t.ok(strict.ok, strict.output);
});

t.test('export refuses what XML cannot carry, with not_acceptable (the JSON form still works)', async (t) => {
  const control = rule({ conditions: { identity: { watchers: [W1] }, untilArrivalAt: 'Home\u0001' }, actions: { subHandling: 'allow' } });
  t.match(errorOf(() => exportPresRules([control])), { code: 'not_acceptable', message: /U\+0001, which XML 1\.0 cannot carry/ });
  const cancelled = rule({ conditions: { identity: { domains: ['a.example'], except: { domains: ['a.example'] } } }, actions: { subHandling: 'allow' } });
  t.match(errorOf(() => exportPresRules([cancelled])), { code: 'not_acceptable', message: /matches no watcher/ });
});

// --- round trips -----------------------------------------------------------------

t.test('round trip: import(export(rule)) gives back the id, the body and the arrival', async (t) => {
  for (const [name, r] of Object.entries(roundTrips)) {
    t.same(importPresRules(exportPresRules([r])), [expectedImport(r)], name);
  }
  const all = Object.values(roundTrips).map((r, i) => ({ ...r, id: ruleId(100 + i) }));
  t.same(importPresRules(exportPresRules(all)), all.map(expectedImport), 'all of them in one document, in order');
});

t.test('property: any valid rule without dead exceptions round-trips exactly', async (t) => {
  holds(t, 'import(export([rule])) equals { id, body, arrivedAt }', () =>
    fc.assert(
      fc.property(canonicalRuleArb, (r) => {
        const [imported, ...rest] = importPresRules(exportPresRules([r]));
        ensure(rest.length === 0, 'one rule');
        ensureEqual(imported, expectedImport(r), 'the imported rule');
        // The body is already in its parsed form: parsing again changes nothing.
        ensureEqual(ruleBodySchema.parse(imported?.body), body(r), 'the body after zod defaults');
      }),
      { numRuns: 500 },
    ),
  );
});

t.test('property: any valid rule round-trips to the same meaning; only dead exceptions are dropped', async (t) => {
  holds(t, 'same body but for dead exceptions, and every watcher matched exactly as before', () =>
    fc.assert(
      fc.property(anyRuleArb, (r) => {
        const refused = errorOf(() => exportPresRules([r]));
        if (refused) {
          ensure(refused.code === 'not_acceptable' && matchesNobody(canonicalIdentity(r.conditions.identity)), () => `refused: ${refused.message}`);
          for (const id of WATCHERS) for (const domain of [...DOMAINS, undefined]) ensure(!identityMatches(r.conditions.identity, { id, domain }, GROUPS), 'a refused rule matches nobody');
          return;
        }
        const [imported] = importPresRules(exportPresRules([r]));
        ensureEqual(imported, expectedImport(canonical(r)), 'the imported rule');
        for (const id of [...WATCHERS, ruleId(9)]) {
          for (const domain of [...DOMAINS, 'other.example', undefined]) {
            const before = identityMatches(r.conditions.identity, { id, domain }, GROUPS);
            const after = imported && identityMatches(imported.body.conditions.identity, { id, domain }, GROUPS);
            ensure(before === after, () => `watcher ${id}@${domain ?? '(none)'}: matched ${before} before, ${after} after`);
          }
        }
      }),
      { numRuns: 500 },
    ),
  );
});

// --- the RFC sample ------------------------------------------------------------------

const SAMPLE = readFileSync(join(schemasDir(), 'samples', 'valid-4-pres-rules.xml'), 'utf8');

t.test('RFC 5025 sample (valid-4-pres-rules.xml): refused for its sip: identity', async (t) => {
  const error = errorOf(() => importPresRules(SAMPLE));
  t.match(error, { code: 'invalid_document', message: /sip:bob@example\.com.*watchers are named by urn:uuid/ });
  t.match(error?.details, [/cr:rule\[@id="allow-bob"\]\/cr:conditions\/cr:identity\/cr:one/]);
});

t.test('RFC 5025 sample with a urn:uuid identity: all persons, devices, services and attributes', async (t) => {
  const [imported, ...rest] = importPresRules(SAMPLE.replace('sip:bob@example.com', `urn:uuid:${W1}`));
  t.equal(rest.length, 0);
  t.same(imported, {
    // "allow-bob" is not an id this service wrote (r-{uuid}): the rule gets a new one.
    body: ruleBodySchema.parse({
      conditions: { identity: { watchers: [W1] } },
      actions: { subHandling: 'allow' },
      transformations: { availability: true, devices: 'all', services: 'all', activities: true, place: 'zone', sphere: true, userInput: 'full', note: true, timeOffset: true },
    }),
  });
});

// --- equivalent forms that import accepts -------------------------------------------------

t.test('equivalent forms import to the same rule', async (t) => {
  const grants = (transformations: string) => importPresRules(oneRule({ transformations }))[0]?.body.transformations;
  t.same(
    grants(
      '<provide-activities>false</provide-activities><provide-sphere>0</provide-sphere><provide-note> false </provide-note><provide-time-offset>false</provide-time-offset>' +
        '<provide-place-type>false</provide-place-type><provide-user-input>false</provide-user-input><pp:provide-zone-name>false</pp:provide-zone-name>',
    ),
    NOTHING,
    'booleans written false or 0 grant nothing',
  );
  t.same(grants('<provide-persons/><provide-devices/><provide-services/>'), NOTHING, 'empty component permissions grant nothing');
  t.same(grants('<provide-mood>false</provide-mood><provide-unknown-attribute name="x" ns="urn:example:x">false</provide-unknown-attribute>'), NOTHING, 'unsupported permissions written false');
  t.same(grants('<provide-activities>1</provide-activities>'), { ...NOTHING, activities: true }, 'xs:boolean 1');
  t.same(
    grants('<provide-all-attributes/><provide-activities>false</provide-activities><provide-user-input>bare</provide-user-input>'),
    { ...NOTHING, activities: true, place: 'zone', sphere: true, userInput: 'full', note: true, timeOffset: true },
    'provide-all-attributes grants every person attribute; an explicit lower value beside it does not narrow it',
  );
  t.same(
    grants(`<gp:provide-location xmlns:gp="urn:ietf:params:xml:ns:geolocation-policy" profile="geodetic-transformation"/>`),
    { ...NOTHING, location: 'exact' },
    'provide-location without provide-geo is the exact fix',
  );

  const prefixes =
    '<r:ruleset xmlns:r="urn:ietf:params:xml:ns:common-policy" xmlns:p="urn:ietf:params:xml:ns:pres-rules"><r:rule id="x1"><r:conditions><r:identity>' +
    `<r:many domain="Example.COM"><r:except id="urn:uuid:${W2}"/><r:except id="urn:uuid:${W1}"/></r:many><r:many><r:except id="urn:uuid:${W1}"/><r:except id="urn:uuid:${W2}"/></r:many>` +
    '</r:identity></r:conditions><r:actions><p:sub-handling> allow </p:sub-handling></r:actions></r:rule></r:ruleset>';
  t.same(
    importPresRules(prefixes),
    [{ body: ruleBodySchema.parse({ conditions: { identity: { domains: ['example.com'], anyAuthenticated: true, except: { watchers: [W2, W1] } } }, actions: { subHandling: 'allow' } }) }],
    'other prefixes, upper-case domain, the same excepted watchers in another order; no r-{uuid} id, so no id',
  );
  t.same(importPresRules(oneRule({ id: 'r-not-a-uuid' }))[0]?.id, undefined, 'an r- id without a UUID names a new rule');
});

// --- refusals ----------------------------------------------------------------------

const refusals: { name: string; xml: string; message: RegExp; at?: RegExp }[] = [
  { name: 'unknown element in the common-policy namespace', xml: oneRule({ conditions: '<cr:frobnicate/>' }), message: /<frobnicate> in namespace urn:ietf:params:xml:ns:common-policy is not supported/, at: /cr:conditions\/cr:frobnicate/ },
  {
    name: 'unknown element in a foreign namespace',
    xml: oneRule({ transformations: '<x:provide-magic xmlns:x="urn:example:magic">true</x:provide-magic>' }),
    message: /<provide-magic> in namespace urn:example:magic is not supported/,
    at: /cr:transformations\/\{urn:example:magic\}provide-magic/,
  },
  { name: 'unknown element in our extension namespace', xml: oneRule({ conditions: '<pp:full-moon/>' }), message: /<full-moon> in namespace urn:x-presence:policy is not supported/ },
  { name: 'unknown pres-rules element in actions', xml: oneRule({ actions: '<cr:actions><sub-handling>allow</sub-handling><provide-note>true</provide-note></cr:actions>' }), message: /<provide-note> in namespace urn:ietf:params:xml:ns:pres-rules is not supported/ },
  { name: '<one> id not a UUID', xml: oneRule({ identity: '<cr:one id="urn:uuid:not-a-uuid"/>' }), message: /"urn:uuid:not-a-uuid" is not urn:uuid: followed by a lower-case UUID/, at: /cr:identity\/cr:one/ },
  { name: '<one> id with an upper-case UUID', xml: oneRule({ identity: `<cr:one id="urn:uuid:${W4.toUpperCase()}"/>` }), message: /lower-case UUID/ },
  { name: '<one> id in another URN scheme', xml: oneRule({ identity: '<cr:one id="urn:example:bob"/>' }), message: /is not a watcher: watchers are named by urn:uuid/ },
  { name: 'sip: identity', xml: oneRule({ identity: '<cr:one id="sip:bob@example.com"/>' }), message: /"sip:bob@example\.com" is a sip: address; watchers are named by urn:uuid/ },
  { name: 'mailto: identity in an except', xml: oneRule({ identity: '<cr:many><cr:except id="mailto:eve@example.com"/></cr:many>' }), message: /mailto: address; watchers are named by urn:uuid/, at: /cr:many\/cr:except/ },
  { name: 'group not a urn:uuid', xml: oneRule({ identity: '<pp:group id="family"/>' }), message: /group "family" is not urn:uuid:/ },
  { name: 'provide-persons by class', xml: oneRule({ transformations: '<provide-persons><class>x</class></provide-persons>' }), message: /selecting persons by class is not supported; use <all-persons\/>/ },
  { name: 'provide-persons by occurrence-id', xml: oneRule({ transformations: '<provide-persons><occurrence-id>p1</occurrence-id></provide-persons>' }), message: /selecting persons by occurrence-id is not supported/ },
  { name: 'provide-devices by occurrence-id', xml: oneRule({ transformations: '<provide-devices><occurrence-id>d1</occurrence-id></provide-devices>' }), message: /occurrence-id is not supported/ },
  { name: 'provide-devices by deviceID', xml: oneRule({ transformations: '<provide-devices><deviceID>urn:uuid:x</deviceID></provide-devices>' }), message: /deviceID is not supported/ },
  { name: 'provide-services by service-uri', xml: oneRule({ transformations: '<provide-services><service-uri>sip:a@b</service-uri></provide-services>' }), message: /service-uri is not supported/ },
  { name: 'provide-services by service-uri-scheme', xml: oneRule({ transformations: '<provide-services><service-uri-scheme>sip</service-uri-scheme></provide-services>' }), message: /service-uri-scheme is not supported/ },
  {
    name: 'provide-geo radius the service does not snap to',
    xml: oneRule({ transformations: '<gp:provide-location xmlns:gp="urn:ietf:params:xml:ns:geolocation-policy" profile="geodetic-transformation"><lp:provide-geo xmlns:lp="urn:ietf:params:xml:ns:location-profile" radius="500"/></gp:provide-location>' }),
    message: /radius "500" is not supported; the service snaps to 10000, 1000, 100 meters/,
  },
  {
    name: 'civic location profile',
    xml: oneRule({ transformations: '<gp:provide-location xmlns:gp="urn:ietf:params:xml:ns:geolocation-policy" profile="civic-transformation"/>' }),
    message: /profile "civic-transformation" is not supported/,
  },
  {
    name: '<many> elements with different except lists',
    xml: oneRule({ identity: `<cr:many domain="a.example"><cr:except id="urn:uuid:${W1}"/></cr:many><cr:many domain="b.example"/>` }),
    message: /the JSON model applies one exception list to every <cr:many>/,
    at: /cr:many\[2\]/,
  },
  { name: 'except domain inside a domain <many>', xml: oneRule({ identity: '<cr:many domain="a.example"><cr:except domain="b.example"/></cr:many>' }), message: /<cr:except domain> inside <cr:many domain="a\.example"> is meaningless/ },
  { name: 'a domain <many> whose domain is excepted', xml: oneRule({ identity: '<cr:many domain="a.example"/><cr:many><cr:except domain="a.example"/></cr:many>' }), message: /domain a\.example is also excepted.*would match nobody/ },
  { name: 'except with both id and domain', xml: oneRule({ identity: `<cr:many><cr:except id="urn:uuid:${W1}" domain="a.example"/></cr:many>` }), message: /exactly one of id and domain/ },
  {
    name: 'rule with conditions but no identity',
    xml: ruleset(`<cr:rule id="rule-under-test"><cr:conditions><cr:sphere value="work"/></cr:conditions>${ALLOW}</cr:rule>`),
    message: /no <cr:identity>: RFC 4745 §7\.1 makes such a rule match everyone, anonymous watchers included.*<cr:many\/>.*anyAuthenticated/,
  },
  { name: 'rule without conditions', xml: ruleset(`<cr:rule id="rule-under-test">${ALLOW}</cr:rule>`), message: /no <cr:identity>.*anyAuthenticated/ },
  { name: 'empty identity', xml: oneRule({ identity: '' }), message: /an empty <cr:identity>/ },
  { name: 'two identities', xml: oneRule({ conditions: `<cr:identity>${ONE}</cr:identity>` }), message: /a second <cr:identity>/ },
  { name: 'rule without actions', xml: oneRule({ actions: '' }), message: /no <cr:actions>: say what to do with subscriptions/ },
  { name: 'actions without sub-handling', xml: oneRule({ actions: '<cr:actions/>' }), message: /no <sub-handling>/ },
  { name: 'unknown sub-handling', xml: oneRule({ actions: '<cr:actions><sub-handling>maybe</sub-handling></cr:actions>' }), message: /"maybe" is not a sub-handling/ },
  { name: 'granting an attribute the service does not have', xml: oneRule({ transformations: '<provide-mood>true</provide-mood>' }), message: /granting mood is not supported/ },
  { name: 'zone name without the place type', xml: oneRule({ transformations: '<pp:provide-zone-name>true</pp:provide-zone-name>' }), message: /<pp:provide-zone-name> needs <provide-place-type>true<\/provide-place-type>/ },
  { name: 'not a boolean', xml: oneRule({ transformations: '<provide-note>yes</provide-note>' }), message: /"yes" is not a boolean/ },
  { name: 'a permission twice', xml: oneRule({ transformations: '<provide-note>true</provide-note><provide-note>false</provide-note>' }), message: /a second <provide-note>/ },
  { name: 'sphere the service does not know', xml: oneRule({ conditions: '<cr:sphere value="gym"/>' }), message: /sphere "gym" is not one the service knows \(home, work\)/ },
  {
    name: 'validity ending before it starts',
    xml: oneRule({ conditions: '<cr:validity><cr:from>2025-02-01T00:00:00Z</cr:from><cr:until>2025-01-01T00:00:00Z</cr:until></cr:validity>' }),
    message: /from must be before until/,
  },
  { name: 'validity without a time zone', xml: oneRule({ conditions: '<cr:validity><cr:from>2025-01-01T00:00:00</cr:from><cr:until>2025-02-01T00:00:00Z</cr:until></cr:validity>' }), message: /cr:validity\/cr:from: from:/ },
  { name: 'recurring window with an unknown day', xml: oneRule({ conditions: '<pp:recurring days="mon funday" from="09:00" to="17:00" time-zone="UTC"/>' }), message: /pp:recurring: days\.1:/ },
  { name: 'unexpected attribute', xml: oneRule({ identity: `<cr:one id="urn:uuid:${W1}" name="bob"/>` }), message: /unexpected attribute name/ },
  { name: 'rule id not an xs:ID', xml: oneRule({ id: '1st' }), message: /rule id "1st" is not an xs:ID/ },
  { name: 'duplicate rule ids', xml: ruleset(...[1, 2].map(() => `<cr:rule id="r-same"><cr:conditions><cr:identity>${ONE}</cr:identity></cr:conditions>${ALLOW}</cr:rule>`)), message: /duplicate rule id "r-same"/ },
  {
    name: 'more than 200 rules',
    xml: ruleset(...Array.from({ length: 201 }, (_, i) => `<cr:rule id="r${i}"><cr:conditions><cr:identity>${ONE}</cr:identity></cr:conditions>${ALLOW}</cr:rule>`)),
    message: /More than 200 rules/,
  },
  { name: 'root other than <cr:ruleset>', xml: `<ruleset xmlns="${PRES_RULES_NS}"/>`, message: /root element must be <ruleset> in urn:ietf:params:xml:ns:common-policy/ },
  { name: 'unsafe XML (XXE)', xml: `<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n<cr:ruleset ${NS}>&e;</cr:ruleset>`, message: /DOCTYPE is not allowed/ },
];

for (const row of refusals) {
  t.test(`refused: ${row.name}`, async (t) => {
    const error = errorOf(() => importPresRules(row.xml));
    t.ok(error, 'refused');
    t.equal(error?.code, 'invalid_document');
    t.match(error?.message, row.message);
    if (row.at) t.ok(error?.details?.some((d) => row.at?.test(d)), `a detail names the element: ${JSON.stringify(error?.details)}`);
    if (/rule-under-test/.test(row.xml)) t.ok(error?.details?.every((d) => d.includes('cr:rule[@id="rule-under-test"]')), 'every detail names the rule');
  });
}

t.test('every problem in a document is listed, not only the first', async (t) => {
  const error = errorOf(() =>
    importPresRules(oneRule({ identity: '<cr:one id="sip:a@example.com"/><cr:one id="tel:+1"/>', transformations: '<provide-mood>true</provide-mood>' })),
  );
  t.equal(error?.details?.length, 3);
  t.match(error?.message, /\(and 2 more\)$/);
});

// --- the XML parser's defenses ------------------------------------------------------------

const billionLaughs =
  '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n' +
  Array.from({ length: 9 }, (_, i) => ` <!ENTITY lol${i + 1} "${`&lol${i === 0 ? '' : i};`.repeat(10)}">\n`).join('') +
  ']>\n<lolz>&lol9;</lolz>';

const unsafe: { name: string; xml: string; message: RegExp }[] = [
  { name: 'DOCTYPE with an external entity (XXE)', xml: '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', message: /^DOCTYPE is not allowed/ },
  { name: 'billion laughs', xml: billionLaughs, message: /^DOCTYPE is not allowed/ },
  { name: 'entity declaration outside a DOCTYPE', xml: '<x><!ENTITY e "boom"></x>', message: /markup declaration <!ENTITY is not allowed/ },
  { name: 'undeclared entity', xml: '<x>&e;</x>', message: /not well-formed: undefined entity &e;/ },
  { name: 'nesting too deep', xml: `${'<a>'.repeat(33)}${'</a>'.repeat(33)}`, message: /^nesting deeper than 32$/ },
  { name: 'nesting far too deep', xml: `${'<a>'.repeat(5000)}${'</a>'.repeat(5000)}`, message: /^nesting deeper than 32$/ },
  { name: 'too big', xml: `<a>${'x'.repeat(64 * 1024)}</a>`, message: /^document larger than 65536 bytes$/ },
  { name: 'too big in UTF-8 though short in UTF-16', xml: `<a>${'é'.repeat(33 * 1024)}</a>`, message: /^document larger than 65536 bytes$/ },
  { name: 'too many elements', xml: `<a>${'<b/>'.repeat(5000)}</a>`, message: /^more than 5000 elements$/ },
  { name: 'malformed: mismatched tags', xml: '<a><b></a>', message: /^not well-formed: .*closing tag/ },
  { name: 'malformed: unclosed root', xml: '<a>', message: /^not well-formed:/ },
  { name: 'malformed: two roots', xml: '<a/><b/>', message: /^not well-formed: a second root element <b>/ },
  { name: 'malformed: < in an attribute', xml: '<a b="<"/>', message: /^not well-formed: '<' in the value of attribute b/ },
  { name: 'malformed: control character', xml: '<a>\u0007</a>', message: /^not well-formed: character U\+0007/ },
  { name: 'unknown element prefix', xml: '<p:a/>', message: /^unknown namespace prefix 'p' on element <p:a>$/ },
  { name: 'unknown attribute prefix', xml: '<a q:b="1"/>', message: /^unknown namespace prefix 'q' on attribute q:b of <a>$/ },
  { name: 'processing instruction in the document', xml: '<a><?php echo 1; ?></a>', message: /^processing instruction <\?php\?> is not allowed$/ },
  { name: 'processing instruction before the root', xml: '<?xml version="1.0"?><?xml-stylesheet href="x.xsl"?><a/>', message: /^processing instruction <\?xml-stylesheet\?> is not allowed$/ },
  { name: 'XML declaration not at the start', xml: '<a><?xml version="1.0"?></a>', message: /^processing instruction <\?xml\?> is not allowed$/ },
  { name: 'an encoding other than UTF-8', xml: '<?xml version="1.0" encoding="ISO-8859-1"?><a/>', message: /^encoding ISO-8859-1 is not supported/ },
  { name: 'a name that would pollute a prototype', xml: '<__proto__/>', message: /^the name __proto__ is not allowed/ },
];

for (const row of unsafe) {
  t.test(`parse-xml refuses: ${row.name}`, async (t) => {
    const error = errorOf(() => parseXml(row.xml));
    t.ok(error, 'refused');
    t.equal(error?.code, 'invalid_document');
    t.match(error?.message, row.message);
  });
}

t.test('parse-xml limits are parameters', async (t) => {
  t.match(errorOf(() => parseXml('<a><b><c/></b></a>', { maxDepth: 2 })), { message: 'nesting deeper than 2' });
  t.match(errorOf(() => parseXml('<a><b/><b/></a>', { maxElements: 2 })), { message: 'more than 2 elements' });
  t.match(errorOf(() => parseXml('<a>12345</a>', { maxBytes: 10 })), { message: 'document larger than 10 bytes' });
  t.equal(parseXml('<a><b><c/></b></a>', { maxDepth: 3 }).children[0]?.children[0]?.name, 'c');
});

t.test('parse-xml resolves namespaces and decodes text', async (t) => {
  const root = parseXml(
    '\uFEFF<?xml version="1.0" encoding="utf-8"?>\r\n<r xmlns="urn:d" xmlns:p="urn:p" a="1" p:b="x&#9;y&#x20;z" xml:lang="en">' +
      '<p:c>  t&lt;1&amp;<![CDATA[<&>]]><!-- skipped --> &#233;&#x1F600;  <p:d/> more </p:c>' +
      '<e xmlns=""><f xmlns:p="urn:q"><p:g/></f></e>' +
      '</r>',
  );
  t.same(root, {
    ns: 'urn:d',
    name: 'r',
    attributes: { a: '1', b: 'x\ty z', lang: 'en' },
    text: '',
    children: [
      { ns: 'urn:p', name: 'c', attributes: {}, text: 't<1&<&> é😀   more', children: [{ ns: 'urn:p', name: 'd', attributes: {}, children: [], text: '' }] },
      {
        ns: '',
        name: 'e',
        attributes: {},
        text: '',
        children: [{ ns: '', name: 'f', attributes: {}, text: '', children: [{ ns: 'urn:q', name: 'g', attributes: {}, children: [], text: '' }] }],
      },
    ],
  });
  t.equal(parseXml('<a b="l1\nl2\r\nl3"/>').attributes.b, 'l1 l2 l3', 'literal white space in attributes becomes spaces (XML 1.0 §3.3.3)');
  t.equal(parseXml('<a b="l1&#10;l2&#13;"/>').attributes.b, 'l1\nl2\r', 'character references keep it');
});

t.test('RFC 4119 location usage rules travel as an extension and round-trip', async (t) => {
  const rule = ruleSchema.parse({
    ...ruleBodySchema.parse({
      conditions: { identity: { watchers: ['aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa'] } },
      actions: { subHandling: 'allow' },
      transformations: { location: 'km', locationRetransmission: true, locationRetentionDays: 30 },
    }),
    id: '00000000-0000-4000-8000-00000000abcd',
  });
  const xml = exportPresRules([rule]);
  t.match(xml, /<pp:location-usage retransmission-allowed="true" retention-days="30"\/>/);
  t.same(importPresRules(xml)[0]?.body.transformations, rule.transformations);
  const plain = exportPresRules([{ ...rule, transformations: { ...rule.transformations, locationRetransmission: false, locationRetentionDays: 0 } }]);
  t.notMatch(plain, /location-usage/, 'the defaults are not written');
  for (const bad of ['retention-days="366"', 'retention-days="x"', 'retransmission-allowed="yes"']) {
    const broken = xml.replace(/retransmission-allowed="true" retention-days="30"/, bad.startsWith('retention') ? `retransmission-allowed="true" ${bad}` : `${bad} retention-days="30"`);
    t.throws(() => importPresRules(broken), { code: 'invalid_document' }, bad);
  }
  const valid = await validatePidf({ usage: xml }, false);
  t.ok(valid.ok, valid.output);
});
