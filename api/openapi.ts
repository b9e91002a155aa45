import swagger, { type SwaggerTransform } from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyContextConfig, FastifyInstance, FastifyPluginCallback } from 'fastify';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { httpErrors, type HttpErrorCode } from '../core/errors.js';
import { SIGNING_ALG, type Scope, type TokenKind } from '../core/identity/tokens.js';
import { ownerSettingsSchema } from '../core/owner-settings.js';
import { groupSchema, ruleSchema } from '../policy/rule.js';
import { watcherViewSchema } from '../policy/watcher-view.js';

/**
 * The OpenAPI 3.1 document of the HTTP API, generated from the routes' zod
 * schemas (fastify-type-provider-zod's transforms), served at
 * GET /openapi.json and browsable at /docs (Swagger UI).
 *
 * Response schemas never change what a route sends: error bodies, XML,
 * NDJSON, SSE and the other pre-serialized bodies are strings, which
 * Fastify sends as they are (only objects go through a response
 * serializer); the schemas of those statuses and media types only
 * describe the bytes. A route that sends an object has the zod schema of
 * exactly that object. What a route reads or sends outside its Fastify
 * schema (headers, a body it parses itself) is added to the document only,
 * with `documented()`.
 */
export const API_VERSION = '0.1.0';
export const OPENAPI_PATH = '/openapi.json';
export const DOCS_PREFIX = '/docs';
export const BEARER_SCHEME = 'bearerAuth';

export const tags = [
  { name: 'presence', description: "Reading an owner's presence as a watcher (or the owner), as PIDF or JSON." },
  { name: 'publish', description: 'Publishing presence for an owner: SIP PUBLISH (RFC 3903) semantics over HTTP.' },
  { name: 'stream', description: 'Live presence as Server-Sent Events.' },
  { name: 'consent', description: 'Consent rules (RFC 4745/5025 semantics) and watcher groups.' },
  { name: 'watchers', description: 'Access requests, watcher information (RFC 3857/3858) and the preview as a contact.' },
  { name: 'settings', description: "The owner's settings and their own full presence with its trace." },
  { name: 'status', description: 'The manual status and app presence sessions.' },
  { name: 'access-log', description: "Who read or streamed the owner's presence, and when." },
  { name: 'webhooks', description: "Signed POSTs of a watcher's view on every change." },
  { name: 'account', description: 'The owner\'s devices, and their data rights: export everything, erase everything.' },
  { name: 'admin', description: 'Operator API (admin tokens), the backend of presencectl.' },
  { name: 'system', description: 'Liveness, readiness, metrics, keys and this document.' },
] as const;
export type Tag = (typeof tags)[number]['name'];

const errorCodes = Object.keys(httpErrors) as [HttpErrorCode, ...HttpErrorCode[]];
type ErrorStatus = (typeof httpErrors)[HttpErrorCode]['status'];
type StatusOf<T> = T extends ErrorStatus ? T : T extends HttpErrorCode ? (typeof httpErrors)[T]['status'] : never;

/** The body of every error response (api/http-errors.ts sendError). */
export const errorBodySchema = z
  .object({
    code: z.enum(errorCodes).describe('Stable code from the error catalog: clients key on it.'),
    message: z.string().describe('What went wrong, for people.'),
    details: z.array(z.string()).optional().describe('The individual problems, such as one per invalid field.'),
  })
  .meta({ id: 'Error', description: 'Every error response: `{ code, message, details? }`, with a code from the catalog.' });

const reasons: Record<ErrorStatus, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  423: 'Interval Too Brief (RFC 3903)',
  408: 'Request Timeout',
  417: 'Expectation Failed',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

export interface ErrorResponse {
  readonly description: string;
  readonly content: { readonly 'application/json': { readonly schema: typeof errorBodySchema } };
}

/**
 * Error responses for the response map of a route schema: each argument is
 * a status (every code of the catalog with that status) or a single code;
 * `internal` (500) is always included, and `too_many_requests` (429), which
 * the abuse limits may answer on any route (api/server.ts installLimits).
 * Each status is described by the codes it may carry.
 */
export function errors<const W extends readonly (ErrorStatus | HttpErrorCode)[]>(...which: W): Record<StatusOf<W[number]> | 429 | 500, ErrorResponse> {
  return errorResponses(['internal', 'too_many_requests'], which) as Record<StatusOf<W[number]> | 429 | 500, ErrorResponse>;
}

/** The same for the operators' probes (liveness, readiness, metrics), which the abuse limits never refuse. */
export function probeErrors<const W extends readonly (ErrorStatus | HttpErrorCode)[]>(...which: W): Record<StatusOf<W[number]> | 500, ErrorResponse> {
  return errorResponses(['internal'], which) as Record<StatusOf<W[number]> | 500, ErrorResponse>;
}

function errorResponses(always: readonly HttpErrorCode[], which: readonly (ErrorStatus | HttpErrorCode)[]): Record<number, ErrorResponse> {
  const byStatus = new Map<number, HttpErrorCode[]>();
  for (const code of errorCodes) {
    const { status } = httpErrors[code];
    if (!always.includes(code) && !which.some((w) => w === code || w === status)) continue;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const out: Record<number, ErrorResponse> = {};
  for (const [status, codes] of byStatus) {
    const described = codes.map((code) => `\`${code}\`: ${httpErrors[code].message}`).join(' ');
    out[status] = { description: `${reasons[status as ErrorStatus]}. ${described}`, content: { 'application/json': { schema: errorBodySchema } } };
  }
  return out;
}

/** A JSON success response. */
export function json<T extends z.ZodType>(schema: T, description: string, headers?: ResponseHeaders) {
  return { description, content: { 'application/json': { schema } }, ...(headers ? { headers } : {}) };
}

/** A response in one or more media types (the schemas of pre-serialized bodies describe them only). */
export function media<C extends Record<string, z.ZodType>>(description: string, content: C, headers?: ResponseHeaders) {
  return {
    description,
    content: Object.fromEntries(Object.entries(content).map(([type, schema]) => [type, { schema }])) as { [K in keyof C]: { schema: C[K] } },
    ...(headers ? { headers } : {}),
  };
}

/** A response without a body. */
export const empty = (description: string) => z.undefined().describe(description);

/** Response headers for the document (OpenAPI header objects' schemas, with a description). */
export type ResponseHeaders = Record<string, { readonly type: 'string' | 'integer'; readonly description: string }>;

/** `tags`, `summary`, `description` and `security` of an operation; `access` is who may call it, or 'public'. */
export function operation(tag: Tag | readonly Tag[], summary: string, access: { kinds: readonly TokenKind[]; scope: Scope } | 'public', description?: string) {
  const who = access === 'public' ? undefined : `Bearer token of kind ${access.kinds.join(' or ')} with the scope \`${access.scope}\`.`;
  const text = [description, who].filter((s) => s !== undefined).join('\n\n');
  return {
    tags: typeof tag === 'string' ? [tag] : [...tag],
    summary,
    ...(text ? { description: text } : {}),
    security: access === 'public' ? [] : [{ [BEARER_SCHEME]: [access.scope] }],
  };
}

export const ownerAccess = (scope: Scope) => ({ kinds: ['owner'] as const, scope });
export const watcherAccess = (scope: Scope) => ({ kinds: ['watcher'] as const, scope });
export const adminAccess = { kinds: ['admin'] as const, scope: 'admin' as const };

/** Shared components: their schemas are referenced, not repeated. */
for (const [schema, id] of [
  [watcherViewSchema, 'WatcherView'],
  [ruleSchema, 'Rule'],
  [groupSchema, 'Group'],
  [ownerSettingsSchema, 'OwnerSettings'],
] as const) {
  if (!z.globalRegistry.has(schema)) z.globalRegistry.add(schema, { id });
}

/** Headers of the document's responses: fastify-type-provider-zod's transform keeps a response's description and content only. */
const transform: SwaggerTransform = (document) => {
  const transformed = jsonSchemaTransform(document);
  const declared = document.schema.response as Record<string, unknown> | undefined;
  const responses = transformed.schema.response as Record<string, Record<string, unknown>> | undefined;
  for (const [status, response] of Object.entries(declared ?? {})) {
    const target = responses?.[status];
    if (target && typeof response === 'object' && response !== null && 'headers' in response) target.headers = response.headers;
  }
  return transformed;
};

/** Marks an operation whose request body may be left out (@fastify/swagger marks every body required); removed by transformObject. */
const OPTIONAL_BODY = 'x-optional-body';

/**
 * What a route reads outside its Fastify schema, for the document only
 * (nothing is validated): request headers, a request body the route parses
 * itself, in each media type it takes, and whether the body may be left
 * out. Goes in the route's config.
 */
export function documented(extra: { headers?: z.ZodObject; body?: { description: string; content: Record<string, z.ZodType> }; optionalBody?: boolean }): FastifyContextConfig {
  return {
    swaggerTransform: (document) => {
      const transformed = transform(document);
      const schema: Record<string, unknown> = { ...transformed.schema };
      if (extra.optionalBody) schema[OPTIONAL_BODY] = true;
      if (extra.headers) schema.headers = transform({ ...document, schema: { headers: extra.headers } }).schema.headers;
      if (extra.body) {
        const content = Object.fromEntries(
          Object.entries(extra.body.content).map(([type, body]) => [type, { schema: transform({ ...document, schema: { body } }).schema.body }]),
        );
        schema.body = { description: extra.body.description, content };
      }
      return { schema, url: transformed.url };
    },
  };
}

/**
 * Optional request bodies are marked so; component schemas no operation
 * refers to (the zod transforms emit input twins of the shared ones) are
 * left out.
 */
const transformObject: typeof jsonSchemaTransformObject = (document) => {
  const object = jsonSchemaTransformObject(document);
  for (const operations of Object.values(object.paths ?? {}) as Record<string, Record<string, unknown>>[]) {
    for (const op of Object.values(operations)) {
      if (typeof op !== 'object' || op === null || !(OPTIONAL_BODY in op)) continue;
      delete op[OPTIONAL_BODY];
      if (typeof op.requestBody === 'object' && op.requestBody !== null) (op.requestBody as { required?: boolean }).required = false;
    }
  }
  const { components, ...rest } = object as { components?: { schemas?: Record<string, unknown> } };
  const schemas = components?.schemas;
  if (!schemas) return object;
  const { schemas: _schemas, ...otherComponents } = components;
  const refersTo = (value: unknown, name: string) => JSON.stringify(value).includes(`"#/components/schemas/${name}"`);
  const used = new Set<string>();
  const queue = Object.keys(schemas).filter((name) => refersTo(rest, name) || refersTo(otherComponents, name));
  for (let name = queue.pop(); name !== undefined; name = queue.pop()) {
    if (used.has(name)) continue;
    used.add(name);
    for (const other of Object.keys(schemas)) if (!used.has(other) && refersTo(schemas[name], other)) queue.push(other);
  }
  for (const name of Object.keys(schemas)) if (!used.has(name)) delete schemas[name];
  return object;
};

const catalog = errorCodes.map((code) => `| \`${code}\` | ${httpErrors[code].status} | ${httpErrors[code].message} |`).join('\n');

const description = `Privacy-first presence service: sensor events become consented, SIP-compatible presence (PIDF/RPID).

Every error response has the body \`{ code, message, details? }\` (schema \`Error\`) with a code from this catalog; each operation lists the codes it may return under each status. An unknown path, or a method a path does not have, gets \`not_found\` (\`method_not_allowed\` is not used). While the service shuts down, new requests get 503 with Fastify's own body instead.

| code | status | message |
|---|---|---|
${catalog}`;

/**
 * Registers the document and the UI. Call before any route is added:
 * @fastify/swagger collects routes with an onRoute hook, and a plugin
 * registered with app.register is loaded only at ready(), after the routes
 * buildApi adds synchronously, which it would miss. So the plugin function
 * is run at once on the root instance instead (it only adds hooks and a
 * decorator), and @fastify/swagger-ui, which depends on it by name, is told
 * it is loaded.
 */
export function registerOpenApi(app: FastifyInstance): void {
  swagger(
    app,
    {
      openapi: {
        openapi: '3.1.0',
        info: { title: 'Presence service', version: API_VERSION, description },
        tags: tags.map((t) => ({ ...t })),
        components: {
          securitySchemes: {
            [BEARER_SCHEME]: {
              type: 'http',
              scheme: 'bearer',
              bearerFormat: 'JWT',
              description: `A JWT signed with ${SIGNING_ALG} by the service (presencectl or POST /v1/admin/tokens), audience presence:api, of kind owner, watcher or admin. The roles of each operation's requirement are the scopes it needs.`,
            },
          },
        },
      },
      transform,
      transformObject,
    },
    (error) => {
      if (error) throw error;
    },
  );
  const swaggerLoaded: FastifyPluginCallback = Object.assign(((_instance, _options, done) => done()) satisfies FastifyPluginCallback, {
    [Symbol.for('skip-override')]: true,
    [Symbol.for('plugin-meta')]: { name: '@fastify/swagger' },
  });
  app.register(swaggerLoaded);
  app.register(swaggerUi, { routePrefix: DOCS_PREFIX });

  let document: string | undefined;
  app.get(
    OPENAPI_PATH,
    {
      schema: {
        ...operation('system', 'This OpenAPI document', 'public'),
        response: {
          200: json(z.looseObject({ openapi: z.string(), info: z.looseObject({ title: z.string(), version: z.string() }), paths: z.record(z.string(), z.unknown()) }), 'The OpenAPI 3.1 document of this API.'),
          ...errors(),
        },
      },
    },
    async (_request, reply) => {
      document ??= JSON.stringify(app.swagger());
      return reply.type('application/json; charset=utf-8').send(document);
    },
  );
}

/** The schema of GET /.well-known/jwks.json (api/server.ts). */
export const jwksRouteSchema = {
  ...operation(['system', 'webhooks'], 'The public keys that sign webhook deliveries', 'public', 'A JSON Web Key Set (RFC 7517): receivers of webhooks verify the JWS signatures with it.'),
  response: {
    200: media(
      'The key set.',
      {
        'application/jwk-set+json': z.object({
          keys: z.array(z.looseObject({ kty: z.string(), crv: z.string().optional(), x: z.string().optional(), y: z.string().optional(), kid: z.string(), alg: z.string(), use: z.literal('sig') })),
        }),
      },
      { 'Cache-Control': { type: 'string', description: 'public, max-age=300' } },
    ),
    ...errors(),
  },
};
