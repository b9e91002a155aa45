import { connectAsync } from 'mqtt';
import t from 'tap';
import { uniqueName, waitFor } from '../helpers/env.js';
import { startGroup, type GroupMember } from '../helpers/service-process.js';

/**
 * Privacy invariant 4 at an external broker, in a scale-out group: a
 * broker sends no retained messages to a shared subscription, so a device
 * that retains on its native topic was never cleared in a group. The
 * member that holds the delivery lease now subscribes to the plain filters
 * for a moment every MQTT_RETAINED_SWEEP_SECONDS, takes the retained
 * copies and clears them (ingest/external-subscriber.ts resendRetained).
 */
t.test('a group: a native topic retained by its device is cleared by the sweep of the member that holds the lease', async (t) => {
  const { members, brokerUrl, adminToken } = await startGroup(t, 2, { MQTT_RETAINED_SWEEP_SECONDS: '1' });
  const [{ call }] = members as [GroupMember, GroupMember];
  t.equal((await call('POST', '/v1/admin/owners', adminToken, { handle: 'rita' })).status, 201);
  const device = (await call('POST', '/v1/admin/devices', adminToken, { owner: 'rita', class: 'phone' })).body as { topic: string };
  const publisher = await connectAsync(brokerUrl, { clientId: uniqueName('dev'), clean: true });
  t.teardown(() => publisher.endAsync(true));
  await publisher.publishAsync(device.topic, JSON.stringify({ kind: 'call', at: new Date().toISOString(), state: 'in-call' }), { qos: 1, retain: true });

  /** Whether the broker still keeps a message for the topic: a subscriber's retained copy arrives before a marker published after the SUBACK. */
  const retained = async () => {
    const probe = await connectAsync(brokerUrl, { clientId: uniqueName('probe'), clean: true });
    try {
      let kept = false;
      const markerTopic = `${device.topic}/probe-marker`;
      const marker = new Promise<void>((resolve) => {
        probe.on('message', (topic, _payload, packet) => {
          if (topic === markerTopic) resolve();
          else if (packet.retain) kept = true;
        });
      });
      await probe.subscribeAsync([device.topic, markerTopic], { qos: 1 });
      await probe.publishAsync(markerTopic, 'marker', { qos: 1 });
      await marker;
      return kept;
    } finally {
      await probe.endAsync();
    }
  };
  await waitFor(async () => !(await retained()), 'the broker to keep nothing for the topic', 15_000);
  t.pass('cleared');
  const read = await call('GET', '/v1/presence/rita', (await call('POST', '/v1/admin/tokens', adminToken, { kind: 'owner', subject: 'rita' })).body.token as string);
  t.match(read.body, { availability: 'busy' }, 'and the event was applied (live, through the shared subscription)');
});
