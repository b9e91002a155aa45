import { importJWK, type CryptoKey, type JWK } from 'jose';
import { SIGNING_ALG, type SigningKey } from './tokens.js';

/**
 * The public keys the service's tokens may be signed with, by key id: the
 * current signing key and every earlier one not yet retired. Rotation is
 * changing the signing key and restarting: the new key signs from then on,
 * while tokens signed with the old one keep verifying until they expire,
 * because its public half stays in storage (table signing_keys) until an
 * operator retires it. A token with a key id not seen yet (another process
 * of a group already rotated) makes the set reload, at most once per
 * `minReloadMs` (a second), so forged key ids cannot turn into a load on
 * storage.
 */
export interface StoredPublicKey {
  readonly kid: string;
  readonly publicJwk: unknown;
}

export class KeySet {
  private keys = new Map<string, CryptoKey>();
  private jwks: readonly JWK[] = [];
  /** When a token with an unknown kid last made the set reload. */
  private lastMiss = -Infinity;
  private reloading: Promise<void> | undefined;
  private readonly retiredListeners: (() => void)[] = [];

  constructor(
    readonly current: SigningKey,
    private readonly currentJwk: JWK,
    private readonly load: () => Promise<readonly StoredPublicKey[]>,
    private readonly minReloadMs = 1000,
  ) {
    this.keys.set(current.kid, current.publicKey);
    this.jwks = [currentJwk];
  }

  /** The key for a token's `kid`, reloading once if it is new; undefined for an unknown or retired key. */
  async keyFor(kid: string | undefined, now: number): Promise<CryptoKey | undefined> {
    if (kid === undefined) return undefined;
    const known = this.keys.get(kid);
    if (known || now - this.lastMiss < this.minReloadMs) return known;
    this.lastMiss = now;
    await this.reload();
    return this.keys.get(kid);
  }

  /** Reads the stored keys again (a key retired elsewhere stops verifying here too). */
  reload(): Promise<void> {
    this.reloading ??= this.readStored().finally(() => {
      this.reloading = undefined;
    });
    return this.reloading;
  }

  /** Told when a key stops verifying (retired): caches of verified tokens must forget theirs. */
  onRetired(listener: () => void): void {
    this.retiredListeners.push(listener);
  }

  /** Every key tokens and webhooks may be signed with, as a JWK Set (RFC 7517 §5). */
  published(): readonly JWK[] {
    return this.jwks;
  }

  private async readStored(): Promise<void> {
    const keys = new Map<string, CryptoKey>([[this.current.kid, this.current.publicKey]]);
    const jwks: JWK[] = [this.currentJwk];
    for (const stored of await this.load()) {
      if (stored.kid === this.current.kid || !isEcJwk(stored.publicJwk)) continue;
      try {
        const key = await importJWK({ kty: 'EC', crv: 'P-256', x: stored.publicJwk.x, y: stored.publicJwk.y }, SIGNING_ALG);
        if (key instanceof Uint8Array) continue;
        keys.set(stored.kid, key);
        jwks.push({ kty: 'EC', crv: 'P-256', x: stored.publicJwk.x, y: stored.publicJwk.y, kid: stored.kid, alg: SIGNING_ALG, use: 'sig' });
      } catch {
        // A row that is not a P-256 public key verifies nothing (storage is a boundary too).
      }
    }
    const retired = [...this.keys.keys()].some((kid) => !keys.has(kid));
    this.keys = keys;
    this.jwks = jwks;
    if (retired) for (const listener of this.retiredListeners) listener();
  }
}

function isEcJwk(value: unknown): value is { x: string; y: string } {
  if (typeof value !== 'object' || value === null) return false;
  const jwk = value as Record<string, unknown>;
  return jwk.kty === 'EC' && jwk.crv === 'P-256' && typeof jwk.x === 'string' && typeof jwk.y === 'string';
}
