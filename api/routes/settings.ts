import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { handleSchema } from '../../core/identifiers.js';
import { ownerSettingsSchema, settingsInputSchema } from '../../core/owner-settings.js';
import type { Accounts } from '../accounts.js';
import type { Authenticator } from '../authenticate.js';
import { adminAccess, errors, json, operation, ownerAccess } from '../openapi.js';

/**
 * The owner's settings (zones, dwell times, quiet hours, ...) and their own
 * full presence with its trace. Owners use /v1/me/...; operators the admin
 * equivalents. A PUT replaces the settings whole and re-derives presence.
 */
const ownerViewSchema = z.object({
  entity: z.string(),
  availability: z.string(),
  activities: z.array(z.string()),
  place: z.object({ zone: z.string(), placeType: z.string().nullable(), sphere: z.string().nullable() }).nullable(),
  userInput: z.object({ state: z.string(), lastInput: z.string().nullable() }).nullable(),
  timeOffsetMinutes: z.number().nullable(),
  location: z.object({ latitude: z.number(), longitude: z.number(), accuracy: z.number() }).nullable(),
  note: z.string().nullable(),
  lastSeen: z.string().nullable(),
  devices: z.array(z.object({ id: z.string(), class: z.string().nullable(), lastSeen: z.string(), basic: z.enum(['open', 'closed']) })),
  trace: z.record(z.string(), z.object({ rule: z.string(), signals: z.array(z.string()) })),
});

export function settingsRoutes(app: FastifyInstance, deps: { auth: Authenticator; accounts: Accounts }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const handleParams = z.object({ handle: handleSchema });
  const self = async (request: FastifyRequest, scope: 'settings:manage' | 'presence:read') => {
    const principal = await deps.auth.require(request, ['owner'], scope);
    return principal.subject;
  };
  const byHandle = async (request: FastifyRequest, handle: string) => {
    await deps.auth.require(request, ['admin'], 'admin');
    return deps.accounts.ownerByHandle(handle);
  };

  const settings = (description: string) => json(ownerSettingsSchema, description);
  const ownerView = json(ownerViewSchema, "The owner's full presence, as derived, with the rule and signals behind each field.");
  const settingsHelp = 'A PUT replaces the settings whole (absent fields take their defaults) and re-derives presence.';

  r.get(
    '/v1/me/settings',
    { schema: { ...operation('settings', 'Read your settings', ownerAccess('settings:manage')), response: { 200: settings('The settings.'), ...errors(401, 'forbidden') } } },
    async (request) => deps.accounts.settingsOf(await self(request, 'settings:manage')),
  );
  r.put(
    '/v1/me/settings',
    {
      schema: {
        ...operation('settings', 'Replace your settings', ownerAccess('settings:manage'), settingsHelp),
        body: settingsInputSchema,
        response: { 200: settings('The settings now in force.'), ...errors('invalid_request', 401, 'forbidden', 413, 415) },
      },
    },
    async (request) => deps.accounts.updateSettings(await self(request, 'settings:manage'), request.body),
  );
  r.get(
    '/v1/me/presence',
    { schema: { ...operation('settings', 'Read your own full presence, with its trace', ownerAccess('presence:read')), response: { 200: ownerView, ...errors(401, 'forbidden') } } },
    async (request) => {
      const ownerId = await self(request, 'presence:read');
      const owner = deps.accounts.ownerById(ownerId);
      return deps.accounts.ownerView(owner.id, owner.handle);
    },
  );

  const admin = (summary: string, description?: string) => operation(['settings', 'admin'], summary, adminAccess, description);
  r.get(
    '/v1/admin/owners/:handle/settings',
    { schema: { ...admin("Read an owner's settings"), params: handleParams, response: { 200: settings('The settings.'), ...errors('invalid_request', 401, 'forbidden', 404) } } },
    async (request) => deps.accounts.settingsOf((await byHandle(request, request.params.handle)).id),
  );
  r.put(
    '/v1/admin/owners/:handle/settings',
    {
      schema: {
        ...admin("Replace an owner's settings", settingsHelp),
        params: handleParams,
        body: settingsInputSchema,
        response: { 200: settings('The settings now in force.'), ...errors('invalid_request', 401, 'forbidden', 404, 413, 415) },
      },
    },
    async (request) => deps.accounts.updateSettings((await byHandle(request, request.params.handle)).id, request.body),
  );
  r.get(
    '/v1/admin/owners/:handle/presence',
    { schema: { ...admin("Read an owner's full presence, with its trace"), params: handleParams, response: { 200: ownerView, ...errors('invalid_request', 401, 'forbidden', 404) } } },
    async (request) => {
      const owner = await byHandle(request, request.params.handle);
      return deps.accounts.ownerView(owner.id, owner.handle);
    },
  );
}
