import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { API_VERSION, BEARER_SCHEME, DOCS_PREFIX, OPENAPI_PATH, tags } from '../../api/openapi.js';
import { buildApi, type ApiDeps } from '../../api/server.js';
import { httpErrors, type HttpErrorCode } from '../../core/errors.js';
import { projectRoot } from '../helpers/env.js';
import { addWatcher, ownerToken, provision, startTestService, testConfig } from '../helpers/service.js';
import { parseConfig } from '../../core/config.js';
import { Metrics } from '../../core/metrics.js';

/**
 * The OpenAPI document (GET /openapi.json) and its UI (/docs), on the
 * embedded defaults: every route the app has, with every method, is in the
 * document; every protected operation names the bearer scheme and its
 * errors, each error status with the shared error body and the codes it
 * may carry. And declaring those responses changed nothing the routes send.
 */
const config = await testConfig(t);
const service = await startTestService(t, config);

interface Operation {
  tags?: string[];
  summary?: string;
  security?: Record<string, string[]>[];
  parameters?: { in: string; name: string; required?: boolean }[];
  responses: Record<string, { description?: string; content?: Record<string, { schema?: { $ref?: string } }> }>;
}
interface Document {
  openapi: string;
  info: { title: string; version: string };
  tags: { name: string }[];
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, { properties?: { code?: { enum?: string[] } } }>; securitySchemes: Record<string, Record<string, string>> };
}

const response = await service.api('GET', OPENAPI_PATH);
const doc = (await response.json()) as Document;
const methods = ['get', 'put', 'post', 'delete', 'patch', 'options', 'head', 'trace'];
const operations = Object.entries(doc.paths).flatMap(([path, ops]) =>
  Object.entries(ops)
    .filter(([method]) => methods.includes(method))
    .map(([method, op]) => ({ key: `${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`, path, op })),
);
const publicOperations = ['GET /healthz', 'GET /readyz', 'GET /metrics', 'GET /.well-known/jwks.json', `GET ${OPENAPI_PATH}`];
const statusOf = (code: string) => httpErrors[code as HttpErrorCode]?.status;

/** "METHOD /path" of every route, from Fastify's route tree (printRoutes with full paths per node). */
function routesOf(tree: string): string[] {
  const out: string[] = [];
  const prefixes: string[] = [];
  for (const line of tree.split('\n')) {
    const match = /^((?:│ {3}| {4})*)[├└]── (.+?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!match) continue;
    const depth = (match[1] ?? '').length / 4;
    const path = (prefixes[depth - 1] ?? '') + match[2];
    prefixes.length = depth;
    prefixes.push(path);
    for (const method of match[3]?.split(', ') ?? []) out.push(`${method} ${path}`);
  }
  return out;
}

t.test('GET /openapi.json is an OpenAPI 3.1 document of the service', async (t) => {
  t.equal(response.status, 200);
  t.match(response.headers.get('content-type'), /^application\/json/);
  t.match(doc.openapi, /^3\.1\.\d+$/);
  t.equal(doc.info.title, 'Presence service');
  const pkg = JSON.parse(await readFile(join(projectRoot, 'package.json'), 'utf8')) as { version: string };
  t.equal(doc.info.version, pkg.version, 'the version is the package version');
  t.equal(API_VERSION, pkg.version);
  t.same(
    doc.tags.map((tag) => tag.name),
    ['presence', 'publish', 'stream', 'consent', 'watchers', 'settings', 'status', 'access-log', 'webhooks', 'account', 'admin', 'system'],
  );
  t.match(doc.components.securitySchemes[BEARER_SCHEME], { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' });
  t.match(doc.components.securitySchemes[BEARER_SCHEME]?.description, /ES256/);

  // Structure: every reference resolves, every path parameter is declared, every response is described.
  const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"([^"]+)"/g)].map((m) => m[1] ?? '');
  t.ok(refs.length > 0);
  for (const ref of new Set(refs)) t.ok(doc.components.schemas[ref.replace('#/components/schemas/', '')], `${ref} resolves`);
  for (const { key, path, op } of operations) {
    for (const name of [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1])) {
      t.ok(op.parameters?.some((p) => p.in === 'path' && p.name === name && p.required === true), `${key}: path parameter ${name}`);
    }
    t.ok(Object.keys(op.responses).length > 0, `${key} has responses`);
    for (const [status, r] of Object.entries(op.responses)) t.ok(r.description && r.description !== 'Default Response', `${key} ${status} is described`);
  }
});

t.test('every route of the app, with every method, is in the document', async (t) => {
  // A second app from the same buildApi, for its route table: routes are
  // only registered here, never called, so their dependencies are stubs.
  const defaults = parseConfig({});
  if (!defaults.ok) throw new Error(defaults.problems.join('; '));
  const app = buildApi({ log: pino({ level: 'silent' }), metrics: new Metrics(), limits: defaults.config.limits, clock: Date.now } as unknown as ApiDeps);
  t.teardown(() => app.close());
  await app.ready();
  const routes = routesOf(app.printRoutes({ commonPrefix: false }))
    // HEAD routes are Fastify's automatic twins of GET routes; the UI's routes are not the API.
    .filter((route) => !route.startsWith('HEAD ') && !route.split(' ')[1]?.startsWith(DOCS_PREFIX));
  t.ok(routes.length >= 50, `the route table was read (${routes.length} routes)`);
  t.same(operations.map((o) => o.key).sort(), [...new Set(routes)].sort());
});

t.test('operations: tags, summary, security, errors', async (t) => {
  const tagNames = new Set<string>(tags.map((tag) => tag.name));
  const codesNamed = new Set<string>();
  for (const { key, op } of operations) {
    t.ok(op.tags && op.tags.length > 0 && op.tags.every((tag) => tagNames.has(tag)), `${key} has known tags`);
    t.ok(op.summary, `${key} has a summary`);
    const statuses = Object.keys(op.responses);
    t.ok(statuses.some((s) => /^[23]\d\d$/.test(s)), `${key} declares its success`);
    if (publicOperations.includes(key)) {
      t.same(op.security, [], `${key} is public`);
    } else {
      t.ok(op.security?.length === 1 && op.security[0]?.[BEARER_SCHEME], `${key} needs a bearer token`);
      t.ok(statuses.includes('401') && statuses.includes('403'), `${key} declares 401 and 403`);
    }
    t.ok(statuses.includes('500'), `${key} declares 500`);
    for (const status of statuses.filter((s) => /^[45]\d\d$/.test(s))) {
      const r = op.responses[status];
      t.same(r?.content, { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } }, `${key} ${status}: the error body`);
      const codes = [...(r?.description ?? '').matchAll(/`([a-z_]+)`/g)].map((m) => m[1] ?? '');
      t.ok(codes.length > 0, `${key} ${status} names its codes`);
      for (const code of codes) {
        t.equal(statusOf(code), Number(status), `${key}: ${code} is a ${status} code`);
        codesNamed.add(code);
      }
    }
  }
  t.same(doc.components.schemas.Error?.properties?.code?.enum, Object.keys(httpErrors), 'the error schema has the whole catalog');
  const unused = Object.keys(httpErrors).filter((code) => !codesNamed.has(code));
  // method_not_allowed is unused (unknown methods are not_found); the
  // protocol-level codes answer requests that never reach an operation.
  t.same(unused, ['method_not_allowed', 'headers_too_large', 'expectation_failed', 'request_timeout'], 'every other code is named by some operation');
});

t.test('the UI at /docs', async (t) => {
  const docs = await service.api('GET', DOCS_PREFIX);
  t.equal(docs.status, 200);
  t.match(docs.headers.get('content-type'), /^text\/html/);
  t.match(await docs.text(), /swagger/i);
  const fromUi = await service.api('GET', `${DOCS_PREFIX}/json`);
  t.equal(fromUi.status, 200);
  t.same(await fromUi.json(), doc, 'the UI shows the same document');
});

t.test('declared responses change nothing the routes send', async (t) => {
  const unauthorized = await service.api('GET', '/v1/me/rules');
  t.equal(unauthorized.status, 401);
  t.equal(unauthorized.headers.get('content-type'), 'application/json; charset=utf-8');
  t.equal(await unauthorized.text(), JSON.stringify({ code: 'unauthorized', message: httpErrors.unauthorized.message }), 'the error body as sendError made it');

  const invalid = await service.api('POST', '/v1/admin/owners', { token: service.adminToken, body: { handle: 'Not A Handle!', extra: 1 } });
  t.equal(invalid.status, 400);
  const invalidBody = (await invalid.json()) as { code: string; message: string; details: string[] };
  t.equal(invalidBody.code, 'invalid_request');
  t.ok(invalidBody.details.length >= 1, 'with its details');

  const health = await service.api('GET', '/healthz');
  t.equal(await health.text(), '{"status":"ok"}\n');
  const metrics = await service.api('GET', '/metrics');
  t.equal(metrics.headers.get('content-type'), 'text/plain; version=0.0.4');
  const jwks = await service.api('GET', '/.well-known/jwks.json');
  t.match(jwks.headers.get('content-type'), /^application\/jwk-set\+json/);
  t.match(await jwks.json(), { keys: [{ kty: 'EC', use: 'sig' }] });

  await provision(service, 'alice');
  const token = await ownerToken(service, 'alice');
  const published = await service.api('POST', '/v1/presence/alice', { token, body: { availability: 'busy' }, headers: { expires: '600' } });
  t.equal(published.status, 201);
  const etag = published.headers.get('etag')?.replaceAll('"', '');
  t.equal(await published.text(), JSON.stringify({ etag, expires: 600 }), 'the publication result as the route made it');
  const tooBrief = await service.api('POST', '/v1/presence/alice', { token, body: { availability: 'busy' }, headers: { expires: '10' } });
  t.equal(tooBrief.status, 423);
  t.equal(tooBrief.headers.get('min-expires'), '60');
  t.match(await tooBrief.json(), { code: 'interval_too_brief' });

  const bob = await addWatcher(service, 'Bob');
  const pidf = await service.api('GET', '/v1/presence/alice', { token: bob.token });
  t.equal(pidf.status, 200);
  t.equal(pidf.headers.get('content-type'), 'application/pidf+xml; charset=utf-8');
  t.match(await pidf.text(), /^<\?xml/);
  const notModified = await service.api('GET', '/v1/presence/alice', { token: bob.token, headers: { 'if-none-match': pidf.headers.get('etag') ?? '' } });
  t.equal(notModified.status, 304);
  t.equal(await notModified.text(), '');

  const preview = await service.api('GET', `/v1/me/preview/${bob.id}`, { token, headers: { accept: 'application/json' } });
  t.equal(preview.status, 200);
  const previewBody = (await preview.json()) as Record<string, unknown>;
  t.same(Object.keys(previewBody), ['view', 'decision', 'matchingRules', 'fields', 'etag']);
  t.match(previewBody, { decision: 'no-match', matchingRules: [], fields: {} });

  const watcherInfo = await service.api('GET', '/v1/me/watchers', { token, headers: { accept: 'application/watcherinfo+xml' } });
  t.equal(watcherInfo.headers.get('content-type'), 'application/watcherinfo+xml; charset=utf-8');
  t.match(await watcherInfo.text(), /^<\?xml/);
  const presRules = await service.api('GET', '/v1/me/rules', { token, headers: { accept: 'application/auth-policy+xml' } });
  t.equal(presRules.headers.get('content-type'), 'application/auth-policy+xml; charset=utf-8');
  t.match(await presRules.text(), /^<\?xml/);
  const rules = await service.api('GET', '/v1/me/rules', { token });
  t.same(await rules.json(), { rules: [] });

  await service.flush();
  const exported = await service.api('GET', '/v1/me/access-log/export', { token });
  t.equal(exported.status, 200);
  t.equal(exported.headers.get('content-type'), 'application/x-ndjson; charset=utf-8');
  t.match(await exported.text(), /"watcherId"/, 'the read above, one JSON line');
});
