import { createHash } from 'node:crypto';
import { renderPidf, PIDF_MEDIA_TYPE } from '../core/render-pidf.js';
import type { WatcherView } from '../policy/watcher-view.js';

/**
 * Rendered watcher views with their entity tags, reused until the view
 * changes. The key is the view itself, so two watchers granted the same view
 * share one rendering, and a polite-blocked watcher gets the very same bytes
 * and ETag as one who sees a real offline owner. Bounded; oldest out first.
 */
export const JSON_MEDIA_TYPE = 'application/json';
export const presenceMediaTypes = [PIDF_MEDIA_TYPE, JSON_MEDIA_TYPE] as const;
export type PresenceMediaType = (typeof presenceMediaTypes)[number];

export interface Representation {
  readonly body: string;
  readonly contentType: string;
  /** Strong entity tag (RFC 9110 §8.8.3) derived from the bytes alone. */
  readonly etag: string;
}

export class RepresentationCache {
  private readonly entries = new Map<string, Representation>();

  constructor(private readonly maxEntries = 50_000) {}

  /** `now` matters only to a PIDF with a location (its retention-expiry is dated by the day). */
  get(view: WatcherView, mediaType: PresenceMediaType, now = 0): Representation {
    const day = mediaType === PIDF_MEDIA_TYPE && view.location ? Math.floor(now / 86_400_000) : 0;
    const key = `${mediaType}\n${day}\n${JSON.stringify(view)}`;
    const hit = this.entries.get(key);
    if (hit) return hit;
    const body = mediaType === PIDF_MEDIA_TYPE ? renderPidf(view, now) : `${JSON.stringify(view)}\n`;
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
    const representation: Representation = {
      body,
      contentType: mediaType === PIDF_MEDIA_TYPE ? `${PIDF_MEDIA_TYPE}; charset=utf-8` : `${JSON_MEDIA_TYPE}; charset=utf-8`,
      etag,
    };
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(key, representation);
    return representation;
  }
}

/** RFC 9110 §13.1.2: If-None-Match uses weak comparison; `*` matches any. */
export function ifNoneMatchHits(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  const opaque = etag.replace(/^W\//, '');
  return header.split(',').some((candidate) => {
    const c = candidate.trim();
    return c === '*' || c.replace(/^W\//, '') === opaque;
  });
}
