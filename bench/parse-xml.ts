import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseXml } from '../core/parse-xml.js';
import { parseXml as referenceParseXml } from '../tests/helpers/reference-parse-xml.js';
import { reportToSuite } from './suite-row.js';

/**
 * The XML reader (core/parse-xml.ts, one pass of its own) against the
 * reader it replaced (fast-xml-parser's validator and parser plus a walk
 * over their output, kept as tests/helpers/reference-parse-xml.ts), on the
 * same documents in the same run: microseconds per document, and the
 * ratio. Every inbound PIDF publication and pres-rules document is read by
 * it, so it is on the HTTP PUBLISH path (bench/publish.ts).
 *
 *   npm run build && node dist/bench/parse-xml.js      (about 10 s)
 *
 * Documents: the golden samples under tests/schemas/samples (PIDF with
 * RPID and the data model, PIDF with a geopriv location, a pres-rules
 * document), each parsed BENCH_PARSES (default 20000) times per round,
 * alternating the two readers, BENCH_ROUNDS (5) rounds; medians printed.
 */
const parses = Number(process.env.BENCH_PARSES ?? 20_000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const samples = fileURLToPath(new URL('../../tests/schemas/samples/', import.meta.url));
const documents = ['valid-2-rpid-dm.xml', 'valid-3-geopriv.xml', 'valid-4-pres-rules.xml'].map((name) => ({ name, text: readFileSync(`${samples}${name}`, 'utf8') }));

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

function microsPerParse(read: (text: string) => unknown, text: string): number {
  const started = performance.now();
  for (let i = 0; i < parses; i++) read(text);
  return ((performance.now() - started) * 1000) / parses;
}

const lines = [
  `XML reader: µs per document, ${parses} parses per round, ${rounds} rounds alternating the readers (medians).`,
  '',
  '| document | bytes | one-pass reader µs | fast-xml-parser reader µs | ratio (old / new) |',
  '|---|---|---|---|---|',
];
const ratios: number[] = [];
for (const { name, text } of documents) {
  // Both must read it the same way, or the comparison means nothing.
  if (JSON.stringify(parseXml(text)) !== JSON.stringify(referenceParseXml(text))) throw new Error(`${name}: the readers disagree`);
  const now: number[] = [];
  const before: number[] = [];
  for (let round = 0; round < rounds; round++) {
    now.push(microsPerParse(parseXml, text));
    before.push(microsPerParse(referenceParseXml, text));
  }
  const ratio = median(before.map((b, i) => b / (now[i] ?? NaN)));
  ratios.push(ratio);
  lines.push(`| ${name} | ${Buffer.byteLength(text)} | ${median(now).toFixed(1)} | ${median(before).toFixed(1)} | ${ratio.toFixed(2)} |`);
}
process.stdout.write(`${lines.join('\n')}\n`);

const pidf = documents[0];
if (pidf) {
  const now = median(Array.from({ length: 3 }, () => microsPerParse(parseXml, pidf.text)));
  const before = median(Array.from({ length: 3 }, () => microsPerParse(referenceParseXml, pidf.text)));
  reportToSuite({
    part: 'xml',
    figure: `µs to read a PIDF publication (${pidf.name})`,
    value: Number(now.toFixed(2)),
    unit: 'µs',
    baseline: { name: 'the fast-xml-parser reader it replaced', value: Number(before.toFixed(2)) },
    ratio: Number((now / before).toFixed(3)),
  });
}
