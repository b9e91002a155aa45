import { isIP } from 'node:net';
import { z } from 'zod';

/**
 * Configuration of the SIP gateway (the service as an RFC 3903 presence
 * user agent). The caller validates it with {@link sipGatewayConfigSchema}.
 */

export interface SipServerAddress {
  readonly host: string;
  readonly port: number;
  readonly transport: 'udp' | 'tcp';
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
 * Parses a server URI such as `sip:127.0.0.1:5070;transport=tcp` (RFC 3261
 * §19.1.1). The port defaults to 5060 (§19.1.2), the transport to UDP. `sips:`
 * is refused: there is no TLS transport here.
 */
export function parseSipServerUri(uri: string): SipServerAddress | { readonly error: string } {
  const match = /^sip:(?:[^@;?]+@)?(\[[0-9A-Fa-f:.]+\]|[^:;?[\]]+)(?::([0-9]{1,5}))?((?:;[^;?]*)*)$/i.exec(uri.trim());
  if (!match) return { error: 'expected a SIP URI like sip:host:port;transport=tcp (sips: is not supported)' };
  const rawHost = match[1] ?? '';
  if (!isHost(rawHost)) return { error: `invalid host ${JSON.stringify(rawHost)}` };
  const port = match[2] === undefined ? 5060 : Number(match[2]);
  if (port < 1 || port > 65535) return { error: `port ${port} is out of range` };
  let transport: 'udp' | 'tcp' = 'udp';
  for (const param of (match[3] ?? '').split(';').filter(Boolean)) {
    const [name, value = ''] = param.split('=');
    if ((name ?? '').toLowerCase() !== 'transport') continue;
    const t = value.toLowerCase();
    if (t !== 'udp' && t !== 'tcp') return { error: `transport ${JSON.stringify(value)} is not supported (udp or tcp)` };
    transport = t;
  }
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
  .refine((c) => (c.username === undefined) === (c.password === undefined), { message: 'username and password go together', path: ['password'] });

export type SipGatewayConfigInput = z.input<typeof sipGatewayConfigSchema>;
export type SipGatewayConfig = z.output<typeof sipGatewayConfigSchema>;
