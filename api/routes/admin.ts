import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { deviceClassSchema, displayNameSchema, handleSchema } from '../../core/identifiers.js';
import { MAX_TOKEN_TTL_SECONDS, scopeSchema } from '../../core/identity/tokens.js';
import { domainSchema } from '../../policy/rule.js';
import type { TokenRevocations } from '../../core/token-revocations.js';
import type { Accounts } from '../accounts.js';
import type { Authenticator } from '../authenticate.js';
import { adminAccess, empty, errors, json, operation } from '../openapi.js';

/** Operator API (admin tokens only): the command-line tool's backend. */
export function adminRoutes(app: FastifyInstance, deps: { auth: Authenticator; accounts: Accounts; revocations: TokenRevocations; deviceTopic: (id: string) => string }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const admin = (request: Parameters<Authenticator['require']>[0]) => deps.auth.require(request, ['admin'], 'admin');

  r.post(
    '/v1/admin/owners',
    {
      schema: {
        ...operation('admin', 'Create an owner', adminAccess),
        body: z.object({ handle: handleSchema, displayName: displayNameSchema.optional() }).strict(),
        response: {
          201: json(z.object({ id: z.uuid(), handle: z.string(), entity: z.string() }), 'The owner, with their presentity URI.'),
          ...errors(400, 401, 403, 'conflict', 413, 415),
        },
      },
    },
    async (request, reply) => {
      await admin(request);
      return reply.code(201).send(await deps.accounts.createOwner(request.body.handle, request.body.displayName));
    },
  );

  r.post(
    '/v1/admin/devices',
    {
      schema: {
        ...operation('admin', 'Register a device for an owner', adminAccess),
        body: z.object({ owner: handleSchema, class: deviceClassSchema, name: displayNameSchema.optional() }).strict(),
        response: {
          201: json(z.object({ id: z.uuid(), ownerId: z.uuid(), owner: z.string(), class: z.string(), topic: z.string() }), 'The device, with the MQTT topic it publishes to.'),
          ...errors(400, 401, 403, 404, 413, 415),
        },
      },
    },
    async (request, reply) => {
      await admin(request);
      const device = await deps.accounts.registerDevice(request.body.owner, request.body.class, request.body.name);
      return reply.code(201).send({ ...device, topic: deps.deviceTopic(device.id) });
    },
  );

  r.post(
    '/v1/admin/watchers',
    {
      schema: {
        ...operation('admin', 'Register a watcher (a person or an app)', adminAccess),
        body: z.object({ kind: z.enum(['person', 'app']), name: displayNameSchema, domain: domainSchema.optional() }).strict(),
        response: {
          201: json(z.object({ id: z.uuid(), kind: z.enum(['person', 'app']), name: z.string(), domain: z.string().optional() }), 'The watcher.'),
          ...errors(400, 401, 403, 413, 415),
        },
      },
    },
    async (request, reply) => {
      await admin(request);
      return reply.code(201).send(await deps.accounts.registerWatcher(request.body.kind, request.body.name, request.body.domain));
    },
  );

  r.post(
    '/v1/admin/tokens',
    {
      schema: {
        ...operation('admin', 'Issue a token', adminAccess, 'A device token (MQTT), or a watcher or owner token (HTTP); the scopes default to all the kind may carry. With MQTT_DEVICE_CREDENTIALS=mosquitto-dynsec a device token becomes the device\'s broker password before it is returned (503 if the broker does not take it).'),
        body: z
          .object({
            kind: z.enum(['device', 'watcher', 'owner']),
            subject: z.string().min(1).max(100),
            ttlSeconds: z.number().int().min(60).max(MAX_TOKEN_TTL_SECONDS).optional(),
            scopes: z.array(scopeSchema).min(1).optional(),
          })
          .strict(),
        response: {
          201: json(z.object({ kind: z.string(), subject: z.string(), token: z.string(), expiresAt: z.string(), scopes: z.array(z.string()) }), 'The token.'),
          // 503: a device token the broker did not take (MQTT_DEVICE_CREDENTIALS=mosquitto-dynsec).
          ...errors(400, 401, 403, 404, 413, 415, 503),
        },
      },
    },
    async (request, reply) => {
      await admin(request);
      const { kind, subject, ttlSeconds, scopes } = request.body;
      return reply.code(201).send(await deps.accounts.issue(kind, subject, ttlSeconds, scopes));
    },
  );

  r.post(
    '/v1/admin/tokens/revoke',
    {
      schema: {
        ...operation(
          'admin',
          'Revoke tokens',
          adminAccess,
          "`{ kind, subject }`: every token of the owner (an id or a handle) or the watcher (an id) issued up to now stops working, on every process of a group, and their open streams end; a watcher's webhooks registered until now are removed; tokens issued later work. Tokens are not stored, so this is how a token nobody can name (a lost phone's) is revoked. `{ kind: \"admin\", subject }` does the same for the admin tokens of that subject (an operator who left). `{ tokenId }` revokes one HTTP API token by its id (its `jti`, shown for admin tokens in GET /v1/admin/actions), and removes the webhooks it registered. Devices are revoked on their own (`DELETE /v1/admin/devices/{id}`).",
        ),
        body: z.union([
          z.object({ kind: z.enum(['watcher', 'owner']), subject: z.string().min(1).max(100) }).strict(),
          z.object({ kind: z.literal('admin'), subject: z.string().min(1).max(200) }).strict(),
          z.object({ tokenId: z.string().regex(/^[A-Za-z0-9._~:-]{1,200}$/) }).strict(),
        ]),
        response: { 204: empty('Revoked.'), ...errors(400, 401, 403, 404, 413, 415) },
      },
    },
    async (request, reply) => {
      await admin(request);
      const body = request.body;
      if ('tokenId' in body) await deps.revocations.revokeTokenId(body.tokenId);
      else if (body.kind === 'admin') await deps.revocations.revokeAdminSubject(body.subject);
      else await deps.accounts.revokeTokens(body.kind, body.subject);
      return reply.code(204).send();
    },
  );
}
