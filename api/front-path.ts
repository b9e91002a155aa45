import type { IncomingMessage } from 'node:http';
import { HANDLE_PATTERN } from '../core/identifiers.js';

const PREFIX = '/v1/presence/';

/**
 * The owner handle of a `{method} /v1/presence/{handle}` request that a
 * path in front of Fastify (api/fast-read.ts, api/fast-publish.ts) may
 * answer, or undefined to hand the request to Fastify: only a plain handle
 * (anything percent-encoded, a query string or a further segment goes
 * through the router), and on HTTP/1.1 a Host header (RFC 9112 §3.2; the
 * route's onRequest hook gives the 400).
 */
export function frontHandle(request: IncomingMessage, method: string): string | undefined {
  if (request.method !== method) return undefined;
  const url = request.url;
  if (url === undefined || !url.startsWith(PREFIX)) return undefined;
  const handle = url.slice(PREFIX.length);
  if (!HANDLE_PATTERN.test(handle)) return undefined;
  if (!request.headers.host && request.httpVersionMajor === 1 && request.httpVersionMinor >= 1) return undefined;
  return handle;
}
