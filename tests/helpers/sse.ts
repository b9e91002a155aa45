import { waitFor } from './env.js';

/** A minimal Server-Sent Events client over fetch, for tests. */
export interface SseEvent {
  readonly id: string | undefined;
  readonly event: string | undefined;
  readonly data: string;
}

export async function openStream(url: string, token: string, lastEventId?: string) {
  const controller = new AbortController();
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'text/event-stream' };
  if (lastEventId) headers['last-event-id'] = lastEventId;
  const response = await fetch(url, { headers, signal: controller.signal });
  const events: SseEvent[] = [];
  let ended = false;
  if (response.body) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    void (async () => {
      for (;;) {
        const chunk = await reader.read().catch(() => ({ done: true as const, value: undefined }));
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (block.startsWith(':')) continue; // a comment (heartbeat)
          const field = (name: string) => block.split('\n').find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2);
          events.push({ id: field('id'), event: field('event'), data: field('data') ?? '' });
        }
      }
      ended = true;
    })();
  }
  return {
    response,
    events,
    ended: () => ended,
    /** The n-th event (1-based), waiting for it. */
    nth: (n: number, timeoutMs = 10_000) => waitFor(() => events[n - 1], `event ${n}`, timeoutMs),
    close: () => controller.abort(),
  };
}
