/**
 * Topic schemes. Native: `{MQTT_TOPIC_ROOT}/{deviceId}/events`. OwnTracks:
 * `{OWNTRACKS_TOPIC_ROOT}/{deviceId}/{name}` (and `/event` below it), which
 * is the app's own `owntracks/%u/%d` with the MQTT username set to the
 * device id. The device id in the topic makes the broker's ACL simple (a
 * device writes below its own id only) and names the owner.
 */
export interface TopicScheme {
  readonly root: string;
  readonly ownTracksRoot: string;
}

export type TopicFormat = 'native' | 'owntracks';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function deviceTopic(scheme: TopicScheme, deviceId: string): string {
  return `${scheme.root}/${deviceId}/events`;
}

/** What the service subscribes to (OwnTracks locations, lwt and transitions). */
export function ingestSubscriptions(scheme: TopicScheme): string[] {
  return [`${scheme.root}/+/events`, `${scheme.ownTracksRoot}/+/+`, `${scheme.ownTracksRoot}/+/+/event`];
}

function below(root: string, topic: string): string[] | undefined {
  return topic.startsWith(`${root}/`) ? topic.slice(root.length + 1).split('/') : undefined;
}

/** The device and payload format a topic stands for, or undefined. */
export function parseTopic(scheme: TopicScheme, topic: string): { deviceId: string; format: TopicFormat } | undefined {
  const native = below(scheme.root, topic);
  if (native && native.length === 2 && native[1] === 'events' && UUID.test(native[0] as string)) return { deviceId: native[0] as string, format: 'native' };
  const owntracks = below(scheme.ownTracksRoot, topic);
  if (owntracks && (owntracks.length === 2 || (owntracks.length === 3 && owntracks[2] === 'event')) && UUID.test(owntracks[0] as string) && owntracks[1]) {
    return { deviceId: owntracks[0] as string, format: 'owntracks' };
  }
  return undefined;
}

/**
 * Where a device may publish: its own native topic, or anything below its
 * own id in the OwnTracks tree (the app also publishes status, waypoints and
 * the like, which the service does not subscribe to).
 */
export function mayPublish(scheme: TopicScheme, deviceId: string, topic: string): boolean {
  if (topic === deviceTopic(scheme, deviceId)) return true;
  const owntracks = below(scheme.ownTracksRoot, topic);
  return owntracks !== undefined && owntracks[0] === deviceId && owntracks.length >= 2 && owntracks.every((level) => level.length > 0);
}
