import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { AppError } from '../../core/errors.js';
import { handleSchema } from '../../core/identifiers.js';
import type { Accounts } from '../accounts.js';
import type { Authenticator } from '../authenticate.js';
import { adminAccess, empty, errors, json, media, operation, ownerAccess } from '../openapi.js';

/**
 * The owner's devices and data rights (GDPR Art. 15, 17 and 20 in spirit):
 * list and revoke devices, export everything the service holds, erase it
 * all. Owners act on themselves (scope account:manage); operators on any
 * owner. Erasure asks for the handle again, as a confirmation that no
 * misdirected call can give.
 */
const deviceSchema = z.object({
  id: z.uuid(),
  class: z.string(),
  name: z.string().nullable(),
  createdAt: z.string(),
  revokedAt: z.string().nullable().describe('When it was revoked; its tokens no longer work.'),
});
const deviceParams = z.object({ id: z.uuid().regex(/^[0-9a-f-]+$/, 'must be a lower-case UUID') });
const eraseQuery = z.object({ confirm: handleSchema.describe("The owner's handle, repeated: erasure cannot be undone.") }).strict();

const EXPORT_HELP =
  'Newline-delimited JSON, streamed: a header record (`type: export`), then one record per thing held, each with a `type` (owner, device, rule, group, access-request, webhook, stored-signals, status, access-log, raw-event), then the presence derived now with its reasons (`presence`), then a trailer (`type: end`, `records`: the count, header and trailer included). Wi-Fi names appear only as the digests the service keeps.';

function sendExport(reply: FastifyReply, records: AsyncGenerator<Record<string, unknown>>, handle: string) {
  async function* lines() {
    for await (const record of records) yield `${JSON.stringify(record)}\n`;
  }
  return reply
    .type('application/x-ndjson; charset=utf-8')
    .header('content-disposition', `attachment; filename="presence-export-${handle}.ndjson"`)
    .header('cache-control', 'no-store')
    .send(Readable.from(lines()));
}

/** The first record is produced before the response starts, so a refusal (no such owner) is still a proper error. */
async function started(records: AsyncGenerator<Record<string, unknown>>): Promise<AsyncGenerator<Record<string, unknown>>> {
  const first = await records.next();
  return (async function* () {
    if (!first.done) yield first.value;
    yield* records;
  })();
}

export function dataRightsRoutes(app: FastifyInstance, deps: { auth: Authenticator; accounts: Accounts }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const self = async (request: Parameters<Authenticator['require']>[0]) => (await deps.auth.require(request, ['owner'], 'account:manage')).subject;
  const admin = (request: Parameters<Authenticator['require']>[0]) => deps.auth.require(request, ['admin'], 'admin');

  r.get(
    '/v1/me/devices',
    { schema: { ...operation('account', 'List your devices', ownerAccess('account:manage')), response: { 200: json(z.object({ devices: z.array(deviceSchema) }), 'Your devices, oldest first.'), ...errors(401, 403) } } },
    async (request) => ({ devices: await deps.accounts.listDevices(await self(request)) }),
  );
  r.delete(
    '/v1/me/devices/:id',
    {
      schema: {
        ...operation('account', 'Revoke a device', ownerAccess('account:manage'), 'A lost or sold device: its tokens stop working at once, its broker connection is closed and its events are refused. Revoking twice is not an error.'),
        params: deviceParams,
        response: { 204: empty('Revoked.'), ...errors(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      await deps.accounts.revokeDevice(request.params.id, await self(request));
      return reply.code(204).send();
    },
  );
  r.post(
    '/v1/me/tokens/revoke',
    {
      schema: {
        ...operation(
          'account',
          'Sign out everywhere',
          { kinds: ['owner', 'watcher'], scope: 'account:manage' },
          "Every token of yours issued up to now stops working, this one included, and your open streams end: for a lost phone or a leaked token, which nobody needs to name. A watcher's webhooks registered until now are removed too (they were registered with those tokens). Get a new token afterwards (one issued within the same second is refused too; an identity provider's token without `iat` stays refused). Devices are revoked on their own (`DELETE /v1/me/devices/{id}`). Owners need `account:manage`; a watcher's token needs `presence:read`.",
        ),
        response: { 204: empty('Revoked.'), ...errors(401, 403) },
      },
    },
    async (request, reply) => {
      const principal = await deps.auth.require(request, ['owner', 'watcher']);
      // An owner's read-only token (a dashboard) must not sign the owner out of everything.
      const scope = principal.kind === 'owner' ? 'account:manage' : 'presence:read';
      if (!principal.scopes.has(scope)) throw new AppError('forbidden', `The token lacks the scope ${scope}.`);
      await deps.accounts.revokeTokens(principal.kind === 'owner' ? 'owner' : 'watcher', principal.subject);
      return reply.code(204).send();
    },
  );
  app.get(
    '/v1/me/export',
    {
      schema: {
        ...operation('account', 'Export everything held about you', ownerAccess('account:manage'), EXPORT_HELP),
        response: {
          200: media('Everything, one JSON record per line.', { 'application/x-ndjson': z.string() }, { 'Content-Disposition': { type: 'string', description: 'attachment; filename="presence-export-{handle}.ndjson"' } }),
          ...errors(401, 403),
        },
      },
    },
    async (request, reply) => {
      const ownerId = await self(request);
      const handle = deps.accounts.ownerById(ownerId).handle;
      return sendExport(reply, await started(deps.accounts.exportOwner(ownerId)), handle);
    },
  );
  r.delete(
    '/v1/me',
    {
      schema: {
        ...operation('account', 'Erase everything held about you', ownerAccess('account:manage'), 'Irreversible: the owner, their devices, rules, groups, settings, state, statuses, access log and retained events are deleted, open streams end, devices are disconnected and SIP publications removed. `confirm` must repeat your handle.'),
        querystring: eraseQuery,
        response: { 204: empty('Erased.'), ...errors(400, 401, 403) },
      },
    },
    async (request, reply) => {
      const ownerId = await self(request);
      if (deps.accounts.ownerById(ownerId).handle !== request.query.confirm) throw new AppError('invalid_request', 'confirm must repeat your handle.');
      await deps.accounts.eraseOwner(ownerId);
      return reply.code(204).send();
    },
  );

  const handleParams = z.object({ handle: handleSchema });
  app.get(
    '/v1/admin/owners/:handle/export',
    {
      schema: {
        ...operation(['account', 'admin'], 'Export everything held about an owner', adminAccess, EXPORT_HELP),
        params: handleParams,
        response: { 200: media('Everything, one JSON record per line.', { 'application/x-ndjson': z.string() }), ...errors('invalid_request', 401, 403, 404) },
      },
    },
    async (request, reply) => {
      await admin(request);
      const { handle } = request.params as z.infer<typeof handleParams>;
      const owner = deps.accounts.ownerByHandle(handle);
      return sendExport(reply, await started(deps.accounts.exportOwner(owner.id)), owner.handle);
    },
  );
  r.delete(
    '/v1/admin/owners/:handle',
    {
      schema: {
        ...operation(['account', 'admin'], 'Erase an owner and everything held about them', adminAccess, 'Irreversible; `confirm` must repeat the handle.'),
        params: handleParams,
        querystring: eraseQuery,
        response: { 204: empty('Erased.'), ...errors('invalid_request', 401, 403, 404) },
      },
    },
    async (request, reply) => {
      await admin(request);
      if (request.params.handle !== request.query.confirm) throw new AppError('invalid_request', 'confirm must repeat the handle.');
      await deps.accounts.eraseOwner(deps.accounts.ownerByHandle(request.params.handle).id);
      return reply.code(204).send();
    },
  );
  r.delete(
    '/v1/admin/devices/:id',
    {
      schema: { ...operation('admin', 'Revoke a device', adminAccess), params: deviceParams, response: { 204: empty('Revoked.'), ...errors(400, 401, 403, 404) } },
    },
    async (request, reply) => {
      await admin(request);
      await deps.accounts.revokeDevice(request.params.id);
      return reply.code(204).send();
    },
  );
  r.delete(
    '/v1/admin/watchers/:id',
    {
      schema: {
        ...operation('admin', 'Revoke a watcher', adminAccess, "The watcher's tokens stop working, they match no rule, and their streams end."),
        params: deviceParams,
        response: { 204: empty('Revoked.'), ...errors(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      await admin(request);
      await deps.accounts.revokeWatcher(request.params.id);
      return reply.code(204).send();
    },
  );
}
