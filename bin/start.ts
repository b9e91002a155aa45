#!/usr/bin/env node
import { parseConfig } from '../core/config.js';
import { startService } from './service.js';

/** `npm start`: read the environment once, start, and stop cleanly on SIGINT/SIGTERM. */
const parsed = parseConfig(process.env);
if (!parsed.ok) {
  process.stderr.write(`presence-service: invalid configuration:\n${parsed.problems.map((p) => `  - ${p}`).join('\n')}\n`);
  process.exit(2);
}

try {
  const service = await startService(parsed.config);
  const stop = (signal: string) => {
    service.log.info({ signal }, 'shutting down');
    service.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  // SIGHUP: read the TLS certificate files again (after a renewal), as daemons do.
  process.on('SIGHUP', () => {
    if (service.config.tls.mode === 'off') return;
    service.reloadTls().then(
      () => service.log.info({}, 'TLS certificate files read again (SIGHUP)'),
      (error: unknown) => service.log.error({ err: error instanceof Error ? error.message : String(error) }, 'TLS: certificate reload failed; the current one stays'),
    );
  });
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
} catch (error) {
  process.stderr.write(`presence-service: could not start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
}
