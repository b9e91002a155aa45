/**
 * Pure helpers about the names the service listens on (no node:net here:
 * core/ stays free of I/O, see DESIGN.md).
 */

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** An IPv4 address in dotted-quad form, or an IPv6 address (RFC 4291 §2.2 text forms; brackets allowed). */
export function ipAddressOf(host: string): string | undefined {
  if (IPV4.test(host)) return host;
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  // A loose check is enough: the value is only used as a certificate name,
  // and a string with a colon cannot be a DNS name anyway.
  if (bare.includes(':') && /^[0-9A-Fa-f:.]+$/.test(bare)) return bare.toLowerCase();
  return undefined;
}

/** The "any address" forms: a listener on them has no name of its own. */
export function isWildcard(host: string): boolean {
  const ip = ipAddressOf(host);
  return ip === '0.0.0.0' || ip === '::' || ip === '0:0:0:0:0:0:0:0';
}

/**
 * Whether only this machine can reach a listener on `host`: 127.0.0.0/8
 * (RFC 1122 §3.2.1.3), ::1 (RFC 4291 §2.5.3) and its IPv4-mapped forms, or
 * the name localhost (RFC 6761 §6.3).
 */
export function isLoopback(host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true;
  const ip = ipAddressOf(host);
  if (ip === undefined) return false;
  if (ip.startsWith('127.')) return true;
  if (ip === '::1' || ip === '0:0:0:0:0:0:0:1') return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(ip);
  return mapped !== null && (mapped[1] ?? '').startsWith('127.');
}

/** A DNS name a certificate can carry (RFC 5280 §4.2.1.6 dNSName; no wildcards here). */
export function isDnsName(host: string): boolean {
  return host.length <= 253 && /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(host);
}

/**
 * The names a locally generated server certificate must cover: the
 * loopback names every local client uses, plus each listen address that is
 * a specific name or address (a wildcard listen address has none).
 */
export function localCertificateNames(listenHosts: readonly string[]): string[] {
  const names = ['localhost', '127.0.0.1', '::1'];
  for (const host of listenHosts) {
    if (isWildcard(host)) continue;
    const name = ipAddressOf(host) ?? (isDnsName(host) ? host.toLowerCase() : undefined);
    if (name !== undefined && !names.includes(name)) names.push(name);
  }
  return names;
}
