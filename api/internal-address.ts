import { BlockList, isIP, isIPv4, isIPv6 } from 'node:net';
import type { Network } from '../core/networks.js';

/**
 * Addresses a webhook must never reach (server-side request forgery: a
 * watcher making the service POST into the operator's own networks or to a
 * cloud metadata endpoint): `localhost` and `*.localhost` (RFC 6761 §6.3),
 * and for IPv4 "this network" 0/8, RFC 1918 private ranges, loopback
 * 127/8, CGNAT 100.64/10 (RFC 6598), link-local 169.254/16 (where cloud
 * metadata services answer), benchmarking 198.18/15 (RFC 2544), multicast
 * and the reserved 240/4 with broadcast; for IPv6 the unspecified and
 * loopback addresses, unique local fc00::/7 (RFC 4193), link-local
 * fe80::/10 and the deprecated site-local fec0::/10 (RFC 3879), multicast
 * ff00::/8, and IPv4-mapped (::ffff:0:0/96) or NAT64 (64:ff9b::/96, RFC
 * 6052) forms of any internal IPv4 address. Pure.
 */
export function isInternalAddress(host: string): boolean {
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIPv4(host)) {
    const [a = 0, b = 0] = host.split('.').map(Number);
    return (
      a === 0 ||
      a === 10 ||
      a === 127 ||
      (a === 100 && b >= 64 && b <= 127) ||
      (a === 169 && b === 254) ||
      (a === 172 && b >= 16 && b <= 31) ||
      (a === 192 && b === 168) ||
      (a === 198 && (b === 18 || b === 19)) ||
      a >= 224
    );
  }
  if (isIPv6(host)) {
    const h = host.toLowerCase();
    const embedded = /^(?:::ffff:|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/.exec(h);
    if (embedded?.[1]) return isInternalAddress(embedded[1]);
    // The WHATWG URL parser and some resolvers write the embedded IPv4 address in hex (::ffff:c0a8:101).
    const hex = /^(?:::ffff:|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(h);
    if (hex?.[1] && hex[2]) {
      const [hi, lo] = [parseInt(hex[1], 16), parseInt(hex[2], 16)];
      return isInternalAddress(`${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`);
    }
    // The first group of these ranges always has four digits (fc00-fdff, fe80-feff, ff00-ffff): `fc::1` is 0x00fc, a global address.
    return h === '::' || h === '::1' || /^f[cd][0-9a-f]{2}:/.test(h) || /^fe[89a-f][0-9a-f]:/.test(h) || /^ff[0-9a-f]{2}:/.test(h);
  }
  return false;
}

/**
 * Whether an address lies in any of the networks (WEBHOOK_REFUSE_NETWORKS).
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match the IPv4 networks, as
 * node:net's BlockList compares them. Not a name: names are resolved first.
 */
export function inNetworks(networks: readonly Network[]): (address: string) => boolean {
  if (networks.length === 0) return () => false;
  const list = new BlockList();
  for (const network of networks) list.addSubnet(network.address, network.prefix, network.family);
  return (address) => {
    const version = isIP(address);
    return version !== 0 && list.check(address, version === 4 ? 'ipv4' : 'ipv6');
  };
}
