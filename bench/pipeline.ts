import { PresenceHub } from '../core/presence-hub.js';
import { decodeMessage } from '../ingest/decode-message.js';

/**
 * The ingest pipeline without the network, to see where CPU goes: per event,
 * decoding (JSON + zod) and applying (signal merge + derivation), next to a
 * bare JSON.parse of the same payloads measured in the same run.
 *
 *   npm run build && node dist/bench/pipeline.js
 *
 * BENCH_EVENTS (default 200000), BENCH_OWNERS (1000).
 */
const events = Number(process.env.BENCH_EVENTS ?? 200_000);
const owners = Number(process.env.BENCH_OWNERS ?? 1000);
const base = Date.now() - events;
const payloads = Array.from({ length: events }, (_, i) =>
  Buffer.from(`{"kind":"user-input","at":"${new Date(base + i).toISOString()}","state":"${i % 2 ? 'active' : 'idle'}","lastInput":"${new Date(base).toISOString()}"}`),
);

function time(run: () => void): number {
  const start = performance.now();
  run();
  return ((performance.now() - start) * 1000) / events; // µs per event
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const bare: number[] = [];
const decode: number[] = [];
const apply: number[] = [];
for (let round = 0; round < 3; round++) {
  bare.push(time(() => payloads.forEach((p) => JSON.parse(p.toString('utf8')))));
  const decoded = payloads.map((p) => decodeMessage(p, { maxBytes: 16_384, maxClockSkewMs: 300_000 }, Date.now()));
  decode.push(time(() => payloads.forEach((p) => decodeMessage(p, { maxBytes: 16_384, maxClockSkewMs: 300_000 }, Date.now()))));
  const hub = new PresenceHub({ offlineAfterMs: 3_600_000 });
  apply.push(
    time(() =>
      decoded.forEach((d, i) => {
        if (d.ok) hub.apply(`o${i % owners}`, `d${i % owners}`, d.events, base + i);
      }),
    ),
  );
}
const b = median(bare);
process.stdout.write(
  [
    `Pipeline without the network: ${events} events over ${owners} owners, median of 3 rounds`,
    '',
    '| step | µs per event | ratio to bare JSON.parse |',
    '|---|---|---|',
    `| bare JSON.parse (baseline) | ${b.toFixed(2)} | 1.00 |`,
    `| decode (JSON + zod + skew check) | ${median(decode).toFixed(2)} | ${(median(decode) / b).toFixed(2)} |`,
    `| apply (signal merge + derivation) | ${median(apply).toFixed(2)} | ${(median(apply) / b).toFixed(2)} |`,
    '',
  ].join('\n'),
);
