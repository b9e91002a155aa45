import type { MqttClient } from 'mqtt';
import { randomUUID } from 'node:crypto';
import { KeyedQueue } from '../core/keyed-queue.js';
import type { TopicScheme } from './topics.js';

/**
 * Device credentials on an external Mosquitto (2.0) through its Dynamic
 * Security plugin, so that revoking a device (a lost phone) takes effect on
 * the broker at once: `disableClient` refuses its logins and disconnects it.
 * A password file cannot do that without a reload, and a reload leaves
 * connected clients connected.
 *
 * The plugin's API is JSON over MQTT: `{"commands":[{command, ...,
 * correlationData}]}` published to $CONTROL/dynamic-security/v1, answered
 * only to the sender on .../v1/response as `{"responses":[{command, error?,
 * data?, correlationData}]}`.
 *
 * Verified against Mosquitto 2.0.11 (Debian 12):
 * - ACL topics are matched literally: `%u` and `%c` are NOT substituted
 *   (`presence/%u/events` lets no device publish). So each device gets a
 *   role of its own, `{deviceRole}:{deviceId}`, granting its own topics,
 *   next to the shared `deviceRole` that denies devices everything else.
 * - A client created with a client id can only connect with that id (or
 *   with `use_username_as_clientid true`, which applies before the check),
 *   so one device cannot take over another's session.
 * - setClientPassword, disableClient and deleteClient disconnect the
 *   client's live connections.
 * - deleteRole while a client still has the role leaves that client a
 *   dangling role (getClient then lists garbage names, and the broker stops
 *   answering or crashes: eclipse-mosquitto/mosquitto#2660). So a device's client is
 *   always deleted before its role, and nothing here deletes a held role.
 * - addClientRole for a role the client already has answers "Internal
 *   error", so provisionDevice adds only the roles getClient lacks.
 * - createRole ignores ACL entries it does not understand, silently.
 *
 * Operator set-up (once):
 *
 *   # mosquitto.conf
 *   listener 8883
 *   allow_anonymous false
 *   plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
 *   plugin_opt_config_file /var/lib/mosquitto/dynamic-security.json
 *
 *   # before the first start: the file and a user allowed to administer it
 *   mosquitto_ctrl dynsec init /var/lib/mosquitto/dynamic-security.json admin
 *   chown mosquitto: /var/lib/mosquitto/dynamic-security.json
 *
 *   # then, with the broker running, as that admin: the commands of
 *   # brokerSetupCommands() (publish them as one {"commands":[...]} message
 *   # to $CONTROL/dynamic-security/v1, or with mosquitto_ctrl -u admin):
 *   mosquitto_ctrl -u admin dynsec createRole presence-device
 *   mosquitto_ctrl -u admin dynsec addRoleACL presence-device subscribePattern '#' deny
 *   mosquitto_ctrl -u admin dynsec addRoleACL presence-device publishClientReceive '#' deny
 *   mosquitto_ctrl -u admin dynsec createRole presence-service
 *   mosquitto_ctrl -u admin dynsec addRoleACL presence-service publishClientSend '$CONTROL/dynamic-security/v1' allow
 *   mosquitto_ctrl -u admin dynsec addRoleACL presence-service subscribeLiteral '$CONTROL/dynamic-security/v1/response' allow
 *   mosquitto_ctrl -u admin dynsec addRoleACL presence-service publishClientReceive '$CONTROL/dynamic-security/v1/response' allow
 *   # and, for each filter of ingestSubscriptions() ({root}/+/events,
 *   # {ownTracksRoot}/+/+, {ownTracksRoot}/+/+/event):
 *   mosquitto_ctrl -u admin dynsec addRoleACL presence-service subscribePattern 'presence/+/events' allow
 *   mosquitto_ctrl -u admin dynsec addRoleACL presence-service publishClientReceive 'presence/+/events' allow
 *   # (the zero-byte retained messages of MQTT_CLEAR_RETAINED)
 *   mosquitto_ctrl -u admin dynsec addRoleACL presence-service publishClientSend 'presence/+/events' allow
 *   mosquitto_ctrl -u admin dynsec createClient presence-service -p "$SERVICE_PASSWORD"
 *   mosquitto_ctrl -u admin dynsec addClientRole presence-service presence-service
 *
 * The service user then administers devices itself (MQTT_USERNAME). It gets
 * the dynsec topics and the device topics, not the `admin` role that init
 * creates, which may also read every topic. The dynsec topic is the whole
 * admin API, though: whoever holds these credentials can create clients
 * and roles, so they are as sensitive as the broker's admin password. Devices must not send to $CONTROL: the plugin never
 * lets that fall through to the default access, and no device role grants it.
 * Other topics the service writes (the scale-out sync topic) need their own
 * ACLs on the service role.
 */

export const DYNSEC_TOPIC = '$CONTROL/dynamic-security/v1';
export const DYNSEC_RESPONSE_TOPIC = `${DYNSEC_TOPIC}/response`;
export const DEVICE_ROLE = 'presence-device';
export const SERVICE_ROLE = 'presence-service';

/** One command of the plugin's API; the fields depend on `command`. */
export interface DynsecCommand {
  readonly command: string;
  readonly [field: string]: unknown;
}

export interface DynsecResponse {
  readonly command: string;
  readonly error?: string;
  readonly data?: unknown;
  readonly correlationData?: string;
}

type AclType = 'publishClientSend' | 'publishClientReceive' | 'subscribeLiteral' | 'subscribePattern' | 'unsubscribeLiteral' | 'unsubscribePattern';

interface Acl {
  readonly acltype: AclType;
  readonly topic: string;
  readonly allow: boolean;
}

// The error texts of Mosquitto 2.0.11 that idempotent calls accept.
const CLIENT_NOT_FOUND = 'Client not found';
const CLIENT_EXISTS = 'Client already exists';
const ROLE_NOT_FOUND = 'Role not found';
const ROLE_EXISTS = 'Role already exists';
const ACL_EXISTS = 'ACL with this topic already exists';

export interface DynsecOptions {
  /** Connected, connecting or reconnecting; owned by the caller. */
  readonly client: MqttClient;
  /** Where devices publish: their own role grants these topics. */
  readonly topics: TopicScheme;
  /** The shared role every device has (made by the operator's set-up). */
  readonly deviceRole?: string;
  /** How long a command may wait for its response (ms). */
  readonly timeoutMs?: number;
}

interface Pending {
  readonly command: string;
  readonly resolve: (response: DynsecResponse) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export class MosquittoDynsec {
  private readonly client: MqttClient;
  private readonly topics: TopicScheme;
  private readonly deviceRole: string;
  private readonly timeoutMs: number;
  private readonly pending = new Map<string, Pending>();
  /** Per device, its changes in order (see serially). */
  private readonly queues = new KeyedQueue();
  private ready: Promise<void> | undefined;
  private closed = false;

  constructor(options: DynsecOptions) {
    this.client = options.client;
    this.topics = options.topics;
    this.deviceRole = options.deviceRole ?? DEVICE_ROLE;
    this.timeoutMs = options.timeoutMs ?? 5000;
  }

  /** Subscribes to the response topic; resolves when subscribed. */
  start(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('dynamic-security: closed'));
    if (!this.ready) {
      // Listening first: the broker answers as soon as it has the command.
      this.client.on('message', this.onMessage);
      this.ready = this.subscribe();
    }
    return this.ready;
  }

  /**
   * Creates the device's broker client (username = client id = device id,
   * password = its token) with the shared device role and a role of its own
   * for its topics, enabled. Again for an existing device: the password is
   * set (which disconnects sessions that used the old one), missing roles
   * and ACLs are added and the client is enabled.
   */
  async provisionDevice(deviceId: string, password: string, provisioned?: () => Promise<void>): Promise<void> {
    checkDeviceId(deviceId);
    // `provisioned` runs in the device's queue too (recording the password's
    // expiry), so an expiry sweep queued after it sees the new expiry.
    await this.serially(deviceId, async () => {
      await this.provision(deviceId, password);
      await provisioned?.();
    });
  }

  /**
   * Disables the device's client if `claim()` (run in the device's queue,
   * after any provisioning queued before) says its password expired; true
   * if it did. The broker cannot read a token's expiry: without this a
   * device's token would log in to the broker for as long as no newer
   * token or revocation replaced it. `settle()` then tells whether a new
   * token was provisioned meanwhile by another process (this queue orders
   * this process's changes only), in which case the client is enabled
   * again. If the broker does not answer, the claim (a lease) ends by
   * itself and a later sweep tries again.
   */
  async expireDevice(deviceId: string, claim: () => Promise<boolean>, settle: () => Promise<'cleared' | 'renewed' | 'gone'>): Promise<boolean> {
    checkDeviceId(deviceId);
    return this.serially(deviceId, async () => {
      if (!(await claim())) return false;
      await this.command({ command: 'disableClient', username: deviceId }, [CLIENT_NOT_FOUND]);
      if ((await settle()) !== 'renewed') return true;
      await this.command({ command: 'enableClient', username: deviceId }, [CLIENT_NOT_FOUND]);
      return false;
    });
  }

  /**
   * One device's changes run one after another: a revocation or an erasure
   * arriving while a new token is being provisioned must not interleave
   * with its commands (an enableClient after the disableClient would undo
   * the revocation; a createClient between deleteClient and deleteRole
   * would delete a role still held, #2660).
   */
  private serially<T>(deviceId: string, change: () => Promise<T>): Promise<T> {
    return this.queues.run(deviceId, change);
  }

  private async provision(deviceId: string, password: string): Promise<void> {
    const ownRole = this.ownRole(deviceId);
    const acls = this.deviceAcls(deviceId);
    const role = await this.command({ command: 'createRole', rolename: ownRole, acls }, [ROLE_EXISTS]);
    if (role.error === ROLE_EXISTS) {
      for (const acl of acls) await this.command({ command: 'addRoleACL', rolename: ownRole, ...acl }, [ACL_EXISTS]);
    }
    const roles = [this.deviceRole, ownRole];
    const created = await this.command(
      { command: 'createClient', username: deviceId, clientid: deviceId, password, roles: roles.map((rolename) => ({ rolename })) },
      [CLIENT_EXISTS],
    );
    if (created.error !== CLIENT_EXISTS) return;
    const existing = clientInfo(await this.command({ command: 'getClient', username: deviceId }));
    await this.command({ command: 'setClientPassword', username: deviceId, password });
    if (existing.clientid !== deviceId) await this.command({ command: 'setClientId', username: deviceId, clientid: deviceId });
    for (const rolename of roles.filter((name) => !existing.roles.includes(name))) {
      await this.command({ command: 'addClientRole', username: deviceId, rolename });
    }
    await this.command({ command: 'enableClient', username: deviceId });
  }

  /** Refuses the device's further logins and disconnects it now. An unknown device is not an error. */
  async disableDevice(deviceId: string): Promise<void> {
    await this.serially(deviceId, () => this.command({ command: 'disableClient', username: deviceId }, [CLIENT_NOT_FOUND]));
  }

  /**
   * Removes the device's client (disconnecting it), then its own role: in
   * that order, as deleting a role still held corrupts the plugin (#2660).
   * An unknown device is not an error.
   */
  async deleteDevice(deviceId: string): Promise<void> {
    await this.serially(deviceId, async () => {
      await this.command({ command: 'deleteClient', username: deviceId }, [CLIENT_NOT_FOUND]);
      await this.command({ command: 'deleteRole', rolename: this.ownRole(deviceId) }, [ROLE_NOT_FOUND]);
    });
  }

  /**
   * Sends one command and resolves with its response. Rejects after the
   * timeout, or if the broker answers with an error not listed in `allowed`.
   */
  async command(command: DynsecCommand, allowed: readonly string[] = []): Promise<DynsecResponse> {
    if (this.closed) throw new Error(`dynamic-security ${command.command}: closed`);
    if (!this.ready) throw new Error(`dynamic-security ${command.command}: start() was not called`);
    await this.ready;
    if (this.closed) throw new Error(`dynamic-security ${command.command}: closed`);
    const correlationData = randomUUID();
    const response = await new Promise<DynsecResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(correlationData);
        reject(new Error(`dynamic-security ${command.command}: no response from the broker within ${this.timeoutMs} ms (is the plugin loaded, and may this user use ${DYNSEC_TOPIC}?)`));
      }, this.timeoutMs);
      this.pending.set(correlationData, { command: command.command, resolve, reject, timer });
      // QoS 1: mqtt.js keeps it across a reconnect; the timer bounds the wait.
      this.client.publish(DYNSEC_TOPIC, JSON.stringify({ commands: [{ ...command, correlationData }] }), { qos: 1 }, (error) => {
        if (error) this.settle(correlationData, (p) => p.reject(new Error(`dynamic-security ${command.command}: publish failed: ${error.message}`)));
      });
    });
    if (response.error !== undefined && !allowed.includes(response.error)) {
      throw new Error(`dynamic-security ${command.command} failed: ${response.error}`);
    }
    return response;
  }

  /** Rejects pending commands, stops listening and unsubscribes if connected. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const id of [...this.pending.keys()]) this.settle(id, (p) => p.reject(new Error(`dynamic-security ${p.command}: closed before the response`)));
    this.client.removeListener('message', this.onMessage);
    if (this.ready && this.client.connected) this.client.unsubscribe(DYNSEC_RESPONSE_TOPIC, () => undefined);
  }

  private async subscribe(): Promise<void> {
    try {
      const granted = await this.client.subscribeAsync(DYNSEC_RESPONSE_TOPIC, { qos: 1 });
      // MQTT 3.1.1 SUBACK 0x80: refused (mqtt.js may also reject instead).
      if (granted.some((grant) => grant.qos === 128)) throw new Error('refused');
    } catch (error) {
      throw new Error(`dynamic-security: cannot subscribe to ${DYNSEC_RESPONSE_TOPIC} (does this user have the ACLs for it?): ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  // An arrow function: one identity to add and remove on the shared client.
  private readonly onMessage = (topic: string, payload: Buffer): void => {
    if (topic !== DYNSEC_RESPONSE_TOPIC) return;
    for (const response of parseResponses(payload)) {
      if (response.correlationData !== undefined) this.settle(response.correlationData, (p) => p.resolve(response));
    }
  };

  private settle(correlationData: string, action: (pending: Pending) => void): void {
    const pending = this.pending.get(correlationData);
    if (!pending) return; // someone else's, or answered after its timeout
    this.pending.delete(correlationData);
    clearTimeout(pending.timer);
    action(pending);
  }

  private ownRole(deviceId: string): string {
    return `${this.deviceRole}:${deviceId}`;
  }

  /** The topics a device writes (ingest/topics.ts mayPublish), spelled out: no %u in 2.0.11. */
  private deviceAcls(deviceId: string): Acl[] {
    return [
      { acltype: 'publishClientSend', topic: `${this.topics.root}/${deviceId}/events`, allow: true },
      { acltype: 'publishClientSend', topic: `${this.topics.ownTracksRoot}/${deviceId}/#`, allow: true },
    ];
  }
}

export interface BrokerSetupOptions {
  readonly topics: TopicScheme;
  readonly serviceUsername: string;
  readonly servicePassword: string;
  readonly deviceRole?: string;
  readonly serviceRole?: string;
}

/**
 * The operator's one-time set-up, run as the admin user made by
 * `mosquitto_ctrl dynsec init`: the shared device role (devices read and
 * subscribe to nothing; what they may write comes from their own role),
 * and the service's role and user (dynsec commands, read device topics).
 * Not idempotent: a second run answers "Role already exists" and the like.
 */
export function brokerSetupCommands(options: BrokerSetupOptions): DynsecCommand[] {
  const deviceRole = options.deviceRole ?? DEVICE_ROLE;
  const serviceRole = options.serviceRole ?? SERVICE_ROLE;
  const { root, ownTracksRoot } = options.topics;
  const deviceTopics = [`${root}/+/events`, `${ownTracksRoot}/+/+`, `${ownTracksRoot}/+/+/event`];
  const deviceAcls: Acl[] = [
    { acltype: 'subscribePattern', topic: '#', allow: false },
    { acltype: 'publishClientReceive', topic: '#', allow: false },
  ];
  const serviceAcls: Acl[] = [
    { acltype: 'publishClientSend', topic: DYNSEC_TOPIC, allow: true },
    { acltype: 'subscribeLiteral', topic: DYNSEC_RESPONSE_TOPIC, allow: true },
    { acltype: 'publishClientReceive', topic: DYNSEC_RESPONSE_TOPIC, allow: true },
    ...deviceTopics.flatMap((topic): Acl[] => [
      { acltype: 'subscribePattern', topic, allow: true },
      { acltype: 'publishClientReceive', topic, allow: true },
      // The zero-byte retained messages that remove what devices retain (MQTT_CLEAR_RETAINED).
      { acltype: 'publishClientSend', topic, allow: true },
    ]),
  ];
  return [
    { command: 'createRole', rolename: deviceRole, acls: deviceAcls },
    { command: 'createRole', rolename: serviceRole, acls: serviceAcls },
    { command: 'createClient', username: options.serviceUsername, password: options.servicePassword, roles: [{ rolename: serviceRole }] },
  ];
}

/** Device ids become ACL topics: a wildcard or separator in one would widen them. */
function checkDeviceId(deviceId: string): void {
  if (deviceId === '' || /[/+#]/.test(deviceId)) throw new Error(`dynamic-security: device id ${JSON.stringify(deviceId)} cannot be a topic level`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The responses in a message; anything malformed is skipped (its command then times out). */
function parseResponses(payload: Buffer): DynsecResponse[] {
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch {
    return [];
  }
  if (!isRecord(body) || !Array.isArray(body.responses)) return [];
  return body.responses.filter(isRecord).flatMap((r): DynsecResponse[] => {
    if (typeof r.command !== 'string') return [];
    return [{
      command: r.command,
      data: r.data,
      ...(typeof r.error === 'string' ? { error: r.error } : {}),
      ...(typeof r.correlationData === 'string' ? { correlationData: r.correlationData } : {}),
    }];
  });
}

/** getClient's `data.client`: its client id and role names. */
function clientInfo(response: DynsecResponse): { clientid: string | undefined; roles: string[] } {
  const client = isRecord(response.data) && isRecord(response.data.client) ? response.data.client : {};
  const roles = Array.isArray(client.roles) ? client.roles.filter(isRecord).map((r) => r.rolename).filter((n): n is string => typeof n === 'string') : [];
  return { clientid: typeof client.clientid === 'string' ? client.clientid : undefined, roles };
}
