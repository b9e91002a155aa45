import { createHash } from 'node:crypto';
import { renderPidf, PIDF_MEDIA_TYPE } from '../core/render-pidf.js';
import type { WatcherView } from '../policy/watcher-view.js';
import { negotiate } from './negotiate.js';

/**
 * Rendered watcher views with their entity tags, reused until the view
 * changes. The key is the view itself, so two watchers granted the same view
 * share one rendering, and a polite-blocked watcher gets the very same bytes
 * and ETag as one who sees a real offline owner. Bounded by count and by
 * size; oldest out first.
 */
export const JSON_MEDIA_TYPE = 'application/json';
export const presenceMediaTypes = [PIDF_MEDIA_TYPE, JSON_MEDIA_TYPE] as const;
export type PresenceMediaType = (typeof presenceMediaTypes)[number];

/**
 * Content negotiation for a presence read, remembered per Accept header:
 * negotiate() is pure, clients send the same few headers again and again,
 * and parsing one costs more than the rest of a read's own work. Bounded
 * (cleared when full), so headers made up per request cost what they did
 * before, and no more memory.
 */
const negotiated = new Map<string, PresenceMediaType | null>();
const MAX_NEGOTIATED = 256;
export function presenceMediaType(accept: string | undefined): PresenceMediaType | undefined {
  if (accept === undefined) return negotiate(accept, presenceMediaTypes);
  const known = negotiated.get(accept);
  if (known !== undefined) return known ?? undefined;
  const chosen = negotiate(accept, presenceMediaTypes);
  if (negotiated.size >= MAX_NEGOTIATED) negotiated.clear();
  negotiated.set(accept, chosen ?? null);
  return chosen;
}

export interface Representation {
  readonly body: string;
  readonly contentType: string;
  /** Strong entity tag (RFC 9110 §8.8.3) derived from the bytes alone. */
  readonly etag: string;
}

/** What one view object has been rendered to, per media type (a PIDF with its day: see get). */
interface RenderedView {
  json?: Representation;
  pidf?: { readonly day: number; readonly representation: Representation };
}

export class RepresentationCache {
  private readonly entries = new Map<string, Representation>();
  /**
   * Views are memoized and frozen (api/watcher-views.ts), so most lookups
   * come with a view object seen before: found by identity, without
   * serializing the view into a key. Only frozen views are remembered (one
   * that could still change might no longer match its bytes). Equal views
   * that are different objects still share one entry through the key below.
   */
  private readonly byView = new WeakMap<WatcherView, RenderedView>();
  /** What `entries` holds, counted as the characters of its keys and bodies (about bytes: both are mostly ASCII). */
  private heldChars = 0;

  /**
   * Bounded by count and by size, oldest out first: a view with a long note
   * or a location renders to a few kilobytes and its key holds the view's
   * JSON too, so 50,000 entries alone could hold 100 MB or more.
   */
  constructor(
    private readonly maxEntries = 50_000,
    private readonly maxChars = 32 * 1024 * 1024,
  ) {}

  /** Entries held, and their size in characters (tests, metrics). */
  get size(): { readonly entries: number; readonly chars: number } {
    return { entries: this.entries.size, chars: this.heldChars };
  }

  /** `now` matters only to a PIDF with a location (its retention-expiry is dated by the day). */
  get(view: WatcherView, mediaType: PresenceMediaType, now = 0): Representation {
    const pidf = mediaType === PIDF_MEDIA_TYPE;
    const day = pidf && view.location ? Math.floor(now / 86_400_000) : 0;
    const rendered = this.byView.get(view);
    if (rendered) {
      if (!pidf && rendered.json) return rendered.json;
      if (pidf && rendered.pidf?.day === day) return rendered.pidf.representation;
    }
    const representation = this.lookup(view, mediaType, day, now);
    if (Object.isFrozen(view)) {
      const entry = rendered ?? {};
      if (pidf) entry.pidf = { day, representation };
      else entry.json = representation;
      if (!rendered) this.byView.set(view, entry);
    }
    return representation;
  }

  private lookup(view: WatcherView, mediaType: PresenceMediaType, day: number, now: number): Representation {
    const json = JSON.stringify(view);
    const key = `${mediaType}\n${day}\n${json}`;
    const hit = this.entries.get(key);
    if (hit) return hit;
    const body = mediaType === PIDF_MEDIA_TYPE ? renderPidf(view, now) : `${json}\n`;
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
    const representation: Representation = {
      body,
      contentType: mediaType === PIDF_MEDIA_TYPE ? `${PIDF_MEDIA_TYPE}; charset=utf-8` : `${JSON_MEDIA_TYPE}; charset=utf-8`,
      etag,
    };
    const chars = key.length + body.length;
    // One too large to keep is still answered, just not remembered.
    if (chars > this.maxChars) return representation;
    for (const [oldKey, old] of this.entries) {
      if (this.entries.size < this.maxEntries && this.heldChars + chars <= this.maxChars) break;
      this.entries.delete(oldKey);
      this.heldChars -= oldKey.length + old.body.length;
    }
    this.entries.set(key, representation);
    this.heldChars += chars;
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
