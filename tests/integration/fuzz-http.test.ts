import fc from 'fast-check';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import pg from 'pg';
import t from 'tap';
import { z } from 'zod';
import { parseWebhookUrl } from '../../api/routes/webhooks.js';
import { httpErrors } from '../../core/errors.js';
import { deviceClassSchema, displayNameSchema, handleSchema, idSchema } from '../../core/identifiers.js';
import { issueToken, scopeSchema } from '../../core/identity/tokens.js';
import { settingsInputSchema } from '../../core/owner-settings.js';
import { parsePidf } from '../../core/parse-pidf.js';
import { overrideInputSchema, sessionIdSchema } from '../../core/presence-overrides.js';
import { activitySchema, availabilitySchema } from '../../core/presence.js';
import { renderPidf } from '../../core/render-pidf.js';
import { noteSchema } from '../../core/text.js';
import { exportPresRules, importPresRules } from '../../policy/pres-rules-xml.js';
import { domainSchema, groupBodySchema, ruleBodySchema, ruleSchema } from '../../policy/rule.js';
import { createTestDatabase, MQTT_TEST_URL, uniqueName } from '../helpers/env.js';
import { addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';

/**
 * Fuzzing the HTTP API (issue: "Fuzzing: generated hostile input"): a real
 * service on PostgreSQL and Mosquitto, an owner with settings, rules, a
 * group, a manual status, an app session, a publication and a watcher's
 * webhook, then a few thousand generated hostile requests (seeded, so a
 * failure replays): malformed and mutated JSON and XML bodies to the write
 * routes, hostile Authorization, If-Match, Expires, Accept, Content-Type,
 * Event and Last-Event-ID headers, hostile path parameters and query
 * strings, and requests broken at the protocol level, sent over raw
 * sockets (node:net) so that nothing refuses to send them.
 *
 * Every fuzzed write is invalid by construction: a request whose token
 * could authorize it is checked here with the service's own schemas and
 * parsers, and one that might be valid gets a token that cannot authorize
 * it (or, for a publication, an invalid Expires) instead.
 *
 * Properties: never a 5xx; every error body is `{code, message}` (and
 * optional `details`) with a code from core/errors.ts httpErrors and the
 * status the catalog gives it; no fuzzed write succeeds; /readyz still
 * answers afterwards; and nothing was written: the owners' settings, rules,
 * groups, status, sessions, publications and webhooks read back through
 * the API, the owner's export and every table but the access log and the
 * admin actions (reads and admin requests are logged by design) are exactly what they were before.
 *
 * The last subtest holds the minimal case of each 5xx the fuzzing once
 * found (access-log cursors outside the years 1 to 9999 and U+0000 in
 * names, both of which PostgreSQL refuses), now asserted as 400
 * invalid_request with nothing written; each names the code that was at
 * fault.
 */

/** Fixed, so runs are reproducible; FUZZ_SEED explores others. */
const SEED = Number(process.env.FUZZ_SEED ?? 0x4177_2026);
const REQUESTS = 5_000;
const CONCURRENCY = 12;
const REQUEST_TIMEOUT_MS = 10_000;

const databaseUrl = await createTestDatabase(t);
const config = await testConfig(t, {
  DATABASE_URL: databaseUrl,
  MQTT_URL: MQTT_TEST_URL,
  MQTT_TOPIC_ROOT: uniqueName('fz'),
  OWNTRACKS_TOPIC_ROOT: uniqueName('fzot'),
  // Abuse limits would answer most of the corpus with 429 before any route sees it.
  RATE_LIMIT_HTTP_ADDRESS: '0',
  RATE_LIMIT_HTTP_TOKEN: '0',
  RATE_LIMIT_MQTT_DEVICE: '0',
});
const service = await startTestService(t, config);
const { port } = new URL(service.httpUrl);

// Webhook deliveries land here.
const sink = createServer((request, response) => {
  request.resume();
  request.on('end', () => response.writeHead(204).end());
});
await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
t.teardown(() => new Promise<void>((resolve) => sink.close(() => resolve())));
const sinkAddress = sink.address();
const sinkUrl = `http://127.0.0.1:${typeof sinkAddress === 'object' && sinkAddress ? sinkAddress.port : 0}/hook`;

// --- the fixture ------------------------------------------------------------------------------

const alice = await provision(service, 'alice');
await provision(service, 'carol');
const aliceToken = await ownerToken(service, 'alice');
const carolToken = await ownerToken(service, 'carol');
const bob = await addWatcher(service, 'Bob');
const eve = await addWatcher(service, 'Eve', 'app', 'example.org');
const ENTITY = alice.owner.entity;

async function must(response: Promise<Response>, status: number, what: string): Promise<Record<string, unknown>> {
  const r = await response;
  const text = await r.text();
  if (r.status !== status) throw new Error(`${what}: ${r.status} ${text}`);
  return text ? (JSON.parse(text) as Record<string, unknown>) : {};
}
const asAlice = { token: aliceToken };
await must(
  service.api('PUT', '/v1/me/settings', {
    ...asAlice,
    body: {
      timeZone: 'Europe/Berlin',
      zones: [{ name: 'Home', sphere: 'home', placeType: 'residence', circle: { latitude: 48.2, longitude: 16.37, radiusMeters: 150 }, wifi: ['HomeNet'] }, { name: 'Office', sphere: 'work', rooms: ['R1'] }],
      quietHours: { from: '22:00', to: '07:00' },
      idleAfterSeconds: 600,
      ignore: ['ble-room'],
    },
  }),
  200,
  'settings',
);
await must(service.api('PUT', '/v1/me/settings', { token: carolToken, body: { idleAfterSeconds: 120 } }), 200, "carol's settings");
const group = await must(service.api('POST', '/v1/me/groups', { ...asAlice, body: { name: 'Friends', members: [bob.id] } }), 201, 'group');
const rule1 = await must(
  service.api('POST', '/v1/me/rules', { ...asAlice, body: { conditions: { identity: { watchers: [bob.id] } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: true, note: true } } }),
  201,
  'rule 1',
);
const rule2 = await must(
  service.api('POST', '/v1/me/rules', { ...asAlice, body: { conditions: { identity: { groups: [String(group.id)] }, sphere: 'work' }, actions: { subHandling: 'polite-block' } } }),
  201,
  'rule 2',
);
const carolRule = await must(service.api('POST', '/v1/me/rules', { token: carolToken, body: { conditions: { identity: { domains: ['example.org'] } }, actions: { subHandling: 'block' } } }), 201, "carol's rule");
await must(service.api('PUT', '/v1/me/status', { ...asAlice, body: { availability: 'busy', activities: ['meeting'], note: 'Back at 3', expiresInSeconds: 7200 } }), 200, 'status');
await must(service.api('PUT', '/v1/me/sessions/app1', { ...asAlice, body: { availability: 'available', activities: [], expiresInSeconds: 7200 } }), 200, 'session');
const published = await service.api('POST', '/v1/presence/alice', {
  ...asAlice,
  body: renderPidf({ entity: ENTITY, basic: 'open', availability: 'busy', activities: ['on-the-phone'], note: 'Call later' }),
  headers: { 'content-type': 'application/pidf+xml', expires: '7200' },
});
if (published.status !== 201) throw new Error(`publication: ${published.status} ${await published.text()}`);
const ETAG = (published.headers.get('etag') ?? '').replaceAll('"', '');
const hook = await must(service.api('POST', '/v1/webhooks', { token: bob.token, body: { handle: 'alice', url: sinkUrl } }), 201, 'webhook');
const RULE_IDS = [String(rule1.id), String(rule2.id)];
const GROUP_ID = String(group.id);
const HOOK_ID = String(hook.id);
const CAROL_RULE_ID = String(carolRule.id);
const UNKNOWN_ID = '00000000-0000-4000-8000-00000000dead';
/** What each principal owns: a write naming someone else's is refused (404), naming what does not exist too. */
const OWNED = {
  rules: { alice: RULE_IDS, carol: [CAROL_RULE_ID] } as Record<string, string[]>,
  groups: { alice: [GROUP_ID], carol: [] } as Record<string, string[]>,
  sessions: { alice: ['app1'], carol: [] } as Record<string, string[]>,
  zones: { alice: ['Home', 'Office'], carol: [] } as Record<string, string[]>,
  hooks: { bob: [HOOK_ID], eve: [] } as Record<string, string[]>,
};
const WATCHER_IDS = [bob.id, eve.id];

// Tokens that cannot authorize anything (besides none at all).
const { token: expiredToken } = await issueToken(service.signingKey, config.tokenIssuer, { kind: 'owner', subject: alice.owner.id, scopes: ['settings:manage', 'status:manage', 'consent:manage', 'presence:write'], ttlSeconds: 60 }, Date.now() - 3_600_000);
const { token: foreignIssuerToken } = await issueToken(service.signingKey, 'someone-else', { kind: 'owner', subject: alice.owner.id, scopes: ['settings:manage'], ttlSeconds: 600 }, Date.now());
const { token: ghostToken } = await issueToken(service.signingKey, config.tokenIssuer, { kind: 'owner', subject: crypto.randomUUID(), scopes: ['settings:manage', 'status:manage', 'consent:manage', 'presence:write'], ttlSeconds: 600 }, Date.now());
const readOnlyToken = String((await must(service.api('POST', '/v1/admin/tokens', { token: service.adminToken, body: { kind: 'owner', subject: 'alice', scopes: ['presence:read'] } }), 201, 'read-only token')).token);
const [jwtHeader = '', jwtPayload = '', jwtSignature = ''] = aliceToken.split('.');
const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
const adminPayload = b64({ ...(JSON.parse(Buffer.from(jwtPayload, 'base64url').toString()) as object), kind: 'admin', scopes: ['admin'] });
const flipped = `${aliceToken.slice(0, -3)}${aliceToken.slice(-3) === 'AAA' ? 'BBB' : 'AAA'}`;

/** Who a token could act as; the fuzzer treats anything that contains a live token as that principal. */
type Principal = 'alice' | 'carol' | 'bob' | 'eve' | 'admin' | 'none';
const LIVE: [string, Principal][] = [
  [aliceToken, 'alice'],
  [carolToken, 'carol'],
  [bob.token, 'bob'],
  [eve.token, 'eve'],
  [service.adminToken, 'admin'],
];
const principalOf = (authorization: string | undefined): Principal => LIVE.find(([token]) => authorization?.includes(token))?.[1] ?? 'none';

const GARBAGE_AUTH: (string | undefined)[] = [
  undefined,
  '',
  'Bearer',
  'Bearer ',
  'Basic YWxpY2U6c2VjcmV0',
  'Bearer x',
  'Bearer null',
  'Bearer undefined',
  `Bearer ${'a'.repeat(6000)}`,
  `Bearer ${jwtHeader}.${jwtPayload}`,
  `Bearer ${jwtHeader}.${jwtPayload}.`,
  `Bearer ${b64({ alg: 'none', typ: 'JWT' })}.${jwtPayload}.`,
  `Bearer ${jwtHeader}.${adminPayload}.${jwtSignature}`,
  `Bearer ${flipped}`,
  `Bearer ${expiredToken}`,
  `Bearer ${foreignIssuerToken}`,
  `Bearer ${ghostToken}`,
  `Bearer ${readOnlyToken}`,
  `Bearer ${alice.deviceToken}`,
  'Bearer ey.ey.ey',
  'Bearer ../../etc/passwd',
  'Bearer {"kind":"admin"}',
  `Bearer ${'é'.repeat(10)}`,
];
/** Contain a live token: they may or may not authenticate (the scheme's case, stray white space). */
const LIVE_AUTH: string[] = LIVE.flatMap(([token]) => [`Bearer ${token}`, `Bearer ${token}`, `Bearer ${token}`, `bearer ${token}`, `BEARER ${token}`, `Bearer  ${token}`, `Bearer ${token} `, `Bearer\t${token}`, `Bearer ${token}, Bearer x`]);

// --- what the service would accept: its own schemas and parsers --------------------------------

const jsonPublication = z.object({ availability: availabilitySchema, activities: z.array(activitySchema).max(8).default([]), note: noteSchema.optional() }).strict();
const rulesBody = z.object({ rules: z.array(ruleBodySchema.extend({ id: idSchema.optional(), arrivedAt: z.iso.datetime({ offset: true }).optional() })).max(200) }).strict();
const adminBodies: Record<string, z.ZodType> = {
  '/v1/admin/owners': z.object({ handle: handleSchema, displayName: displayNameSchema.optional() }).strict(),
  '/v1/admin/devices': z.object({ owner: handleSchema, class: deviceClassSchema, name: displayNameSchema.optional() }).strict(),
  '/v1/admin/watchers': z.object({ kind: z.enum(['person', 'app']), name: displayNameSchema, domain: domainSchema.optional() }).strict(),
  '/v1/admin/tokens': z
    .object({ kind: z.enum(['device', 'watcher', 'owner']), subject: z.string().min(1).max(100), ttlSeconds: z.number().int().min(60).max(400 * 24 * 3600).optional(), scopes: z.array(scopeSchema).min(1).optional() })
    .strict(),
};

/** As Fastify's JSON parser (secure-json-parse) reads a body: a leading byte order mark is skipped. */
const jsonOf = (body: string | undefined): { ok: true; value: unknown } | { ok: false } => {
  if (body === undefined) return { ok: false };
  try {
    return { ok: true, value: JSON.parse(body.startsWith('\uFEFF') ? body.slice(1) : body) };
  } catch {
    return { ok: false };
  }
};
const passes = (schema: z.ZodType, body: string | undefined) => {
  const json = jsonOf(body);
  return json.ok && schema.safeParse(json.value).success;
};
const succeeds = (work: () => unknown) => {
  try {
    work();
    return true;
  } catch {
    return false;
  }
};
/** A path parameter as the router hands it over: cut at ? ; #, percent-decoded. */
const paramOf = (segment: string): string | undefined => {
  try {
    return decodeURIComponent(segment.split(/[?;#]/)[0] ?? '');
  } catch {
    return undefined;
  }
};
const lastSegment = (path: string) => paramOf(path.split('?')[0]?.split('/').pop() ?? '');

/** Node's view of a header sent several times: some keep the first, the rest are joined (node:http IncomingMessage). */
const FIRST_WINS = new Set(['authorization', 'content-type', 'content-length', 'expires', 'host', 'user-agent', 'etag', 'from', 'location', 'max-forwards', 'retry-after', 'server', 'age', 'referer', 'if-modified-since', 'if-unmodified-since', 'last-modified', 'proxy-authorization']);
function headerAsSeen(headers: readonly [string, string][], name: string): string | undefined {
  const values = headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v.trim());
  if (values.length === 0) return undefined;
  return FIRST_WINS.has(name) ? values[0] : values.join(', ');
}

const owns = (what: keyof typeof OWNED, principal: Principal, id: string | undefined) => id !== undefined && (OWNED[what][principal] ?? []).includes(id);

/**
 * Could these rules be stored for this owner? Only what accounts.checkRule
 * and replaceRules refuse counts as certainly refused: a watcher that does
 * not exist, a group or zone the owner does not have, a rule id used twice
 * or owned by another owner (a unique-key violation in storage).
 */
function rulesMightStand(principal: Principal, body: string | undefined, form: 'one' | 'set' | 'xml'): boolean {
  let items: { id?: string | undefined; body: z.infer<typeof ruleBodySchema> }[];
  if (form === 'xml') {
    if (body === undefined) return false;
    try {
      items = importPresRules(body);
    } catch {
      return false;
    }
  } else {
    const json = jsonOf(body);
    if (!json.ok) return false;
    if (form === 'one') {
      const parsed = ruleBodySchema.safeParse(json.value);
      if (!parsed.success) return false;
      items = [{ body: parsed.data }];
    } else {
      const parsed = rulesBody.safeParse(json.value);
      if (!parsed.success) return false;
      items = parsed.data.rules.map(({ id, arrivedAt: _arrivedAt, ...rest }) => ({ id, body: rest }));
    }
  }
  const ids = items.map((item) => item.id).filter((id) => id !== undefined);
  if (new Set(ids).size !== ids.length) return false;
  const othersRules = Object.entries(OWNED.rules).flatMap(([owner, list]) => (owner === principal ? [] : list));
  if (ids.some((id) => othersRules.includes(id))) return false;
  return items.every(({ body: rule }) => {
    const { identity, untilArrivalAt } = rule.conditions;
    if (![...identity.watchers, ...identity.except.watchers].every((w) => WATCHER_IDS.includes(w))) return false;
    if (!identity.groups.every((g) => owns('groups', principal, g))) return false;
    return untilArrivalAt === undefined || owns('zones', principal, untilArrivalAt);
  });
}

/**
 * Could the service accept this request (and write)? Conservative: true
 * whenever in doubt. Only asked for requests whose token might authorize.
 */
function mightSucceed(spec: Draft, principal: Principal): boolean {
  const { method, path, body } = spec;
  const route = path.split('?')[0] ?? '';
  const me = principal === 'alice' || principal === 'carol';
  if (method === 'PUT' && route === '/v1/me/settings') return me && passes(settingsInputSchema, body);
  if (method === 'PUT' && route === '/v1/me/status') return me && passes(overrideInputSchema, body);
  if (method === 'PUT' && route.startsWith('/v1/me/sessions/')) return me && passes(overrideInputSchema, body) && sessionIdSchema.safeParse(lastSegment(path)).success;
  if (method === 'POST' && route === '/v1/me/rules') return me && rulesMightStand(principal, body, 'one');
  if (method === 'POST' && route === '/v1/me/groups') return me && passes(groupBodySchema, body);
  if (method === 'PUT' && route === '/v1/me/rules') return me && (rulesMightStand(principal, body, 'set') || rulesMightStand(principal, body, 'xml'));
  if (method === 'PUT' && route.startsWith('/v1/me/rules/')) return me && owns('rules', principal, lastSegment(path)) && rulesMightStand(principal, body, 'one');
  if (method === 'DELETE' && route.startsWith('/v1/me/rules/')) return me && owns('rules', principal, lastSegment(path));
  if (method === 'DELETE' && route.startsWith('/v1/me/sessions/')) return me && owns('sessions', principal, lastSegment(path));
  // Alice's group is named by one of her rules: deleting it is a conflict (409) as long as that rule stands.
  if (method === 'DELETE' && route.startsWith('/v1/me/groups/')) return me && owns('groups', principal, lastSegment(path)) && principal !== 'alice';
  if (method === 'DELETE' && route === '/v1/me') {
    const confirms = new URLSearchParams(path.split('?')[1] ?? '').getAll('confirm');
    return me && confirms.some((c) => c.trim() === principal);
  }
  if (method === 'DELETE' && route.startsWith('/v1/webhooks/')) return owns('hooks', principal, lastSegment(path));
  if (method === 'POST' && route === '/v1/webhooks') {
    const json = jsonOf(body);
    const parsed = json.ok ? z.object({ handle: handleSchema, url: z.string().max(2048) }).strict().safeParse(json.value) : undefined;
    return (principal === 'bob' || principal === 'eve') && parsed?.success === true && succeeds(() => parseWebhookUrl(parsed.data.url, true));
  }
  if (method === 'POST' && route in adminBodies) return principal === 'admin' && passes(adminBodies[route] as z.ZodType, body);
  if (method === 'POST' && route.startsWith('/v1/presence/')) {
    const handle = lastSegment(route);
    if (!me || handle !== principal) return false;
    const event = headerAsSeen(spec.headers, 'event');
    if (event !== undefined && event.split(';')[0]?.trim().toLowerCase() !== 'presence') return false;
    const expires = headerAsSeen(spec.headers, 'expires');
    if (expires !== undefined && (!/^\d+$/.test(expires) || (Number(expires) !== 0 && Number(expires) < 60))) return false;
    const ifMatch = headerAsSeen(spec.headers, 'if-match');
    if (ifMatch !== undefined && !ifMatch.includes(ETAG)) return false;
    if (body === undefined || body === '') return ifMatch !== undefined;
    const entity = `pres:${principal}@presence.local`;
    return passes(jsonPublication, body) || succeeds(() => {
      if (parsePidf(body).entity !== entity) throw new Error('another entity');
    });
  }
  // Reads, and writes outside this list, are not generated with live tokens in a way that could write.
  return method !== 'GET' && method !== 'HEAD';
}

// --- generators ---------------------------------------------------------------------------------

interface Draft {
  readonly family: string;
  readonly method: string;
  readonly path: string;
  readonly headers: [string, string][];
  readonly body: string | undefined;
  /** Sent as it is, instead of a request built from the fields. */
  readonly raw?: Buffer;
  readonly chunked?: boolean;
}

const HOSTILE_VALUES: unknown[] = [
  1e308, -1e308, 2 ** 53 + 1, -0, 0.5, -1, 1e21, 'NaN', 'Infinity', '', ' ', '0', 'true', null, true, false, [], {}, [null], { '': '' }, 'x'.repeat(5000),
  '\u0000', '\uD800', '\u202E', 'a\nb', '<script>', '../../etc/passwd', '__proto__', 'Europe/Nowhere', '25:61', '2026-13-45T99:99:99Z', '2026-05-04T10:00:00', 'ALICE', ' alice', 'alice\u0000',
  { __proto__: { polluted: true } }, JSON.parse('{"__proto__":{"polluted":true}}') as unknown, { constructor: { prototype: { polluted: true } } },
];

type Obj = Record<string, unknown>;
const BASES: Record<string, Obj> = {
  settings: { timeZone: 'Europe/Berlin', zones: [{ name: 'Home', circle: { latitude: 1, longitude: 2, radiusMeters: 100 }, wifi: ['Net'] }], idleAfterSeconds: 300, quietHours: { from: '22:00', to: '07:00' } },
  status: { availability: 'away', activities: ['travel'], note: 'Out', expiresInSeconds: 600 },
  rule: { conditions: { identity: { watchers: [bob.id] }, sphere: 'home' }, actions: { subHandling: 'allow' }, transformations: { availability: true, location: 'city' } },
  rules: { rules: [{ conditions: { identity: { anyAuthenticated: true } }, actions: { subHandling: 'block' } }] },
  group: { name: 'Family', members: [bob.id] },
  webhook: { handle: 'alice', url: sinkUrl },
  publication: { availability: 'busy', activities: ['meeting'], note: 'x' },
  owner: { handle: 'dave', displayName: 'Dave' },
  device: { owner: 'alice', class: 'phone', name: 'Spare' },
  watcher: { kind: 'person', name: 'Mallory', domain: 'example.com' },
  token: { kind: 'owner', subject: 'alice', ttlSeconds: 600, scopes: ['presence:read'] },
};

/** Leaves of a JSON object, as paths. */
function leafPaths(value: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (Array.isArray(value)) return value.length === 0 ? [prefix] : value.flatMap((v, i) => leafPaths(v, [...prefix, i]));
  if (value && typeof value === 'object') {
    const keys = Object.keys(value);
    return keys.length === 0 ? [prefix] : [prefix, ...keys.flatMap((k) => leafPaths((value as Obj)[k], [...prefix, k]))];
  }
  return [prefix];
}
function setAt(value: unknown, path: readonly (string | number)[], replacement: unknown, remove = false): unknown {
  if (path.length === 0) return replacement;
  const [head, ...rest] = path as [string | number, ...(string | number)[]];
  const copy: Obj | unknown[] = Array.isArray(value) ? [...value] : { ...(value as Obj) };
  if (rest.length === 0 && remove) {
    if (Array.isArray(copy)) copy.splice(Number(head), 1);
    else delete copy[head];
    return copy;
  }
  (copy as Obj)[head] = setAt((copy as Obj)[head], rest, replacement, remove);
  return copy;
}

const mutatedJson = (base: Obj): fc.Arbitrary<string> => {
  const paths = leafPaths(base).filter((p) => p.length > 0);
  return fc.oneof(
    fc.tuple(fc.constantFrom(...paths), fc.constantFrom(...HOSTILE_VALUES)).map(([p, v]) => JSON.stringify(setAt(base, p, v))),
    fc.constantFrom(...paths).map((p) => JSON.stringify(setAt(base, p, undefined, true))),
    fc.tuple(fc.string({ maxLength: 10 }), fc.constantFrom(...HOSTILE_VALUES)).map(([k, v]) => JSON.stringify({ ...base, [k || 'extra']: v })),
    fc.tuple(fc.constantFrom(...paths), fc.jsonValue({ maxDepth: 2 })).map(([p, v]) => JSON.stringify(setAt(base, p, v))),
    fc.nat().map((n) => JSON.stringify(base).slice(0, n % JSON.stringify(base).length)),
    fc.constantFrom<(s: string) => string>(
      (s) => s.replace('{', '{"__proto__":{"polluted":true},'),
      (s) => s.replace('{', '{"constructor":{"prototype":{"polluted":true}},'),
      (s) => s.replace(/}$/, ',}'),
      (s) => `\uFEFF${s}`,
      (s) => `${s}${s}`,
      (s) => `[${s}]`,
      (s) => s.replace(/"/g, "'"),
      (s) => s.replace(/:(\d+)/, ':NaN'),
      (s) => s.replace(/:(\d+)/, ':1e999'),
      (s) => `/*x*/${s}`,
    ).map((f) => f(JSON.stringify(base))),
  );
};
const garbageBody: fc.Arbitrary<string> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? 'null'),
  fc.string({ maxLength: 300, unit: 'binary' }),
  fc.constantFrom('', ' ', 'null', '{}', '[]', '""', '{"a":', 'undefined', '\u0000', '<x/>', 'a=1&b=2'),
  fc.integer({ min: 50, max: 30_000 }).map((n) => `${'['.repeat(n)}${']'.repeat(n)}`),
  fc.integer({ min: 50, max: 10_000 }).map((n) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`),
  fc.integer({ min: 65_000, max: 70_000 }).map((n) => `{"x":"${'x'.repeat(n)}"}`),
);

const xmlTokens = ['<', '>', '&', '&e;', '&#0;', '&#x110000;', ']]>', '<![CDATA[x]]>', '<!-- -- -->', '<?pi?>', '<!DOCTYPE x>', '<!ENTITY e "x">', ' xmlns:p=""', ' a="1" a="2"', '\u0000', '\uFFFE', '<__proto__/>', ' mustUnderstand="true"', '"', ':'];
const mutatedXml = (doc: string): fc.Arbitrary<string> =>
  fc.oneof(
    fc.constant(doc),
    fc.nat().map((n) => doc.slice(0, n % (doc.length + 1))),
    fc.tuple(fc.nat(), fc.constantFrom(...xmlTokens)).map(([n, token]) => {
      const i = n % (doc.length + 1);
      return doc.slice(0, i) + token + doc.slice(i);
    }),
    fc.tuple(fc.nat(), fc.integer({ min: 1, max: 30 })).map(([n, len]) => {
      const i = n % (doc.length + 1);
      return doc.slice(0, i) + doc.slice(i + len);
    }),
    fc.constantFrom<(s: string) => string>(
      (s) => `<!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>${s.replace(/^<\?xml[^>]*\?>/, '')}`.replace('</presence>', '<note>&xxe;</note></presence>'),
      (s) => `<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>${s.replace(/^<\?xml[^>]*\?>/, '')}`,
      (s) => s.replace(/>/, `>${'<x:a xmlns:x="urn:x">'.repeat(40)}${'</x:a>'.repeat(40)}`),
      (s) => s.replace(/entity="[^"]*"/, 'entity="pres:carol@presence.local"'),
      (s) => s.replace(/entity="[^"]*"/, 'entity=""'),
      (s) => s.replace(/urn:ietf:params:xml:ns:pidf"/, 'urn:ietf:params:xml:ns:pidf:x"'),
      (s) => s.replace('<?xml version="1.0" encoding="UTF-8"?>', '<?xml version="1.0" encoding="UTF-16"?>'),
      (s) => s.replace(/<\/\w*:?\w+>$/, ''),
      (s) => s.replace('open', 'maybe'),
      (s) => s.replace('allow', 'sudo'),
      (s) => s.replace(/urn:uuid:[0-9a-f-]+/, 'urn:uuid:00000000-0000-4000-8000-000000000000'),
      (s) => `${s}<!-- ${'x'.repeat(70_000)} -->`,
    ).map((f) => f(doc)),
  );

const PIDF_DOCS = [
  renderPidf({ entity: ENTITY, basic: 'open', availability: 'away', activities: ['travel'], note: 'Train' }),
  renderPidf({ entity: ENTITY, basic: 'closed' }),
  `<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="${ENTITY}"><tuple id="t"><status><basic>open</basic></status></tuple><dm:person id="p"><rpid:activities><rpid:meeting/></rpid:activities></dm:person></presence>`,
];
const RULES_DOCS = [
  exportPresRules([ruleSchema.parse({ id: '00000000-0000-4000-8000-000000000001', conditions: { identity: { watchers: [bob.id] } }, actions: { subHandling: 'allow' }, transformations: { availability: true } })]),
  exportPresRules([]),
  `<?xml version="1.0" encoding="UTF-8"?><cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" xmlns="urn:ietf:params:xml:ns:pres-rules"><cr:rule id="r1"><cr:conditions><cr:identity><cr:many/></cr:identity></cr:conditions><cr:actions><sub-handling>block</sub-handling></cr:actions></cr:rule></cr:ruleset>`,
];

const CONTENT_TYPES = [
  'application/json', 'application/json', 'application/json; charset=utf-8', 'application/json; charset=utf-16', 'APPLICATION/JSON', 'application/json, text/plain', 'application/pidf+xml', 'application/pidf+xml; charset=utf-8',
  'application/auth-policy+xml', 'text/plain', 'application/xml', 'text/xml', '', ';', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/*', '*/*', `application/${'x'.repeat(3000)}`, 'application/json;charset="utf-8";x=1;;',
];
const ACCEPTS = [
  '*/*', 'application/json', 'application/pidf+xml', 'application/auth-policy+xml', 'text/html', '', ',,,', 'application/*;q=abc', 'application/json;q=0', '*/*;q=-1', 'a/b;q=1;q=2', `${'x/y,'.repeat(400)}*/*`, 'x'.repeat(5000),
  'application/json;q=1.0000001', 'application/pidf+xml;q=0, application/json;q=0', 'application', '/', 'application/json\t;\tq=0.5',
];
const IF_MATCH = ['', '*', '"abc"', 'W/"abc"', `"${'a'.repeat(65)}"`, `"${'a'.repeat(9000)}"`, '"a", "b"', 'abc', '"é"', '""', `"${ETAG}"`, `W/"${ETAG}"`, `"${ETAG}", "x"`, ` "${ETAG}" `, ETAG, `"${ETAG.toUpperCase()}"`];
const EXPIRES = ['', '-1', '0', '59', '60', '1e3', '0x10', '99999999999999999999', ' 600', 'soon', '3600.5', '+600', '٣٦٠٠', 'NaN', '600, 600', `${'9'.repeat(5000)}`];
const EVENTS = ['presence', 'Presence;id=1', 'dialog', '', 'presence, dialog', 'presence;', ';presence', 'x'.repeat(5000), 'presence.winfo'];
const LAST_EVENT_IDS = ['', '"abc"', 'x'.repeat(9000), 'é', `${ETAG}`, `"${ETAG}"`, '0', '-1', '\t'];
const MISC_HEADERS: [string, string][] = [
  ['if-none-match', '"x"'],
  ['if-none-match', '*'],
  ['if-none-match', 'W/"a", "b", ,,'],
  ['content-encoding', 'gzip'],
  ['content-encoding', 'br, identity'],
  ['expect', '100-continue'],
  ['x-forwarded-for', '1.1.1.1, ::1, garbage'],
  ['range', 'bytes=0-1'],
  ['cookie', '__proto__=x; constructor=y'],
  ['origin', 'null'],
  ['x-http-method-override', 'DELETE'],
  ['accept-charset', 'utf-16'],
  ['accept-encoding', 'gzip;q=x'],
  ['connection', 'keep-alive, Upgrade'],
  ['upgrade', 'h2c'],
  ['__proto__', 'x'],
  ['constructor', 'x'],
];

const pick = <T>(items: readonly T[]) => fc.constantFrom(...items);
const authArb: fc.Arbitrary<string | undefined> = fc.oneof({ weight: 2, arbitrary: pick(GARBAGE_AUTH) }, { weight: 3, arbitrary: pick(LIVE_AUTH) });
const extraHeaders: fc.Arbitrary<[string, string][]> = fc.array(
  fc.oneof(
    pick(ACCEPTS).map((v): [string, string] => ['accept', v]),
    pick(IF_MATCH).map((v): [string, string] => ['if-match', v]),
    pick(EXPIRES).map((v): [string, string] => ['expires', v]),
    pick(EVENTS).map((v): [string, string] => ['event', v]),
    pick(LAST_EVENT_IDS).map((v): [string, string] => ['last-event-id', v]),
    pick(MISC_HEADERS),
    pick(CONTENT_TYPES).map((v): [string, string] => ['content-type', v]),
  ),
  { maxLength: 3 },
);

/** Path parameters: the real ones bent (case, white space, encodings), and plain hostile strings. */
const hostileParam = (real: readonly string[]) =>
  fc.oneof(
    fc.tuple(pick(real), pick<(s: string) => string>([(s) => s.toUpperCase(), (s) => `${s}%20`, (s) => `%20${s}`, (s) => `{${s}}`, (s) => s.replaceAll('-', ''), (s) => `${s}x`, (s) => s.slice(1), (s) => `${s}%00`, (s) => `${s}/`, (s) => `${s}/..`, (s) => `..%2F${s}`, (s) => `${s}%2F`, (s) => encodeURIComponent(`${s} `), (s) => `${s}.json`, (s) => `${s};x`, (s) => `%${s}`])).map(([s, f]) => f(s)),
    pick(['', '.', '..', '%', '%zz', '%E0%A4%A', '%C0%AF', '%00', '*', '%2e%2e', 'null', 'undefined', '__proto__', 'constructor', 'x'.repeat(300), '%F0%9F%98%80', 'é', '\u00ff', '-', '0', 'a\tb']),
    fc.string({ maxLength: 40 }).map((s) => encodeURIComponent(s)),
  );
const hostileQuery = fc.oneof(
  fc.constant(''),
  pick(['?', '?&', '?=', '?handle', '?handle=', '?handle=alice&handle=carol', '?handle[]=alice', '?handle[0]=alice', '?handle.x=1', '?__proto__[polluted]=1', '?constructor[prototype][polluted]=1', '?limit=-1', '?limit=1e9', '?limit=abc', '?limit=1&limit=2', '?cursor=%', '?cursor=' + 'x'.repeat(3000), '?cursor=MjAyNnww', '?confirm=ALICE', '?confirm=alice%00', '?confirm=%20alice', '?confirm[]=alice', '?%zz=1', '?a=%E0%A4%A']),
  fc.array(fc.tuple(fc.string({ maxLength: 8 }), fc.string({ maxLength: 12 })), { maxLength: 5 }).map((pairs) => `?${pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')}`),
  fc.integer({ min: 90, max: 130 }).map((n) => `?${Array.from({ length: n }, (_, i) => `handle=h${i}`).join('&')}`),
);

const draft = (family: string, method: string, path: fc.Arbitrary<string>, body: fc.Arbitrary<string | undefined>, contentType: fc.Arbitrary<string | undefined>) =>
  fc.tuple(path, body, contentType, authArb, extraHeaders, fc.boolean()).map(([p, b, type, authorization, extra, chunked]): Draft => {
    const headers: [string, string][] = [];
    if (authorization !== undefined) headers.push(['authorization', authorization]);
    if (type !== undefined) headers.push(['content-type', type]);
    headers.push(...extra);
    return { family, method, path: p, headers, body: b, chunked: chunked && b !== undefined && b.length > 0 && b.length < 2000 };
  });

/** The owner's own token, the right media type and no other header: the body itself reaches the parser and the schema. */
const focused = (family: string, method: string, path: string, body: fc.Arbitrary<string>, contentType: string) =>
  fc.tuple(body, fc.constantFrom(aliceToken, carolToken)).map(([b, token]): Draft => ({
    family: `${family} (focused)`,
    method,
    path: path.replace('{self}', token === aliceToken ? 'alice' : 'carol'),
    headers: [
      ['authorization', `Bearer ${token}`],
      ['content-type', contentType],
    ],
    body: b,
  }));

/**
 * Well-formed writes that name what is not theirs or does not exist: a
 * watcher, another owner's group, rule id or session, an unknown zone, a
 * rule id twice. The service must refuse each whole (checkRule and one
 * transaction in replaceRules), leaving the rules as they were.
 */
const goodRule = { conditions: { identity: { watchers: [bob.id] } }, actions: { subHandling: 'allow' }, transformations: { availability: true } };
const badRules: Obj[] = [
  { ...goodRule, conditions: { identity: { watchers: [UNKNOWN_ID] } } },
  { ...goodRule, conditions: { identity: { anyAuthenticated: true, except: { watchers: [UNKNOWN_ID] } } } },
  { ...goodRule, conditions: { identity: { groups: [GROUP_ID] } } },
  { ...goodRule, conditions: { identity: { groups: [UNKNOWN_ID] } } },
  { ...goodRule, conditions: { identity: { watchers: [bob.id] }, untilArrivalAt: 'Mars' } },
];
const asXml = (rules: Obj[]) => exportPresRules(rules.map((r, i) => ruleSchema.parse({ id: typeof r.id === 'string' ? r.id : `00000000-0000-4000-8000-${String(i + 1).padStart(12, '0')}`, ...r })));
const referenceDrafts: fc.Arbitrary<Draft> = fc.oneof(
  fc.tuple(pick(badRules), fc.constantFrom(aliceToken, carolToken)).map(([rule, token]): Draft => ({
    family: 'references',
    method: 'POST',
    path: '/v1/me/rules',
    headers: [['authorization', `Bearer ${token}`], ['content-type', 'application/json']],
    body: JSON.stringify(rule),
  })),
  fc.tuple(pick(badRules), fc.constantFrom(...RULE_IDS)).map(([rule, id]): Draft => ({
    family: 'references',
    method: 'PUT',
    path: `/v1/me/rules/${id}`,
    headers: [['authorization', `Bearer ${aliceToken}`], ['content-type', 'application/json']],
    body: JSON.stringify(rule),
  })),
  fc.tuple(fc.constantFrom<Obj[]>([goodRule, ...badRules.slice(0, 1)], [goodRule, { ...goodRule, id: CAROL_RULE_ID }], [{ ...goodRule, id: UNKNOWN_ID }, { ...goodRule, id: UNKNOWN_ID }], [goodRule, goodRule, badRules[3] as Obj], [{ ...goodRule, id: CAROL_RULE_ID }]), fc.boolean()).map(
    ([rules, xml]): Draft => ({
      family: 'references',
      method: 'PUT',
      path: '/v1/me/rules',
      headers: [['authorization', `Bearer ${aliceToken}`], ['content-type', xml ? 'application/auth-policy+xml' : 'application/json']],
      body: xml ? asXml(rules) : JSON.stringify({ rules }),
    }),
  ),
  // Carol reaching for what is Alice's, and Eve for Bob's.
  fc
    .constantFrom<[string, string, string | undefined, string]>(
      ['PUT', `/v1/me/rules/${RULE_IDS[0]}`, JSON.stringify(goodRule), carolToken],
      ['DELETE', `/v1/me/rules/${RULE_IDS[1]}`, undefined, carolToken],
      ['DELETE', `/v1/me/rules/${CAROL_RULE_ID}`, undefined, aliceToken],
      ['DELETE', `/v1/me/groups/${GROUP_ID}`, undefined, carolToken],
      ['DELETE', `/v1/me/groups/${GROUP_ID}`, undefined, aliceToken],
      ['DELETE', '/v1/me/sessions/app1', undefined, carolToken],
      ['DELETE', `/v1/webhooks/${HOOK_ID}`, undefined, eve.token],
      ['PUT', `/v1/me/rules/${UNKNOWN_ID}`, JSON.stringify(goodRule), aliceToken],
      ['PUT', `/v1/me/rules/${CAROL_RULE_ID}`, JSON.stringify(goodRule), aliceToken],
    )
    .map(([method, path, body, token]): Draft => ({
      family: 'references',
      method,
      path,
      headers: [['authorization', `Bearer ${token}`], ...(body === undefined ? [] : ([['content-type', 'application/json']] as [string, string][]))],
      body,
    })),
);

/** Access-log cursors as the service writes them (base64url of `{ISO time}|{id}`), with times and ids at and past every limit. */
const b64url = (text: string) => Buffer.from(text).toString('base64url');
const CURSOR_TIMES = ['-271821-04-20T00:00:00.000Z', '-004713-01-01T00:00:00.000Z', '-004712-01-01T00:00:00.000Z', '0000-01-01T00:00:00.000Z', '1970-01-01T00:00:00.000Z', '9999-12-31T23:59:59.999Z', '+010000-01-01T00:00:00.000Z', '+275760-09-13T00:00:00.000Z', '2026', '0', 'x', ''];
const cursorDrafts: fc.Arbitrary<Draft> = fc
  .tuple(
    fc.oneof(pick(CURSOR_TIMES), fc.date({ min: new Date(-8.64e15), max: new Date(8.64e15), noInvalidDate: true }).map((d) => d.toISOString())),
    pick(['0', '1', '-1', '9007199254740991', '9007199254740992', '1e3', '0x10', 'x', '', '1|2']),
    fc.constantFrom(`/v1/me/access-log`, '/v1/admin/owners/alice/access-log'),
    fc.constantFrom('', '&limit=1', '&limit=1000'),
  )
  .map(([time, id, route, extra]): Draft => ({
    family: 'cursor',
    method: 'GET',
    path: `${route}?cursor=${b64url(`${time}|${id}`)}${extra}`,
    headers: [['authorization', `Bearer ${route.startsWith('/v1/admin') ? service.adminToken : aliceToken}`]],
    body: undefined,
  }));
/** A cursor whose time lies outside the years 1 to 9999: its toISOString() (0000-…, -004712-…, +010000-…) is not a time PostgreSQL can parse. */
function cursorOutOfRange(path: string): boolean {
  if (!path.includes('/access-log?')) return false;
  const cursor = new URLSearchParams(path.split('?')[1] ?? '').get('cursor') ?? '';
  const time = new Date(Buffer.from(cursor, 'base64url').toString('utf8').split('|')[0] ?? '');
  return !Number.isNaN(time.getTime()) && (time.getUTCFullYear() < 1 || time.getUTCFullYear() > 9999);
}

const jsonType = fc.oneof({ weight: 4, arbitrary: fc.constant('application/json') }, { weight: 1, arbitrary: pick<string | undefined>([...CONTENT_TYPES, undefined]) });
const jsonBody = (base: Obj) => fc.oneof({ weight: 3, arbitrary: mutatedJson(base) }, { weight: 1, arbitrary: garbageBody }, { weight: 1, arbitrary: fc.constant(JSON.stringify(base)) });
const xmlType = (type: string) => fc.oneof({ weight: 4, arbitrary: fc.constant(type) }, { weight: 1, arbitrary: pick<string | undefined>([...CONTENT_TYPES, undefined]) });
const xmlBody = (docs: readonly string[]) => fc.oneof({ weight: 4, arbitrary: pick(docs).chain(mutatedXml) }, { weight: 1, arbitrary: garbageBody });
const handleParam = fc.oneof({ weight: 2, arbitrary: fc.constant('alice') }, { weight: 1, arbitrary: hostileParam(['alice', 'carol']) });

const routeDrafts: fc.Arbitrary<Draft> = fc.oneof(
  { weight: 4, arbitrary: focused('publish PIDF', 'POST', '/v1/presence/{self}', xmlBody(PIDF_DOCS), 'application/pidf+xml') },
  { weight: 4, arbitrary: focused('replace rules XML', 'PUT', '/v1/me/rules', xmlBody(RULES_DOCS), 'application/auth-policy+xml') },
  { weight: 1, arbitrary: focused('publish JSON', 'POST', '/v1/presence/{self}', jsonBody(BASES.publication as Obj), 'application/json') },
  { weight: 2, arbitrary: focused('settings', 'PUT', '/v1/me/settings', jsonBody(BASES.settings as Obj), 'application/json') },
  { weight: 1, arbitrary: focused('status', 'PUT', '/v1/me/status', jsonBody(BASES.status as Obj), 'application/json') },
  { weight: 2, arbitrary: focused('add rule', 'POST', '/v1/me/rules', jsonBody(BASES.rule as Obj), 'application/json') },
  { weight: 1, arbitrary: focused('replace rules JSON', 'PUT', '/v1/me/rules', jsonBody(BASES.rules as Obj), 'application/json') },
  { weight: 5, arbitrary: draft('publish PIDF', 'POST', handleParam.map((h) => `/v1/presence/${h}`), xmlBody(PIDF_DOCS), xmlType('application/pidf+xml')) },
  { weight: 3, arbitrary: draft('publish JSON', 'POST', handleParam.map((h) => `/v1/presence/${h}`), fc.option(jsonBody(BASES.publication as Obj), { nil: undefined }), jsonType) },
  { weight: 4, arbitrary: draft('settings', 'PUT', fc.constant('/v1/me/settings'), jsonBody(BASES.settings as Obj), jsonType) },
  { weight: 3, arbitrary: draft('status', 'PUT', fc.constant('/v1/me/status'), jsonBody(BASES.status as Obj), jsonType) },
  { weight: 1, arbitrary: draft('session', 'PUT', hostileParam(['app1', 'app2']).map((id) => `/v1/me/sessions/${id}`), jsonBody(BASES.status as Obj), jsonType) },
  { weight: 3, arbitrary: draft('add rule', 'POST', fc.constant('/v1/me/rules'), jsonBody(BASES.rule as Obj), jsonType) },
  { weight: 2, arbitrary: draft('replace rules JSON', 'PUT', fc.constant('/v1/me/rules'), jsonBody(BASES.rules as Obj), jsonType) },
  { weight: 4, arbitrary: draft('replace rules XML', 'PUT', fc.constant('/v1/me/rules'), xmlBody(RULES_DOCS), xmlType('application/auth-policy+xml')) },
  { weight: 1, arbitrary: draft('change rule', 'PUT', fc.oneof(pick(RULE_IDS), hostileParam(RULE_IDS)).map((id) => `/v1/me/rules/${id}`), jsonBody(BASES.rule as Obj), jsonType) },
  { weight: 1, arbitrary: draft('add group', 'POST', fc.constant('/v1/me/groups'), jsonBody(BASES.group as Obj), jsonType) },
  { weight: 2, arbitrary: draft('webhook', 'POST', fc.constant('/v1/webhooks'), jsonBody(BASES.webhook as Obj), jsonType) },
  ...(['owner', 'device', 'watcher', 'token'] as const).map((kind) => ({
    weight: 1,
    arbitrary: draft(`admin ${kind}`, 'POST', fc.constant(`/v1/admin/${kind}s`), jsonBody(BASES[kind] as Obj), jsonType),
  })),
  // Hostile path parameters and query strings on deletes and reads.
  { weight: 1, arbitrary: draft('delete rule', 'DELETE', hostileParam(RULE_IDS).map((id) => `/v1/me/rules/${id}`), fc.constant(undefined), fc.constant(undefined)) },
  { weight: 1, arbitrary: draft('delete session', 'DELETE', hostileParam(['app1']).map((id) => `/v1/me/sessions/${id}`), fc.constant(undefined), fc.constant(undefined)) },
  { weight: 1, arbitrary: draft('delete group', 'DELETE', hostileParam([GROUP_ID]).map((id) => `/v1/me/groups/${id}`), fc.constant(undefined), fc.constant(undefined)) },
  { weight: 1, arbitrary: draft('delete webhook', 'DELETE', hostileParam([HOOK_ID]).map((id) => `/v1/webhooks/${id}`), fc.constant(undefined), fc.constant(undefined)) },
  { weight: 1, arbitrary: draft('erase account', 'DELETE', hostileQuery.map((q) => `/v1/me${q}`), fc.constant(undefined), fc.constant(undefined)) },
  { weight: 2, arbitrary: draft('read presence', 'GET', fc.tuple(handleParam, hostileQuery).map(([h, q]) => `/v1/presence/${h}${q}`), fc.constant(undefined), fc.constant(undefined)) },
  { weight: 1, arbitrary: draft('batch read', 'GET', hostileQuery.map((q) => `/v1/presence${q}`), fc.constant(undefined), fc.constant(undefined)) },
  { weight: 1, arbitrary: draft('stream', 'GET', handleParam.map((h) => `/v1/presence/${h}/stream`), fc.constant(undefined), fc.constant(undefined)) },
  { weight: 1, arbitrary: draft('read rules', 'GET', hostileQuery.map((q) => `/v1/me/rules${q}`), fc.constant(undefined), fc.constant(undefined)) },
  { weight: 1, arbitrary: draft('access log', 'GET', hostileQuery.map((q) => `/v1/me/access-log${q}`), fc.constant(undefined), fc.constant(undefined)) },
  {
    weight: 1,
    arbitrary: draft(
      'other methods',
      'GET',
      fc.tuple(pick(['PATCH', 'OPTIONS', 'HEAD', 'TRACE', 'PROPFIND', 'DELETE', 'PUT']), pick(['/v1/me/settings', '/v1/me/status', '/v1/presence/alice', '/v1/me/rules', '/v1/webhooks', '/v1/admin/owners', '/readyz', '/nope', '//v1/me/settings', '/v1/me/settings/', '/V1/ME/SETTINGS', '/v1/./me/settings', '/v1/me/../me/settings'])).map(([m, p]) => `${m} ${p}`),
      fc.option(garbageBody, { nil: undefined }),
      pick<string | undefined>([...CONTENT_TYPES, undefined]),
    ).map((d) => {
      const [method = 'GET', path = '/'] = d.path.split(' ');
      return { ...d, method, path };
    }),
  },
);

/** Requests broken at the protocol level, written byte for byte (never with a live token). */
const protocolDrafts: fc.Arbitrary<Draft> = fc
  .tuple(
    pick<(host: string) => string>([
      (h) => `PUT /v1/me/settings HTTP/1.1\r\nHost: ${h}\r\nX: a\u0001b\r\nConnection: close\r\n\r\n`,
      (h) => `GET /readyz HTTP/1.1\r\nHost: ${h}\r\nX: ${'a'.repeat(20_000)}\r\nConnection: close\r\n\r\n`,
      (h) => `GET /v1/presence/${'a'.repeat(20_000)} HTTP/1.1\r\nHost: ${h}\r\nConnection: close\r\n\r\n`,
      (h) => `FOO /v1/me/settings HTTP/1.1\r\nHost: ${h}\r\nConnection: close\r\n\r\n`,
      (h) => `GET /v1/presence/%E0%A4%A HTTP/1.1\r\nHost: ${h}\r\nConnection: close\r\n\r\n`,
      (h) => `GET /v1/presence/%zz HTTP/1.1\r\nHost: ${h}\r\nConnection: close\r\n\r\n`,
      (h) => `DELETE /v1/me/rules/%ZZ HTTP/1.1\r\nHost: ${h}\r\nConnection: close\r\n\r\n`,
      (h) => `PUT /v1/me/settings HTTP/1.1\r\nHost: ${h}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\n0\r\n\r\n`,
      (h) => `PUT /v1/me/settings HTTP/1.1\r\nHost: ${h}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
      (h) => `PUT /v1/me/settings HTTP/1.1\r\nHost: ${h}\r\nContent-Length: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{}`,
      (h) => `PUT /v1/me/settings HTTP/1.1\r\nHost: ${h}\r\nContent-Length: -1\r\nConnection: close\r\n\r\n{}`,
      (h) => `PUT /v1/me/settings HTTP/1.1\r\nHost: ${h}\r\nContent-Length: 1\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{}`,
      (h) => `GET /readyz HTTP/1.1\nHost: ${h}\nConnection: close\n\n`,
      (h) => `GET /readyz HTTP/1.1\r\nHost: ${h}\r\nX: a\r\n b\r\nConnection: close\r\n\r\n`,
      (h) => `GET /readyz\u0000 HTTP/1.1\r\nHost: ${h}\r\nConnection: close\r\n\r\n`,
      (h) => `GET /readyz HTTP/9.9\r\nHost: ${h}\r\nConnection: close\r\n\r\n`,
      (h) => `GET /readyz HTTP/1.0\r\nHost: ${h}\r\n\r\n`,
      () => 'GET /readyz HTTP/1.1\r\nConnection: close\r\n\r\n',
      (h) => `PUT /v1/me/settings HTTP/1.1\r\nHost: ${h}\r\nExpect: foo\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
      (h) => `GET /v1/me/settings HTTP/1.1\r\nHost: ${h}\r\nAuthorization: Bearer a\u00ffb\r\nConnection: close\r\n\r\n`,
      (h) => `GET /v1/me/settings HTTP/1.1\r\nHost: ${h}\r\nAuthorization: Bearer x\r\nAuthorization: Bearer y\r\nConnection: close\r\n\r\n`,
      (h) => `GET http://evil.example/v1/me/settings HTTP/1.1\r\nHost: ${h}\r\nConnection: close\r\n\r\n`,
      (h) => `GET /v1/me/settings?${'a=1&'.repeat(3000)} HTTP/1.1\r\nHost: ${h}\r\nConnection: close\r\n\r\n`,
      (h) => `POST /v1/presence/alice HTTP/1.1\r\nHost: ${h}\r\nContent-Type: application/pidf+xml\r\nContent-Length: 7\r\nConnection: close\r\n\r\n\u00ff\u00fe<x/>\u0000`,
    ]),
    fc.constantFrom(`127.0.0.1:${port}`, 'evil.example', '', '[::1]:99999'),
  )
  .map(([make, host]) => ({ family: 'protocol', method: 'RAW', path: '', headers: [], body: undefined, raw: Buffer.from(make(host), 'latin1') }));

// --- sending over raw sockets and reading the answers ------------------------------------------------

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

function encode(spec: Draft): Buffer {
  if (spec.raw) return spec.raw;
  const body = spec.body === undefined ? undefined : Buffer.from(spec.body, 'utf8');
  const lines = [`${spec.method} ${spec.path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, ...spec.headers.map(([name, value]) => `${name}: ${value}`), 'Connection: close'];
  if (body !== undefined && spec.chunked) lines.push('Transfer-Encoding: chunked');
  else if (body !== undefined) lines.push(`Content-Length: ${body.length}`);
  const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'utf8');
  if (body === undefined) return head;
  if (!spec.chunked) return Buffer.concat([head, body]);
  const half = Math.ceil(body.length / 2);
  const chunk = (b: Buffer) => (b.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]));
  return Buffer.concat([head, chunk(body.subarray(0, half)), chunk(body.subarray(half)), Buffer.from('0\r\n\r\n')]);
}

/** Every response in the bytes (pipelined leftovers can earn a second one); 1xx are skipped. */
function parseAnswers(bytes: Buffer, method: string): Answer[] {
  const answers: Answer[] = [];
  let rest: Buffer = bytes;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const [statusLine = '', ...headerLines] = rest.subarray(0, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/\d\.\d (\d{3})/.exec(statusLine)?.[1] ?? NaN);
    const headers: Record<string, string> = {};
    for (const line of headerLines) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    let body: Buffer = rest.subarray(end + 4);
    let next: Buffer = Buffer.alloc(0);
    if (status >= 100 && status < 200) {
      rest = body;
      continue;
    }
    if (method === 'HEAD' || status === 204 || status === 304) {
      next = body;
      body = Buffer.alloc(0);
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const parts: Buffer[] = [];
      let at = 0;
      for (;;) {
        const lineEnd = body.indexOf('\r\n', at);
        if (lineEnd < 0) break;
        const size = parseInt(body.subarray(at, lineEnd).toString('latin1'), 16);
        if (!Number.isFinite(size) || size === 0) {
          at = lineEnd + 4;
          break;
        }
        parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size));
        at = lineEnd + 2 + size + 2;
      }
      next = body.subarray(Math.min(at, body.length));
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const length = Number(headers['content-length']);
      next = body.subarray(length);
      body = body.subarray(0, length);
    }
    answers.push({ status, headers, body: body.toString('utf8') });
    rest = next;
  }
  return answers;
}

function send(spec: Draft): Promise<{ answers: Answer[]; timedOut: boolean; error?: string }> {
  return new Promise((resolve) => {
    const socket = connect(Number(port), '127.0.0.1');
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (timedOut: boolean, error?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const bytes = Buffer.concat(chunks);
      resolve({ answers: parseAnswers(bytes, spec.method), timedOut, ...(error ? { error } : {}) });
    };
    const timer = setTimeout(() => finish(true), REQUEST_TIMEOUT_MS);
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      // An event stream that opened never ends by itself: its head is the answer.
      const head = Buffer.concat(chunks).toString('latin1');
      if (/^HTTP\/1\.1 200[^]*content-type: text\/event-stream[^]*\r\n\r\n/i.test(head)) finish(false);
    });
    socket.on('end', () => finish(false));
    socket.on('close', () => finish(false));
    // A server that answers and closes before the whole request is written resets the rest: not a failure.
    socket.on('error', (error) => finish(false, error.message));
    socket.write(encode(spec));
  });
}

// --- snapshots: what must not change ---------------------------------------------------------------

// Logs by design: reads are in the access log, admin requests in the operators' audit trail (api/admin-audit.ts).
const NOT_COMPARED = new Set(['access_log', 'admin_actions']);

async function snapshot() {
  const get = async (path: string, token: string, accept = 'application/json') => {
    const response = await service.api('GET', path, { token, headers: { accept } });
    return { status: response.status, body: await response.text() };
  };
  const api: Record<string, unknown> = {};
  for (const [who, token] of [
    ['alice', aliceToken],
    ['carol', carolToken],
  ] as const) {
    api[`${who} settings`] = await get('/v1/me/settings', token);
    api[`${who} rules`] = await get('/v1/me/rules', token);
    api[`${who} rules as pres-rules`] = await get('/v1/me/rules', token, 'application/auth-policy+xml');
    api[`${who} groups`] = await get('/v1/me/groups', token);
    api[`${who} devices`] = await get('/v1/me/devices', token);
    const exported = (await get('/v1/me/export', token, '*/*')).body
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as { type: string })
      // The header's time, the access log (reads are logged), the admin actions (audited), the presence of now and the record count change by design.
      .filter((record) => !['export', 'access-log', 'admin-action', 'presence', 'end'].includes(record.type));
    api[`${who} export`] = exported;
  }
  api['bob webhooks'] = await get('/v1/webhooks', bob.token);
  api["bob's view of alice"] = await get('/v1/presence/alice', bob.token);
  api["eve's view of carol"] = await get('/v1/presence/carol', eve.token);

  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  const tables: Record<string, string[]> = {};
  try {
    const { rows } = await db.query<{ table_name: string }>("select table_name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE' order by table_name");
    for (const { table_name: table } of rows) {
      if (NOT_COMPARED.has(table)) continue;
      const result = await db.query<{ row: unknown }>(`select to_jsonb(t) as row from "${table}" t`);
      tables[table] = result.rows.map((r) => JSON.stringify(r.row)).sort();
    }
  } finally {
    await db.end();
  }
  return { api, tables };
}

// --- the run ---------------------------------------------------------------------------------------

t.test(`${REQUESTS} generated hostile HTTP requests against a real service (seed ${SEED})`, async (t) => {
  const before = await snapshot();
  t.ok(Object.keys(before.tables).length >= 8, `the database snapshot covers ${Object.keys(before.tables).length} tables`);
  t.match(before.api['alice settings'], { status: 200 }, 'the snapshot reads the settings');
  t.equal((before.api['alice export'] as { type: string }[]).map((r) => r.type).filter((type) => type === 'status').length, 3, 'the export holds the status, the session and the publication');

  const drafts = fc.sample(
    fc.oneof({ weight: 36, arbitrary: routeDrafts }, { weight: 2, arbitrary: referenceDrafts }, { weight: 1, arbitrary: cursorDrafts }, { weight: 2, arbitrary: protocolDrafts }),
    { numRuns: REQUESTS, seed: SEED },
  );
  let forcedInvalid = 0;
  const specs = drafts.map((d): Draft & { write: boolean } => {
    const write = !['GET', 'HEAD', 'OPTIONS', 'RAW', 'TRACE', 'PROPFIND'].includes(d.method);
    if (d.raw) return { ...d, write: false };
    const principal = principalOf(headerAsSeen(d.headers, 'authorization'));
    if (principal === 'none' || !mightSucceed(d, principal)) return { ...d, write };
    forcedInvalid += 1;
    // Might succeed: make it certainly fail, without a live token (or, for a publication, with an invalid expiry).
    const headers = d.headers.filter(([name]) => name.toLowerCase() !== 'authorization');
    if (d.method === 'POST' && d.path.startsWith('/v1/presence/') && forcedInvalid % 2 === 0) {
      return { ...d, write, headers: [...d.headers.filter(([name]) => name.toLowerCase() !== 'expires'), ['expires', forcedInvalid % 4 === 0 ? 'soon' : '30']] };
    }
    const garbage = GARBAGE_AUTH[forcedInvalid % GARBAGE_AUTH.length];
    return { ...d, write, headers: garbage === undefined ? headers : [['authorization', garbage], ...headers] };
  });
  // Every spec that could still succeed was changed above; check the change took.
  const stillValid = specs.filter((s) => !s.raw && s.write && principalOf(headerAsSeen(s.headers, 'authorization')) !== 'none' && mightSucceed(s, principalOf(headerAsSeen(s.headers, 'authorization'))));
  t.same(stillValid.map((s) => `${s.method} ${s.path}`), [], 'no fuzzed write could be valid');

  const failures = {
    serverErrors: [] as object[],
    cursorServerErrors: [] as object[],
    noAnswer: [] as object[],
    badShape: [] as object[],
    acceptedWrites: [] as object[],
    fastifyClientError: [] as object[],
    fastifyFramework: [] as object[],
    nodeBuiltIn: [] as object[],
  };
  const statuses = new Map<number, number>();
  const codes = new Map<string, number>();
  const families = new Map<string, number>();
  const refusals = new Set<string>();
  const describe = (spec: Draft) => ({
    family: spec.family,
    request: spec.raw ? spec.raw.toString('latin1').slice(0, 300) : `${spec.method} ${spec.path.slice(0, 200)}`,
    headers: spec.headers.map(([n, v]) => `${n}: ${v.length > 80 ? `${v.slice(0, 80)}…(${v.length})` : v}`),
    body: spec.body === undefined ? undefined : spec.body.length > 200 ? `${spec.body.slice(0, 200)}…(${spec.body.length})` : spec.body,
  });
  const started = performance.now();
  let next = 0;
  let sent = 0;
  async function worker() {
    while (next < specs.length) {
      const spec = specs[next++] as (typeof specs)[number];
      families.set(spec.family, (families.get(spec.family) ?? 0) + 1);
      const { answers, timedOut, error } = await send(spec);
      sent += 1;
      if (answers.length === 0) {
        // Only a protocol-level request may be dropped without an answer (the server cannot tell where it ends).
        if (timedOut || !spec.raw) failures.noAnswer.push({ ...describe(spec), timedOut, error });
        continue;
      }
      for (const answer of answers) {
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        if (answer.status >= 500 && !spec.raw && cursorOutOfRange(spec.path)) {
          failures.cursorServerErrors.push({ ...describe(spec), status: answer.status, answer: answer.body.slice(0, 300) });
          continue;
        }
        if (!(answer.status >= 100 && answer.status < 500)) {
          failures.serverErrors.push({ ...describe(spec), status: answer.status, answer: answer.body.slice(0, 300) });
          t.comment(`5xx: ${JSON.stringify({ ...describe(spec), status: answer.status, answer: answer.body.slice(0, 300) })}`);
        }
        if (spec.write && answer === answers[0] && answer.status < 300) failures.acceptedWrites.push({ ...describe(spec), status: answer.status, answer: answer.body.slice(0, 300) });
        if (answer.status < 400 || spec.method === 'HEAD') continue;
        let parsed: unknown;
        try {
          parsed = JSON.parse(answer.body);
        } catch {
          parsed = undefined;
        }
        const error = parsed as { code?: unknown; message?: unknown; details?: unknown; statusCode?: unknown; error?: unknown } | undefined;
        const entry = httpErrors[String(error?.code) as keyof typeof httpErrors] as { status: number } | undefined;
        const keysOk = error !== undefined && error !== null && typeof error === 'object' && Object.keys(error).every((k) => ['code', 'message', 'details'].includes(k));
        const detailsOk = error?.details === undefined || (Array.isArray(error.details) && error.details.every((d) => typeof d === 'string'));
        if (keysOk && entry && entry.status === answer.status && typeof error?.message === 'string' && error.message !== '' && detailsOk) {
          codes.set(String(error?.code), (codes.get(String(error?.code)) ?? 0) + 1);
          if (spec.family === 'references') refusals.add(`${answer.status} ${String(error?.code)}: ${String(error?.message).slice(0, 70)}`);
          continue;
        }
        const seen = { ...describe(spec), status: answer.status, answer: answer.body.slice(0, 200) };
        if (typeof error?.code === 'string' && error.code.startsWith('FST_ERR_')) failures.fastifyFramework.push(seen);
        else if (error?.statusCode !== undefined && error.error !== undefined && (error.message === 'Client Error' || answer.status === 431)) failures.fastifyClientError.push(seen);
        else if (answer.body === '' && spec.raw) failures.nodeBuiltIn.push(seen);
        else failures.badShape.push(seen);
      }
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, () => worker()));
  const elapsed = performance.now() - started;

  const show = (list: object[]) => ({ count: list.length, first: list.slice(0, 3) });
  const requestOf = (list: object[]) => [...new Set(list.map((f) => (f as { request: string }).request.split(/\r?\n/)[0]?.slice(0, 60)))].slice(0, 8);
  t.equal(sent, REQUESTS, `${sent} requests sent`);
  t.same(show(failures.serverErrors), { count: 0, first: [] }, 'never a 5xx');
  t.same(requestOf(failures.cursorServerErrors), [], 'an access-log cursor with a time outside the years 1 to 9999 is refused (400), not a 5xx');
  t.comment(`cursor 5xx: ${failures.cursorServerErrors.length}, e.g. ${JSON.stringify(requestOf(failures.cursorServerErrors).slice(0, 2))}`);
  t.same(show(failures.noAnswer), { count: 0, first: [] }, `every well-formed request is answered within ${REQUEST_TIMEOUT_MS} ms`);
  t.same(show(failures.acceptedWrites), { count: 0, first: [] }, 'no fuzzed (invalid) write succeeds');
  t.same(show(failures.badShape), { count: 0, first: [] }, 'every error body the routes give is {code, message[, details]} with a catalog code and its status');
  // Known gaps, all at the protocol level, before any route runs (see the report of this fuzzing):
  t.same(requestOf(failures.fastifyClientError), [], 'requests node:http cannot parse (bad header characters, duplicate or negative Content-Length, bad chunks, bare LF, obs-fold, unknown methods) and headers over 16 KiB (431) are answered with the catalog shape');
  t.same(requestOf(failures.fastifyFramework), [], 'a path with malformed percent-encoding, or a path parameter over 100 characters, is answered with the catalog shape');
  t.same(requestOf(failures.nodeBuiltIn), [], 'requests node:http refuses by itself (an Expect other than 100-continue, no Host) are answered with the catalog shape');

  for (const [name, list] of Object.entries({ fastifyClientError: failures.fastifyClientError, fastifyFramework: failures.fastifyFramework, nodeBuiltIn: failures.nodeBuiltIn })) {
    const kinds = [...new Set(list.map((f) => { const { status, answer } = f as { status: number; answer: string }; return `${status} ${answer.slice(0, 90)}`; }))];
    t.comment(`${name}: ${list.length} answers, ${JSON.stringify(kinds)}; requests: ${JSON.stringify(requestOf(list))}`);
  }

  const ready = await service.api('GET', '/readyz');
  t.equal(ready.status, 200, '/readyz still answers 200');
  t.same(await ready.json(), { status: 'ready' }, '/readyz says ready');

  const after = await snapshot();
  for (const key of Object.keys(before.api)) t.same(after.api[key], before.api[key], `unchanged through the API: ${key}`);
  for (const table of Object.keys(before.tables)) t.same(after.tables[table], before.tables[table], `unchanged in storage: ${table}`);
  t.same(Object.keys(after.tables), Object.keys(before.tables), 'no table appeared or went');
  t.ok(isDeepStrictEqual(after, before), 'no partial write anywhere: the snapshots are identical');
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype is not polluted in the test process');

  t.ok(codes.size >= 8, `${codes.size} distinct error codes seen: ${JSON.stringify(Object.fromEntries(codes))}`);
  t.comment(`references family refused with: ${JSON.stringify([...refusals].sort())}`);
  t.comment(`statuses: ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}`);
  t.comment(`families: ${JSON.stringify(Object.fromEntries(families))}`);
  t.comment(`${REQUESTS} requests in ${Math.round(elapsed)} ms (${forcedInvalid} drafts that might have succeeded were made invalid)`);
});

/**
 * The minimal cases behind the bugs this fuzzing found where input reaches
 * PostgreSQL unchecked: text with U+0000 (which PostgreSQL text and jsonb
 * cannot hold) in names whose schemas skip the printable-text check, and
 * access-log cursors whose time PostgreSQL cannot hold. Each is a client
 * error and must be a 400 from the catalog; none may write anything.
 */
t.test('minimal cases: input PostgreSQL cannot store is a client error, not a 5xx, and writes nothing', async (t) => {
  const before = await snapshot();
  const cases: { name: string; method: string; path: string; token: string; body?: unknown; bug: string }[] = [
    { name: 'owner display name with U+0000', method: 'POST', path: '/v1/admin/owners', token: service.adminToken, body: { handle: 'nul-owner', displayName: 'a\u0000b' }, bug: 'core/identifiers.ts displayNameSchema has no printable-text check (api/routes/admin.ts)' },
    { name: 'watcher name with U+0000', method: 'POST', path: '/v1/admin/watchers', token: service.adminToken, body: { kind: 'person', name: 'a\u0000b' }, bug: 'core/identifiers.ts displayNameSchema has no printable-text check (api/routes/admin.ts)' },
    { name: 'device name with U+0000', method: 'POST', path: '/v1/admin/devices', token: service.adminToken, body: { owner: 'alice', class: 'phone', name: 'a\u0000b' }, bug: 'core/identifiers.ts displayNameSchema has no printable-text check (api/routes/admin.ts)' },
    { name: 'group name with U+0000', method: 'POST', path: '/v1/me/groups', token: aliceToken, body: { name: 'a\u0000b' }, bug: 'policy/rule.ts groupBodySchema name has no printable-text check' },
    { name: 'group renamed with U+0000', method: 'PUT', path: `/v1/me/groups/${GROUP_ID}`, token: aliceToken, body: { name: 'a\u0000b', members: [bob.id] }, bug: 'policy/rule.ts groupBodySchema name has no printable-text check' },
    { name: 'access-log cursor in year 0000', method: 'GET', path: `/v1/me/access-log?cursor=${b64url('0000-01-01T00:00:00.000Z|1')}`, token: aliceToken, bug: 'api/accounts.ts decodeCursor accepts any JS Date (core/db/repository.ts listAccessLog casts its toISOString())' },
    { name: 'access-log cursor in year 10000', method: 'GET', path: `/v1/me/access-log?cursor=${b64url('+010000-01-01T00:00:00.000Z|1')}`, token: aliceToken, bug: 'api/accounts.ts decodeCursor accepts any JS Date (core/db/repository.ts listAccessLog casts its toISOString())' },
    { name: 'admin access-log cursor in year 0000', method: 'GET', path: `/v1/admin/owners/alice/access-log?cursor=${b64url('0000-01-01T00:00:00.000Z|1')}`, token: service.adminToken, bug: 'api/accounts.ts decodeCursor accepts any JS Date (core/db/repository.ts listAccessLog casts its toISOString())' },
  ];
  let wrote = false;
  for (const c of cases) {
    const response = await service.api(c.method, c.path, { token: c.token, ...(c.body === undefined ? {} : { body: c.body }) });
    const text = await response.text();
    if (response.status < 300) wrote = true;
    t.ok(response.status < 500, `${c.name}: not a 5xx (got ${response.status} ${text.slice(0, 80)}; was: ${c.bug})`);
    t.match({ status: response.status, body: text }, { status: 400, body: /"code":"invalid_request"/ }, `${c.name}: 400 invalid_request`);
  }
  t.notOk(wrote, 'every case was refused');
  const after = await snapshot();
  t.same(after, before, 'nothing was written: the refused (or failed) requests left no partial write');
  t.equal((await service.api('GET', '/readyz')).status, 200, '/readyz still answers 200');
});
