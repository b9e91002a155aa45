import { connectAsync } from 'mqtt';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Test } from 'tap';
import { brokerSetupCommands, MosquittoDynsec } from '../../ingest/mosquitto-dynsec.js';
import type { TopicScheme } from '../../ingest/topics.js';
import { tempDir } from './env.js';
import { startPrivateBroker, type PrivateBroker } from './mosquitto.js';

const run = promisify(execFile);
const PLUGIN = '/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so';

export interface DynsecBroker {
  readonly broker: PrivateBroker;
  /** The password of the `admin` user that `mosquitto_ctrl dynsec init` made. */
  readonly adminPassword: string;
  readonly serviceUsername: string;
  readonly servicePassword: string;
}

/**
 * A private Mosquitto with the Dynamic Security plugin, set up the way
 * ingest/mosquitto-dynsec.ts documents for operators: `mosquitto_ctrl
 * dynsec init` (an admin user), then brokerSetupCommands() run as that
 * admin (the device role, and the service's role and user). Stopped when
 * the test ends.
 */
export async function startDynsecBroker(t: Test, topics: TopicScheme, serviceUsername = 'presence-service'): Promise<DynsecBroker> {
  const adminPassword = randomUUID();
  const servicePassword = randomUUID();
  const initFile = join(await tempDir(t), 'dynsec.json');
  await run('mosquitto_ctrl', ['dynsec', 'init', initFile, 'admin', adminPassword]);
  const broker = await startPrivateBroker({
    config: ['allow_anonymous false', `plugin ${PLUGIN}`, 'plugin_opt_config_file {dir}/dynsec.json'],
    files: { 'dynsec.json': await readFile(initFile, 'utf8') },
  });
  t.teardown(() => broker.stop());
  const admin = await connectAsync(broker.url, { username: 'admin', password: adminPassword, reconnectPeriod: 0 });
  const dynsec = new MosquittoDynsec({ client: admin, topics });
  try {
    await dynsec.start();
    for (const command of brokerSetupCommands({ topics, serviceUsername, servicePassword })) await dynsec.command(command);
  } finally {
    dynsec.close();
    await admin.endAsync(true);
  }
  return { broker, adminPassword, serviceUsername, servicePassword };
}
