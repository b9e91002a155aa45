import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import type { Log } from '../core/log.js';
import { ingestSubscription } from './topics.js';

/**
 * Consumes device topics from an external broker (MQTT_URL). The broker is
 * trusted to have authenticated each device and to enforce that it writes
 * only to its own topic (see the Mosquitto ACL in the README); the service
 * still checks that the topic names an active device.
 */
export interface ExternalSubscriberOptions {
  readonly url: string;
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly clientId: string;
  readonly topicRoot: string;
  readonly log: Log;
  readonly onMessage: (topic: string, payload: Buffer) => void;
  readonly connectTimeoutMs?: number;
}

export interface ExternalSubscriber {
  readonly client: MqttClient;
  close(): Promise<void>;
}

export async function startExternalSubscriber(options: ExternalSubscriberOptions): Promise<ExternalSubscriber> {
  const clientOptions: IClientOptions = {
    clientId: options.clientId,
    clean: true,
    reconnectPeriod: 1000,
    connectTimeout: options.connectTimeoutMs ?? 10_000,
    protocolVersion: 4,
  };
  if (options.username) clientOptions.username = options.username;
  if (options.password) clientOptions.password = options.password;
  const client = connect(options.url, clientOptions);
  const topic = ingestSubscription(options.topicRoot);

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`MQTT broker ${redact(options.url)} did not answer in time`)), options.connectTimeoutMs ?? 10_000);
      const fail = (error: Error) => {
        clearTimeout(timer);
        reject(new Error(`cannot connect to MQTT broker ${redact(options.url)}: ${error.message}`));
      };
      client.once('error', fail);
      client.once('connect', () => {
        clearTimeout(timer);
        client.off('error', fail);
        resolve();
      });
    });
    const granted = await client.subscribeAsync(topic, { qos: 1 });
    if (granted.some((g) => g.qos === 128)) throw new Error(`MQTT broker refused the subscription to ${topic}`);
  } catch (error) {
    client.end(true);
    throw error;
  }

  // mqtt.js renews the subscription itself after a reconnect (resubscribe).
  client.on('connect', () => options.log.info({}, 'mqtt reconnected'));
  client.on('error', (error) => options.log.warn({ err: error.message }, 'mqtt client error'));
  client.on('message', (t, payload) => options.onMessage(t, payload));

  return {
    client,
    close: () => client.endAsync(),
  };
}

function redact(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.password = parsed.password ? '***' : '';
    return parsed.toString();
  } catch {
    return '(invalid url)';
  }
}
