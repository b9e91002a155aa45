/**
 * The abuse limits for benchmarks: set so high that they never refuse, so
 * that the figures measure throughput, while the limit checks themselves
 * still run on every request and message and are part of what is measured.
 */
export const BENCH_LIMITS = {
  RATE_LIMIT_HTTP_ADDRESS: '1000000000/1000000000',
  RATE_LIMIT_HTTP_TOKEN: '1000000000/1000000000',
  RATE_LIMIT_MQTT_DEVICE: '1000000000/1000000000',
  RATE_LIMIT_MQTT_CONNECT: '1000000000/1000000000',
  HTTP_MAX_STREAMS_PER_CALLER: '10000',
} as const;

/**
 * Benchmarks run in plain text on loopback (TLS=off): the reads and fan-out
 * figures are compared with a bare node:http baseline (bench/bare-http.ts,
 * bench/fanout-bare.ts) and the ingest figures with bare mqtt.js clients,
 * all plain text; encrypting one side only would measure TLS, not the
 * service. The cost of TLS itself is not benchmarked here.
 */
export const BENCH_PLAIN_TEXT = { TLS: 'off' } as const;
