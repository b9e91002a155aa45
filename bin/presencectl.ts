#!/usr/bin/env node
import { readFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseConfig } from '../core/config.js';
import { signingKeyFromPem } from '../core/identity/signing-key.js';
import { issueToken } from '../core/identity/tokens.js';
import { readKeyPem } from './key-file.js';
import { tlsDir } from './tls-files.js';

/**
 * presencectl: the operator's command-line tool. It talks to the running
 * service's admin API (PGlite allows one process per data directory, so the
 * service owns every write) with a short-lived admin token it signs with the
 * service key: access to the key (DATA_DIR or SIGNING_KEY) is the operator's
 * credential. Output is one JSON document on stdout; errors are JSON on
 * stderr with exit code 1 (usage errors: 2).
 */
const USAGE = `usage: presencectl <command> [options]

commands:
  owner create <handle> [--name NAME]              create an owner
  device add <owner-handle> --class CLASS [--name NAME]
                                                   register a device (class: phone, watch, sensor, ...)
  watcher add --kind person|app --name NAME [--domain DOMAIN]
                                                   register a watcher (a person or a third-party app)
  token device <device-id> [--ttl SECONDS]         issue a device token (MQTT password)
  token watcher <watcher-id> [--ttl SECONDS] [--scopes S,...]
                                                   issue a watcher or app token (HTTP; default scope presence:read)
  token owner <handle> [--ttl SECONDS] [--scopes S,...]
                                                   issue an owner token (HTTP; default presence:read,presence:write,status:manage,consent:manage,settings:manage)
  token admin [--ttl SECONDS]                      sign an admin token locally (HTTP admin API; at most ADMIN_TOKEN_MAX_SECONDS)
  revoke-tokens owner <handle> | watcher <watcher-id> | admin <operator>
                                                   refuse every token of the owner, watcher or operator issued up to now
  revoke-token <token-id>                          refuse one HTTP API token by its id (an admin token's is in "actions")
  actions [--owner HANDLE] [--since ISO-TIME]      the operators' audit trail, newest first (one page)
  allow <owner-handle> <watcher-id> [--fields availability,activities,place,sphere,note,time-offset] [--location city|km|100m|exact]
                                                   add a rule letting the watcher see those fields
  block <owner-handle> <watcher-id> [--polite]     add a block (or polite-block) rule
  rules <owner-handle>                             list the owner's rules
  unrule <owner-handle> <rule-id>                  delete a rule

options:
  --operator NAME  who is acting, recorded in the audit trail as the admin token's subject
               (default: PRESENCECTL_OPERATOR, else presencectl:<login name>)
  --url URL    the service (default: PRESENCE_URL, else https://HOST:PORT from the environment,
               http:// with TLS=off); the local CA of DATA_DIR/tls/ca.pem is trusted when the
               service made its own certificate
Configuration comes from the same environment variables as the service.`;

class UsageError extends Error {}

function fail(error: unknown): never {
  if (error instanceof UsageError) {
    process.stderr.write(`${JSON.stringify({ error: { code: 'usage', message: error.message } })}\n${USAGE}\n`);
    process.exit(2);
  }
  const body = error instanceof ApiError ? { code: error.code, message: error.message, details: error.details } : { code: 'failed', message: error instanceof Error ? error.message : String(error) };
  process.stderr.write(`${JSON.stringify({ error: body })}\n`);
  process.exit(1);
}

class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: unknown,
  ) {
    super(message);
  }
}

async function main(argv: string[]): Promise<unknown> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      name: { type: 'string' },
      class: { type: 'string' },
      kind: { type: 'string' },
      ttl: { type: 'string' },
      fields: { type: 'string' },
      location: { type: 'string' },
      domain: { type: 'string' },
      scopes: { type: 'string' },
      polite: { type: 'boolean' },
      operator: { type: 'string' },
      owner: { type: 'string' },
      since: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(values.help ? 0 : 2);
  }

  const parsed = parseConfig(process.env);
  if (!parsed.ok) throw new Error(`invalid configuration: ${parsed.problems.join('; ')}`);
  const config = parsed.config;
  const key = await signingKeyFromPem(config.signingKeyPem ?? (await readKeyPem(config.dataDir).catch(() => {
    throw new Error(`no signing key in ${config.dataDir}: start the service once, or set SIGNING_KEY/DATA_DIR as the service has them`);
  })));
  const ttl = values.ttl === undefined ? undefined : Number(values.ttl);
  if (ttl !== undefined && (!Number.isInteger(ttl) || ttl <= 0)) throw new UsageError('--ttl must be a positive integer (seconds)');

  // The audit trail names the operator (api/admin-audit.ts): the token's subject.
  const operator = values.operator ?? process.env.PRESENCECTL_OPERATOR ?? `presencectl:${loginName()}`;
  if (!/^[A-Za-z0-9._@:-]{1,200}$/.test(operator)) throw new UsageError('--operator: 1-200 of A-Z a-z 0-9 . _ @ : -');
  // Five minutes per call, or less where ADMIN_TOKEN_MAX_SECONDS says so.
  const adminToken = async (ttlSeconds = Math.min(300, config.adminTokenMaxSeconds)) =>
    (await issueToken(key, config.tokenIssuer, { kind: 'admin', subject: operator, scopes: ['admin'], ttlSeconds }, Date.now())).token;
  const host = config.http.host === '0.0.0.0' || config.http.host === '::' ? '127.0.0.1' : config.http.host;
  const scheme = config.tls.mode === 'off' ? 'http' : 'https';
  const base = values.url ?? process.env.PRESENCE_URL ?? `${scheme}://${host.includes(':') ? `[${host}]` : host}:${config.http.port}`;
  // The service's own CA, when it made its certificate; an operator's
  // certificate is checked against the system's trust store (and NODE_EXTRA_CA_CERTS).
  const ca = base.startsWith('https:') && config.tls.mode === 'local' ? await readFile(join(tlsDir(config.dataDir), 'ca.pem'), 'utf8').catch(() => undefined) : undefined;

  const call = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    let response: { status: number; statusText: string; text: string };
    try {
      const headers: Record<string, string> = { authorization: `Bearer ${await adminToken()}`, accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const payload = body === undefined ? undefined : JSON.stringify(body);
      response = ca ? await requestWithCa(new URL(path, base), method, headers, payload, ca) : await viaFetch(new URL(path, base), method, headers, payload);
    } catch (error) {
      throw new Error(`service not reachable at ${base}: ${error instanceof Error ? error.message : String(error)}`);
    }
    const json: unknown = response.text ? JSON.parse(response.text) : {};
    if (response.status >= 400) {
      const err = json as { code?: string; message?: string; details?: unknown };
      throw new ApiError(err.code ?? `http_${response.status}`, err.message ?? response.statusText, err.details);
    }
    return json;
  };

  const [command, sub, arg1] = positionals;
  const need = (value: string | undefined, what: string): string => {
    if (!value) throw new UsageError(`missing ${what}`);
    return value;
  };

  switch (command) {
    case 'owner':
      if (sub !== 'create') throw new UsageError('owner: expected "create"');
      return call('POST', '/v1/admin/owners', { handle: need(arg1, '<handle>'), ...(values.name ? { displayName: values.name } : {}) });
    case 'device':
      if (sub !== 'add') throw new UsageError('device: expected "add"');
      return call('POST', '/v1/admin/devices', { owner: need(arg1, '<owner-handle>'), class: need(values.class, '--class'), ...(values.name ? { name: values.name } : {}) });
    case 'watcher':
      if (sub !== 'add') throw new UsageError('watcher: expected "add"');
      return call('POST', '/v1/admin/watchers', { kind: need(values.kind, '--kind'), name: need(values.name, '--name'), ...(values.domain ? { domain: values.domain } : {}) });
    case 'token':
      if (sub === 'admin') {
        const seconds = ttl ?? Math.min(3600, config.adminTokenMaxSeconds);
        if (seconds > config.adminTokenMaxSeconds) throw new UsageError(`--ttl: admin tokens live at most ADMIN_TOKEN_MAX_SECONDS (${config.adminTokenMaxSeconds})`);
        return { kind: 'admin', token: await adminToken(seconds), expiresAt: new Date(Date.now() + seconds * 1000).toISOString() };
      }
      if (sub !== 'device' && sub !== 'watcher' && sub !== 'owner') throw new UsageError('token: expected device, watcher, owner or admin');
      return call('POST', '/v1/admin/tokens', {
        kind: sub,
        subject: need(arg1, '<subject>'),
        ...(ttl ? { ttlSeconds: ttl } : {}),
        ...(values.scopes ? { scopes: values.scopes.split(',').map((s) => s.trim()) } : {}),
      });
    case 'revoke-tokens': {
      if (sub !== 'owner' && sub !== 'watcher' && sub !== 'admin') throw new UsageError('revoke-tokens: expected owner, watcher or admin');
      const subject = need(arg1, sub === 'owner' ? '<handle>' : sub === 'watcher' ? '<watcher-id>' : '<operator>');
      await call('POST', '/v1/admin/tokens/revoke', { kind: sub, subject });
      return { revoked: { kind: sub, subject } };
    }
    case 'revoke-token': {
      const tokenId = need(sub, '<token-id>');
      await call('POST', '/v1/admin/tokens/revoke', { tokenId });
      return { revoked: { tokenId } };
    }
    case 'actions': {
      const query = new URLSearchParams();
      if (values.owner) query.set('owner', values.owner);
      if (values.since) query.set('since', values.since);
      const q = query.toString();
      return call('GET', `/v1/admin/actions${q ? `?${q}` : ''}`);
    }
    case 'allow': {
      const fields = (values.fields ?? 'availability,activities').split(',').map((f) => f.trim());
      const known = ['availability', 'activities', 'place', 'sphere', 'note', 'time-offset'];
      const unknown = fields.filter((f) => !known.includes(f));
      if (unknown.length > 0) throw new UsageError(`--fields: unknown ${unknown.join(', ')} (known: ${known.join(', ')})`);
      const precisions = ['city', 'km', '100m', 'exact'];
      if (values.location !== undefined && !precisions.includes(values.location)) throw new UsageError(`--location: one of ${precisions.join(', ')}`);
      return call('POST', `/v1/admin/owners/${encodeURIComponent(need(sub, '<owner-handle>'))}/rules`, {
        conditions: { identity: { watchers: [need(arg1, '<watcher-id>')] } },
        actions: { subHandling: 'allow' },
        transformations: {
          availability: fields.includes('availability'),
          activities: fields.includes('activities'),
          place: fields.includes('place') ? 'zone' : 'none',
          sphere: fields.includes('sphere'),
          note: fields.includes('note'),
          timeOffset: fields.includes('time-offset'),
          ...(values.location ? { location: values.location } : {}),
        },
      });
    }
    case 'block':
      return call('POST', `/v1/admin/owners/${encodeURIComponent(need(sub, '<owner-handle>'))}/rules`, {
        conditions: { identity: { watchers: [need(arg1, '<watcher-id>')] } },
        actions: { subHandling: values.polite ? 'polite-block' : 'block' },
      });
    case 'rules':
      return call('GET', `/v1/admin/owners/${encodeURIComponent(need(sub, '<owner-handle>'))}/rules`);
    case 'unrule':
      await call('DELETE', `/v1/admin/owners/${encodeURIComponent(need(sub, '<owner-handle>'))}/rules/${encodeURIComponent(need(arg1, '<rule-id>'))}`);
      return { deleted: arg1 };
    default:
      throw new UsageError(`unknown command ${command ?? ''}`);
  }
}

async function viaFetch(url: URL, method: string, headers: Record<string, string>, body: string | undefined) {
  const response = await fetch(url, { method, headers, body: body ?? null });
  return { status: response.status, statusText: response.statusText, text: await response.text() };
}

/** fetch() cannot be given a CA without undici's own Agent; node:https can. */
function requestWithCa(url: URL, method: string, headers: Record<string, string>, body: string | undefined, ca: string) {
  return new Promise<{ status: number; statusText: string; text: string }>((resolve, reject) => {
    const req = httpsRequest(url, { method, headers, ca, timeout: 30_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

main(process.argv.slice(2)).then(
  (result) => process.stdout.write(`${JSON.stringify(result, null, 2)}\n`),
  (error: unknown) => {
    const code = (error as { code?: unknown } | null)?.code;
    fail(typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS') && error instanceof Error ? new UsageError(error.message) : error);
  },
);

/** The operator's login name, for the default --operator; `unknown` where the system has none. */
function loginName(): string {
  try {
    return userInfo().username.replace(/[^A-Za-z0-9._@-]/g, '_').slice(0, 100) || 'unknown';
  } catch {
    return 'unknown';
  }
}
