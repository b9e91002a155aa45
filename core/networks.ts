import { z } from 'zod';

/** An IP network in CIDR notation (RFC 4632 §3.1; RFC 4291 §2.3 for IPv6). */
export interface Network {
  readonly address: string;
  readonly prefix: number;
  readonly family: 'ipv4' | 'ipv6';
}

const ipv4 = z.ipv4();
const ipv6 = z.ipv6();

/**
 * A configured list of networks: "203.0.113.0/24, 2001:db8::/32", comma
 * separated; an address without a prefix is that one address (/32, /128).
 * Each item must be a literal address with a prefix in range, so a typo is
 * an error at start, not a network that silently matches nothing.
 * Matching addresses against them is an edge's job (api/internal-address.ts
 * inNetworks, with node:net's BlockList).
 */
export const networkListSchema = z
  .string()
  .max(8192)
  .transform((text, ctx) => {
    const networks: Network[] = [];
    for (const raw of text.split(',')) {
      const item = raw.trim();
      if (item === '') continue;
      const [address = '', prefixText, extra] = item.split('/');
      const version = ipv4.safeParse(address).success ? 4 : ipv6.safeParse(address).success ? 6 : 0;
      const max = version === 4 ? 32 : 128;
      const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
      if (version === 0 || extra !== undefined || !(prefix >= 0 && prefix <= max)) {
        ctx.addIssue({ code: 'custom', message: `"${item}" is not a network: write an address with an optional prefix, e.g. 203.0.113.0/24 or 2001:db8::/32` });
        return z.NEVER;
      }
      networks.push({ address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' });
    }
    return networks;
  });
