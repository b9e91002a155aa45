/**
 * The device topic scheme: `{root}/{deviceId}/events`, where root is
 * MQTT_TOPIC_ROOT (default `presence`) and deviceId the id the service issued.
 * One topic per device makes the broker's ACL simple (a device writes to its
 * own topic only) and lets the service find the owner from the topic alone.
 */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function deviceTopic(root: string, deviceId: string): string {
  return `${root}/${deviceId}/events`;
}

export function ingestSubscription(root: string): string {
  return `${root}/+/events`;
}

/** The device id a topic names, or undefined if the topic is not a device topic. */
export function deviceIdFromTopic(root: string, topic: string): string | undefined {
  if (!topic.startsWith(`${root}/`) || !topic.endsWith('/events')) return undefined;
  const middle = topic.slice(root.length + 1, -'/events'.length);
  return UUID.test(middle) ? middle : undefined;
}
