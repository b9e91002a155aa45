import fc from 'fast-check';
import t from 'tap';
import { AppError } from '../../core/errors.js';
import { parseXml, type XmlElement } from '../../core/parse-xml.js';
import { parseXml as referenceParseXml } from '../helpers/reference-parse-xml.js';
import { documentArb } from '../helpers/xml-documents.js';

/**
 * core/parse-xml.ts reads a document in one pass of its own. Before it,
 * the service read XML with fast-xml-parser (its validator, its parser, and
 * a walk over the parser's output, with extra checks where that library is
 * lenient); that reader is kept, unchanged, as tests/helpers/reference-parse-xml.ts,
 * and serves here as an oracle. Each generated document (the fuzz test's
 * corpus: mutations of real PIDF and pres-rules documents, entity tricks,
 * namespace games, random markup, ...) goes through both:
 *
 * - both accept it and return the same element tree, or
 * - both refuse it (AppError invalid_document; the messages may differ), or
 * - only the new reader refuses it, for a reason listed in STRICTER: a rule
 *   of XML 1.0 the old reader did not check, or
 * - only the new reader accepts it, for the one reason in LENIENT.
 *
 * Each such case is counted and shown; any other difference fails the
 * test until it is understood.
 */
const SEED = Number(process.env.DIFF_SEED ?? 0x0d1f_2026);
const DOCUMENTS = Number(process.env.DIFF_DOCUMENTS ?? 6_000);

/** Where the new reader is knowingly stricter than the old: the message it gives, and the rule. */
const STRICTER: readonly { readonly rule: string; readonly message: RegExp }[] = [
  { rule: 'XML 1.0 §2.5: no -- inside a comment', message: /'--' inside a comment/ },
  { rule: 'XML 1.0 §2.8: version, then encoding, then standalone (yes or no)', message: /the XML declaration must be <\?xml version/ },
  { rule: 'XML 1.0 §2.1: nothing but comments and white space after the root', message: /text outside the root element/ },
  { rule: 'names of Object.prototype properties, whatever the prefix', message: /^the name \S+ is not allowed/ },
  { rule: 'XML 1.0 §4.1: an entity name is not an Object.prototype property', message: /undefined entity &(constructor|toString|valueOf|hasOwnProperty|__proto__|isPrototypeOf|propertyIsEnumerable|toLocaleString|__\w+__);/ },
];

/**
 * Where the new reader knowingly accepts what the old refused: XML 1.0
 * fifth edition §2.3 lets names hold most non-ASCII characters (U+10000 to
 * U+EFFFF among them, so an emoji), which fast-xml-parser's name check did
 * not. Recognized by the old reader's message and a non-ASCII name in it.
 */
const LENIENT: readonly { readonly rule: string; readonly oldMessage: RegExp }[] = [
  { rule: 'XML 1.0 (fifth edition) §2.3: non-ASCII name characters', oldMessage: /'[^']*[^ -~][^']*' is an invalid name/ },
];

type Outcome = { readonly kind: 'value'; readonly tree: unknown } | { readonly kind: 'refused'; readonly message: string } | { readonly kind: 'crash'; readonly error: string };

const plain = (e: XmlElement): unknown => ({ ns: e.ns, name: e.name, attributes: { ...e.attributes }, text: e.text, children: e.children.map(plain) });

function outcome(read: (doc: string) => XmlElement, doc: string): Outcome {
  try {
    return { kind: 'value', tree: plain(read(doc)) };
  } catch (error) {
    if (error instanceof AppError && error.code === 'invalid_document') return { kind: 'refused', message: error.message };
    return { kind: 'crash', error: String(error) };
  }
}

t.test(`${DOCUMENTS} generated documents: the one-pass reader agrees with fast-xml-parser's, or is stricter for a listed reason (seed ${SEED})`, async (t) => {
  const documents = fc.sample(documentArb, { numRuns: DOCUMENTS, seed: SEED });
  const agreedValues: number[] = [];
  let agreedRefusals = 0;
  const stricter = new Map<string, { count: number; example: string }>();
  const lenient = new Map<string, { count: number; example: string }>();
  const problems: object[] = [];
  const show = (doc: string) => (doc.length > 400 ? `${doc.slice(0, 400)}…` : doc);

  for (const [i, { family, doc }] of documents.entries()) {
    const now = outcome(parseXml, doc);
    const before = outcome(referenceParseXml, doc);
    if (now.kind === 'crash' || before.kind === 'crash') {
      problems.push({ i, family, doc: show(doc), now, before });
    } else if (now.kind === 'value' && before.kind === 'value') {
      if (JSON.stringify(now.tree) === JSON.stringify(before.tree)) agreedValues.push(i);
      else problems.push({ i, family, doc: show(doc), difference: 'different trees', now: now.tree, before: before.tree });
    } else if (now.kind === 'refused' && before.kind === 'refused') {
      agreedRefusals += 1;
    } else if (now.kind === 'refused') {
      const reason = STRICTER.find((s) => s.message.test(now.message));
      if (!reason) problems.push({ i, family, doc: show(doc), difference: 'only the new reader refuses, for an unlisted reason', message: now.message });
      else {
        const seen = stricter.get(reason.rule) ?? { count: 0, example: show(doc) };
        seen.count += 1;
        stricter.set(reason.rule, seen);
      }
    } else {
      const refusedBefore = before.kind === 'refused' ? before.message : '';
      const reason = LENIENT.find((l) => l.oldMessage.test(refusedBefore));
      if (!reason) problems.push({ i, family, doc: show(doc), difference: 'only the new reader accepts', refusedBefore });
      else {
        const seen = lenient.get(reason.rule) ?? { count: 0, example: show(doc) };
        seen.count += 1;
        lenient.set(reason.rule, seen);
      }
    }
  }

  t.same(problems.slice(0, 5), [], `no differences but the listed ones (${problems.length} in all)`);
  t.ok(agreedValues.length > 1000, `${agreedValues.length} documents accepted by both, with the same tree`);
  t.ok(agreedRefusals > 1000, `${agreedRefusals} refused by both`);
  for (const [rule, { count, example }] of stricter) t.comment(`only the new reader refuses (${rule}): ${count}, e.g. ${JSON.stringify(example.slice(0, 160))}`);
  for (const [rule, { count, example }] of lenient) t.comment(`only the new reader accepts (${rule}): ${count}, e.g. ${JSON.stringify(example.slice(0, 160))}`);
});

t.test('the listed differences are real XML 1.0 rules: examples, read by both', async (t) => {
  const stricter: [string, string][] = [
    ['<a><!-- a -- b --></a>', "'--' inside a comment"],
    ['<?xml encoding="UTF-8" version="1.0"?><a/>', 'the XML declaration must be'],
    ['<?xml version="1.0" standalone="maybe"?><a/>', 'the XML declaration must be'],
    ['<a/>\ntrailing text', 'text outside the root element'],
    ['<a>&toString;</a>', 'undefined entity &toString;'],
    ['<a xmlns:p="urn:p"><p:valueOf/></a>', 'the name valueOf is not allowed'],
  ];
  for (const [doc, message] of stricter) {
    t.match(outcome(parseXml, doc), { kind: 'refused', message: new RegExp(message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) }, `new refuses: ${doc}`);
    t.equal(outcome(referenceParseXml, doc).kind, 'value', `old accepted: ${doc}`);
  }
  // The old reader turned &toString; into the text of Object.prototype.toString.
  t.match(outcome(referenceParseXml, '<a>&toString;</a>'), { kind: 'value', tree: { text: /native code/ } }, 'the old reader decoded an Object.prototype property as an entity');

  const name = '<a><on-the\u{1F600}-phone/></a>';
  t.match(outcome(parseXml, name), { kind: 'value', tree: { children: [{ name: 'on-the\u{1F600}-phone' }] } }, 'new accepts a fifth-edition name');
  t.match(outcome(referenceParseXml, name), { kind: 'refused', message: /is an invalid name/ }, 'old refused it');
});
