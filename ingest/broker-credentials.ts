import type { Repository } from '../core/db/repository.js';
import type { Metrics } from '../core/metrics.js';
import type { MosquittoDynsec } from './mosquitto-dynsec.js';

export const BROKER_CREDENTIAL_FAILURES = 'presence_broker_credential_failures_total';
export const BROKER_CREDENTIALS_EXPIRED = 'presence_broker_credentials_expired_total';

type Action = 'provision' | 'disable' | 'delete' | 'expire';
const ACTIONS: readonly Action[] = ['provision', 'disable', 'delete', 'expire'];

/** Expired passwords read and disabled per page; a full page is followed by the next one in the same sweep. */
export const EXPIRY_PAGE = 100;
/** How long one process holds a claimed expiry before another may try it again (a crash, a broker that did not take it). */
export const EXPIRY_LEASE_MS = 60_000;

export interface DynsecCredentialDeps {
  readonly dynsec: Pick<MosquittoDynsec, 'provisionDevice' | 'deleteDevice' | 'disableDevice' | 'expireDevice'>;
  readonly store: Pick<Repository, 'setBrokerPasswordExpiry' | 'expiredBrokerPasswords' | 'claimExpiredBrokerPassword' | 'settleExpiredBrokerPassword'>;
  readonly metrics: Metrics;
  readonly log: { error(details: object, message: string): void };
  readonly clock: () => number;
}

export interface DynsecCredentials {
  /**
   * For api/accounts.ts (its BrokerCredentials; ingest does not import the
   * API): a device token is made the device's broker password, until
   * `expiresAt` (ms), before the API hands it out; a device revoked or
   * erased while being provisioned is withdrawn.
   */
  readonly credentials: {
    provision(deviceId: string, token: string, expiresAt: number): Promise<void>;
    withdraw(deviceId: string): Promise<void>;
  };
  /** Revoked devices: disabled at the broker, which ends their sessions. Failures are counted and logged. */
  disconnect(deviceIds: readonly string[]): void;
  /** Erased devices: their clients and roles removed for good. Failures are counted and logged. */
  forget(deviceIds: readonly string[]): void;
  /**
   * Disables at the broker every device whose broker password (its newest
   * token) has expired: the broker cannot read a token's expiry, so without
   * this an expired token would keep logging in, where the embedded broker
   * ends the connection when its token expires. Each expiry is claimed in
   * the database with a lease (EXPIRY_LEASE_MS), so one process of a group
   * disables it; a device renewed meanwhile is enabled again
   * (MosquittoDynsec.expireDevice). A device the broker did not take is
   * tried again when its lease ends, not in this sweep. Database errors are
   * the caller's (the sweep is repeated).
   */
  sweepExpired(): Promise<void>;
}

/**
 * Device broker credentials kept in Mosquitto's dynamic-security plugin
 * (MQTT_DEVICE_CREDENTIALS=mosquitto-dynsec): every change is counted by
 * action when the broker does not take it (presence_broker_credential_failures_total),
 * logged, and still the caller's to see where the caller waits for it.
 */
export function dynsecCredentials(deps: DynsecCredentialDeps): DynsecCredentials {
  const { dynsec, store, metrics, log, clock } = deps;
  metrics.counter(BROKER_CREDENTIAL_FAILURES, 'Device credential changes the broker did not take (dynamic security), by action');
  for (const action of ACTIONS) metrics.inc(BROKER_CREDENTIAL_FAILURES, { action }, 0);
  metrics.counter(BROKER_CREDENTIALS_EXPIRED, 'Device broker clients disabled because their password (token) expired (dynamic security)');

  const reported = <T>(action: Action, change: Promise<T>): Promise<T> =>
    change.catch((err: unknown) => {
      metrics.inc(BROKER_CREDENTIAL_FAILURES, { action });
      log.error({ err }, `broker credentials: ${action} failed`);
      throw err;
    });
  const ignored = () => undefined;

  return {
    credentials: {
      // The expiry is recorded in the device's queue at the broker client, so a sweep queued after it sees it.
      provision: (deviceId, token, expiresAt) => reported('provision', dynsec.provisionDevice(deviceId, token, () => store.setBrokerPasswordExpiry(deviceId, new Date(expiresAt)))),
      withdraw: (deviceId) => reported('delete', dynsec.deleteDevice(deviceId)),
    },
    disconnect(deviceIds) {
      for (const id of deviceIds) reported('disable', dynsec.disableDevice(id)).catch(ignored);
    },
    forget(deviceIds) {
      for (const id of deviceIds) reported('delete', dynsec.deleteDevice(id)).catch(ignored);
    },
    async sweepExpired() {
      for (;;) {
        const now = new Date(clock());
        const leaseUntil = new Date(now.getTime() + EXPIRY_LEASE_MS);
        const expired = await store.expiredBrokerPasswords(now, EXPIRY_PAGE);
        let failed = false;
        for (const id of expired) {
          const disabled = await reported(
            'expire',
            dynsec.expireDevice(
              id,
              () => store.claimExpiredBrokerPassword(id, now, leaseUntil),
              () => store.settleExpiredBrokerPassword(id, leaseUntil),
            ),
          ).catch(() => {
            failed = true;
            return false;
          });
          if (disabled) metrics.inc(BROKER_CREDENTIALS_EXPIRED);
        }
        // After a failure the next page would hold the same devices again (their claims are leased, or were never taken).
        if (failed || expired.length < EXPIRY_PAGE) return;
      }
    },
  };
}
