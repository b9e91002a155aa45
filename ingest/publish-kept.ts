import type { IClientPublishOptions, MqttClient } from 'mqtt';

/**
 * A QoS 1 PUBLISH that is not lost to mqtt.js's reconnect. mqtt.js keeps a
 * QoS 1 message (and resends it) across a reconnect once it has taken it.
 * Not always: after a reconnect it first resends what it stored, one
 * acknowledgement at a time, and queues what is published meanwhile; if
 * that connection closes too, it drops the queue, with an error to each
 * callback (mqtt 5.16, _flushStoreProcessingQueue). A message dropped so
 * is published again, on the next tick (the queue is still being
 * emptied), and then stored for the next connection. Not when the client
 * is ending, nor on any other error (with MQTT 5 a broker refusing it),
 * which would only come back again.
 *
 * `onDrop`: told of each drop, and whether the message was published again.
 */
export function publishKept(
  client: MqttClient,
  topic: string,
  payload: string | Buffer,
  options: IClientPublishOptions,
  onDrop?: (requeued: boolean) => void,
): void {
  client.publish(topic, payload, options, (error) => {
    if (!error) return;
    const requeued = error.message === 'Connection closed' && !client.disconnecting && !client.disconnected;
    onDrop?.(requeued);
    if (requeued) process.nextTick(() => publishKept(client, topic, payload, options, onDrop));
  });
}
