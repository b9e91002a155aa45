import { setFlagsFromString } from 'node:v8';

/** node's own flag, if an operator wants V8's default back: `node --allocation-site-pretenuring dist/bin/start.js`. */
export const PRETENURING_FLAG = '--allocation-site-pretenuring';

/**
 * Turns off V8's allocation-site pretenuring for this process, unless node
 * was started with --allocation-site-pretenuring (the operator's choice
 * wins). Returns whether it was turned off.
 *
 * Why: V8 decides per allocation site, from how many of its objects
 * survived a scavenge, to allocate that site's objects straight in the old
 * generation. A scavenge that happens to run while a burst of requests is in
 * flight (start-up, a pause) can tip the sites of the per-request objects
 * (node:http's request and response, the view, the headers) into that mode,
 * and there they stay. Every request then allocates in the old generation;
 * the young objects those point at survive scavenges through them and are
 * promoted too; the old generation fills with garbage and is mark-compacted
 * every second or so. Measured with bench/reads.ts on the 2-core machines:
 * half the runs fell into that mode, at random (3-4 MB promoted per
 * scavenge instead of ~0, scavenges of 4-7 ms instead of 0.5, 6-8
 * mark-compacts in a run instead of 2), and served 18-26k reads/s instead
 * of 30-41k, at more CPU; with pretenuring off, every run stayed in the
 * fast mode (23 of 23). Ingest used a little less CPU per message at QoS 0
 * against the previous commit (8.0-8.3 against 9.0-9.8 µs, three runs
 * each); PUBLISH and the 100k-owner memory figure did not change
 * (docs/scaling.md, "Garbage collection").
 *
 * The service's long-lived data (owners, devices, rules, states) is built
 * once and then changes a little at a time, which the scavenger promotes
 * after two copies anyway; pretenuring buys it nothing measurable.
 *
 * Node documents flags set after start as possibly unpredictable. This one
 * takes effect when set here, before the service starts: that is what the
 * benchmark runs above show (6 runs with it set at run time, 9 with this
 * code); the test only shows that V8 knows the flag.
 */
export function disablePretenuring(execArgv: readonly string[] = process.execArgv, setFlags: (flags: string) => void = setFlagsFromString): boolean {
  // V8 takes its flags with dashes or underscores.
  if (execArgv.some((arg) => arg.replace(/_/g, '-') === PRETENURING_FLAG)) return false;
  setFlags('--no-allocation-site-pretenuring');
  return true;
}
