import { isIP } from 'node:net';
import { z } from 'zod';
import type { TlsMaterial } from '../../core/tls/pem.js';

/**
 * Configuration of the SIP gateway (the service as an RFC 3903 presence
 * user agent). The caller validates it with {@link sipGatewayConfigSchema}.
 */

export interface SipServerAddress {
  readonly host: string;
  readonly port: number;
  readonly transport: 'udp' | 'tcp' | 'tls';
}

/** RFC 3261 §25.1 hostname, or an IPv4 / bracketed IPv6 literal. */
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
/** RFC 3261 §25.1 user part: unreserved, escaped and user-unreserved characters. */
const SIP_USER = /^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$/;

export function isHost(value: string): boolean {
  return HOSTNAME.test(value) || isIP(value) === 4 || (value.startsWith('[') && value.endsWith(']') && isIP(value.slice(1, -1)) === 6);
}

export function isSipUser(value: string): boolean {
  return SIP_USER.test(value);
}

/**
 * Parses a server URI such as `sip:127.0.0.1:5070;transport=tcp` or
 * `sips:presence.example.com` (RFC 3261 §19.1.1).
 *
 * - `sip:` defaults to UDP; `;transport=udp|tcp|tls` chooses.
 * - `sips:` means TLS (RFC 3261 §19.1, §26.2.2); `;transport=tcp` with it
 *   is TLS over TCP (RFC 5630, which also deprecates
 *   `;transport=tls`, still accepted); UDP cannot carry sips: and is refused.
 * - The port defaults to 5060, or 5061 for TLS (RFC 3261 §19.1.1, RFC 3263 §4.2).
 */
export function parseSipServerUri(uri: string): SipServerAddress | { readonly error: string } {
  const match = /^(sips?):(?:[^@;?]+@)?(\[[0-9A-Fa-f:.]+\]|[^:;?[\]]+)(?::([0-9]{1,5}))?((?:;[^;?]*)*)$/i.exec(uri.trim());
  if (!match) return { error: 'expected a SIP URI like sip:host:port;transport=tcp or sips:host:port' };
  const secure = (match[1] ?? '').toLowerCase() === 'sips';
  const rawHost = match[2] ?? '';
  if (!isHost(rawHost)) return { error: `invalid host ${JSON.stringify(rawHost)}` };
  let transport: 'udp' | 'tcp' | 'tls' = secure ? 'tls' : 'udp';
  for (const param of (match[4] ?? '').split(';').filter(Boolean)) {
    const [name, value = ''] = param.split('=');
    if ((name ?? '').toLowerCase() !== 'transport') continue;
    const t = value.toLowerCase();
    if (t !== 'udp' && t !== 'tcp' && t !== 'tls') return { error: `transport ${JSON.stringify(value)} is not supported (udp, tcp or tls)` };
    if (secure && t === 'udp') return { error: 'a sips: URI needs TLS over a reliable transport: transport=udp is not allowed (RFC 3261 §26.2.2)' };
    transport = secure ? 'tls' : t;
  }
  const port = match[3] === undefined ? (transport === 'tls' ? 5061 : 5060) : Number(match[3]);
  if (port < 1 || port > 65535) return { error: `port ${port} is out of range` };
  const host = rawHost.startsWith('[') ? rawHost.slice(1, -1) : rawHost;
  return { host, port, transport };
}

const sipUri = z
  .string()
  .regex(/^sip:[^\s<>"]+$/, 'expected a sip: URI')
  .refine((v) => !/[\r\n\0]/.test(v), 'no control characters');

export const sipGatewayConfigSchema = z
  .object({
    /** The presence server (event state compositor), e.g. `sip:127.0.0.1:5070;transport=tcp`. */
    server: z.string().transform((value, ctx): SipServerAddress => {
      const parsed = parseSipServerUri(value);
      if ('error' in parsed) {
        ctx.addIssue({ code: 'custom', message: parsed.error });
        return z.NEVER;
      }
      return parsed;
    }),
    /** TLS (sips: or ;transport=tls): CA and client certificate; the server's certificate is always verified. */
    tls: z.custom<TlsMaterial>((v) => typeof v === 'object' && v !== null).optional(),
    /** Local address to bind (and put in Via). */
    localHost: z
      .string()
      .refine((v) => isIP(v) !== 0, 'expected an IP address')
      .default('127.0.0.1'),
    /** Local UDP port; 0 picks an ephemeral one. */
    localPort: z.number().int().min(0).max(65535).default(0),
    /** Domain of the presentity URIs: `sip:{user}@{domain}`. */
    domain: z.string().refine(isHost, 'expected a host name or IP address'),
    /** Digest credentials (RFC 3261 §22), when the server challenges. */
    username: z.string().min(1).max(256).optional(),
    password: z.string().min(1).max(1024).optional(),
    /** Requested publication lifetime in seconds (RFC 3903 §4.1; the server may shorten it). */
    expires: z.number().int().min(60).max(86_400).default(3600),
    /** From URI; by default the presentity itself (a PUA publishing for the presentity). */
    fromUri: sipUri.optional(),
    /** Refresh by re-sending the document (see PublicationOptions.refreshWithBody; Kamailio with publ_cache=2 needs it). */
    refreshWithBody: z.boolean().default(false),
    userAgent: z
      .string()
      .min(1)
      .max(128)
      .regex(/^[\x20-\x7e]+$/, 'printable ASCII only')
      .default('presence-service'),
  })
  .refine((c) => (c.username === undefined) === (c.password === undefined), { message: 'username and password go together', path: ['password'] })
  .refine((c) => c.tls === undefined || c.server.transport === 'tls', { message: 'TLS settings need a sips: server or ;transport=tls', path: ['tls'] });

export type SipGatewayConfigInput = z.input<typeof sipGatewayConfigSchema>;
export type SipGatewayConfig = z.output<typeof sipGatewayConfigSchema>;
