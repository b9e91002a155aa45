import t from 'tap';
import { inNetworks } from '../../api/internal-address.js';
import { networkListSchema } from '../../core/networks.js';

t.test('network lists: CIDRs and single addresses, IPv4 and IPv6; a typo is refused, not ignored', async (t) => {
  t.same(networkListSchema.parse(' 203.0.113.0/24 , 2001:db8::/32,198.51.100.7,,'), [
    { address: '203.0.113.0', prefix: 24, family: 'ipv4' },
    { address: '2001:db8::', prefix: 32, family: 'ipv6' },
    { address: '198.51.100.7', prefix: 32, family: 'ipv4' },
  ]);
  t.same(networkListSchema.parse(''), [], 'empty: none');
  for (const bad of ['203.0.113.0/33', '2001:db8::/129', '203.0.113/24', 'example.com', '203.0.113.0/24/1', '203.0.113.0/', '203.0.113.0/-1', '203.0.113.0/1e1', '10.0.0.0/8 192.168.0.0/16']) {
    const parsed = networkListSchema.safeParse(`198.51.100.0/24,${bad}`);
    t.notOk(parsed.success, `${bad} refused`);
    if (!parsed.success) t.match(parsed.error.issues[0]?.message, /is not a network/);
  }
});

t.test('inNetworks: addresses inside and next to the networks; IPv4-mapped IPv6 matches the IPv4 network', async (t) => {
  const refused = inNetworks(networkListSchema.parse('203.0.113.0/24,2001:db8:1::/48,198.51.100.7'));
  for (const inside of ['203.0.113.0', '203.0.113.255', '2001:db8:1::1', '2001:db8:1:ffff::1', '198.51.100.7', '::ffff:203.0.113.9']) t.ok(refused(inside), `${inside} inside`);
  for (const outside of ['203.0.112.255', '203.0.114.0', '2001:db8:2::1', '198.51.100.8', '::ffff:203.0.114.1', 'example.com', '']) t.notOk(refused(outside), `${outside} outside`);
  t.notOk(inNetworks([])('203.0.113.1'), 'no networks: nothing refused');
});
