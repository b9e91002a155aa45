import { DURATION_BUCKETS, type Metrics } from '../core/metrics.js';

export const HTTP_DURATION = 'presence_http_request_duration_seconds';

/**
 * Request durations by method, route pattern (bounded: the routes, not the
 * URLs, which name owners) and status class; a stream's is its whole life.
 * One series function per combination, found by one string key: both ways
 * into the API (Fastify's onResponse hook and api/fast-read.ts) record here.
 */
export class RequestDurations {
  private readonly series = new Map<string, (seconds: number) => void>();

  constructor(private readonly metrics: Metrics) {
    metrics.histogram(HTTP_DURATION, 'HTTP requests: from the request to the end of its response, by route and status class', DURATION_BUCKETS);
  }

  observe(method: string, route: string, statusCode: number, seconds: number): void {
    this.seriesFor(method, route, statusCode)(seconds);
  }

  /** One combination's series, for a caller that always records the same few (api/fast-read.ts holds its two). */
  seriesFor(method: string, route: string, statusCode: number): (seconds: number) => void {
    const status = `${Math.floor(statusCode / 100)}xx`;
    const key = `${method} ${route} ${status}`;
    let observe = this.series.get(key);
    if (!observe) {
      observe = this.metrics.series(HTTP_DURATION, { method, route, status });
      this.series.set(key, observe);
    }
    return observe;
  }
}
