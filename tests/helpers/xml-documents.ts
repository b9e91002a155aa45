import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderPidf } from '../../core/render-pidf.js';
import { exportPresRules } from '../../policy/pres-rules-xml.js';
import { ruleSchema, type Rule } from '../../policy/rule.js';

/**
 * Generated hostile XML documents for the readers' fuzz test
 * (tests/unit/fuzz-xml.test.ts) and the parser's differential test
 * (tests/unit/parse-xml-differential.test.ts): mutations of valid PIDF and
 * pres-rules documents, grammar-built documents with hostile values, entity
 * tricks, deep nesting, attribute counts, CDATA / comment / PI edge cases,
 * XML declarations, namespace games and random markup.
 */

// --- base documents ---------------------------------------------------------------

const samplesDir = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../../tests/schemas/samples/' : '../schemas/samples/', import.meta.url));
const sample = (name: string) => readFileSync(`${samplesDir}${name}`, 'utf8');

const ENTITY = 'pres:alice@presence.local';
const W1 = '11111111-1111-4111-8111-111111111111';
const W3 = '33333333-3333-4333-8333-333333333333';
const G1 = '9a9a9a9a-0000-4000-8000-000000000001';
const rule = (input: Record<string, unknown>, id: string): Rule => ruleSchema.parse({ id, ...input });

const pidfDocs = [
  sample('valid-1-basic.xml'),
  sample('valid-2-rpid-dm.xml'),
  sample('valid-3-geopriv.xml'),
  sample('invalid-1-basic.xml'),
  sample('invalid-2-rpid.xml'),
  sample('typo-rpid.xml'),
  renderPidf({ entity: ENTITY, basic: 'open', availability: 'busy', activities: ['meeting', 'on-the-phone'], note: 'Back at 3 & "soon" <ok>' }),
  renderPidf({ entity: ENTITY, basic: 'closed' }),
  renderPidf({
    entity: ENTITY,
    basic: 'open',
    availability: 'away',
    activities: ['travel'],
    placeType: 'office',
    zone: 'Office',
    sphere: 'work',
    location: { latitude: 48.2, longitude: 16.37, radiusMeters: 100, retransmissionAllowed: false, retentionDays: 1 },
    userInput: { state: 'idle', idleThresholdSeconds: 600, lastInput: '2026-05-04T10:00:00Z' },
    timeOffsetMinutes: 120,
    devices: [{ id: 'd1', deviceId: 'urn:uuid:6f1c5c3e-4a1e-4c1b-9a8e-0c7d2f1d9a01', class: 'phone' }],
    services: [{ id: 's1', class: 'voice', basic: 'open' }],
  }),
  `<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="${ENTITY}"><tuple id="t"><status><basic>open</basic></status><note>Call me later</note></tuple><dm:person id="p"><rpid:activities><rpid:on-the-phone/><rpid:vacation/></rpid:activities><dm:note>at lunch</dm:note></dm:person></presence>`,
];

const rulesDocs = [
  sample('valid-4-pres-rules.xml'),
  exportPresRules([
    rule(
      {
        conditions: {
          identity: { watchers: [W1], groups: [G1], domains: ['example.com'], anyAuthenticated: true, except: { watchers: [W3], domains: ['bad.example'] } },
          sphere: 'work',
          validity: [{ from: '2025-01-01T00:00:00Z', until: '2025-12-31T23:59:59+01:00' }],
          recurring: [{ days: ['mon', 'tue'], from: '09:00', to: '17:00', timeZone: 'Europe/Berlin' }],
          untilArrivalAt: 'Office & "Lab" <1>',
        },
        actions: { subHandling: 'allow' },
        transformations: { availability: true, activities: true, place: 'zone', sphere: true, location: 'km', userInput: 'thresholds', devices: ['phone', 'pc'], services: 'all', note: true, timeOffset: true },
        arrivedAt: '2025-03-01T10:00:00Z',
      },
      '0b9c7c4e-7a51-4c1c-9d57-0b3c6f5e8a11',
    ),
    rule({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'block' } }, '00000000-0000-4000-8000-000000000001'),
  ]),
  exportPresRules([
    rule(
      {
        conditions: { identity: { anyAuthenticated: true, except: { watchers: [W3], domains: ['bad.example'] } }, validity: [{ from: '2025-06-01T08:00:00.250+02:00', until: '2025-06-30T20:00:00-05:00' }] },
        actions: { subHandling: 'confirm' },
        transformations: { availability: true, place: 'type', userInput: 'full', devices: 'all', services: ['phone'], location: 'exact' },
      },
      '00000000-0000-4000-8000-000000000002',
    ),
  ]),
  exportPresRules([]),
];

// --- mutations of valid documents --------------------------------------------------

/** Fragments that break or bend XML wherever they land. */
const TOKENS = [
  '<', '>', '&', '&amp;', '&lt;', '&gt;', '&quot;', '&apos;', '&amp', '&#0;', '&#x0;', '&#9;', '&#x7;', '&#65;', '&#x41;', '&#x0000041;', '&#xD800;', '&#xDFFF;', '&#xFFFE;', '&#xFFFF;',
  '&#x10FFFF;', '&#x110000;', '&#1114112;', '&#99999999;', '&#;', '&#x;', '&#-1;', '&#x-1;', '&#xG;', '&foo;', '&lol9;', '&ent;', '&%p;', '%p;', ']]>', '<![CDATA[x]]>', '<![CDATA[', '<![CDATA[]]]]><![CDATA[>]]>',
  '<!-- c -->', '<!-- -- -->', '<!--->', '<!---->', '<!--', '-->', '<?pi data?>', '<?xml version="1.0"?>', '<?xml-stylesheet href="x.xsl"?>', '<?XML version="1.0"?>', '<??>', '<?>', '<!DOCTYPE x>',
  '<!doctype x>', '<!ENTITY e "x">', '<!ELEMENT a ANY>', '<!ATTLIST a b CDATA "c">', '<![INCLUDE[x]]>', '"', "'", '=', ' xmlns="urn:x"', ' xmlns:cr="urn:x"', ' xmlns:xml="urn:x"', ' xmlns:xmlns="urn:x"', ' xmlns:p=""',
  ' xmlns=""', ' p:a="1"', ' a="1" a="2"', ' xml:lang="en"', ' mustUnderstand="true"', ' mustUnderstand="1"', ':', '::', '\u0000', '\u0007', '\u001b', '\uFFFE', '\uFFFF', '\uD800', '\uDC00', '\u00A0', '\u2028',
  '\u0085', '\r', '\r\n', '\t', '\uFEFF', '\u202E', '\u{1F600}', '<a>', '</a>', '<a/>', '</x:y>', '<__proto__/>', '<toString/>', '<constructor/>', ' constructor="x"', ' __proto__="x"', ' hasOwnProperty="x"',
  '<rpid:on-the-phone/>', '<rpid:note/>', '<rpid:__proto__/>', '<cr:identity><cr:many/></cr:identity>', '<provide-all-attributes/>', 'x'.repeat(300),
];

const NAMESPACES = [
  'urn:ietf:params:xml:ns:pidf',
  'urn:ietf:params:xml:ns:pidf:data-model',
  'urn:ietf:params:xml:ns:pidf:rpid',
  'urn:ietf:params:xml:ns:common-policy',
  'urn:ietf:params:xml:ns:pres-rules',
  'urn:x-presence:policy',
  'urn:ietf:params:xml:ns:geolocation-policy',
  'urn:ietf:params:xml:ns:location-profile',
];
const NAMESPACE_VARIANTS = ['', ' ', 'urn:x', 'URN:IETF:PARAMS:XML:NS:PIDF', 'urn:ietf:params:xml:ns:pidf ', 'http://www.w3.org/XML/1998/namespace', 'http://www.w3.org/2000/xmlns/', '&amp;', ...NAMESPACES];

const HOSTILE_VALUES = [
  '', ' ', 'true', 'false', '0', '1', '-1', '1e309', 'NaN', 'open', 'closed', 'allow', 'r-', 'r-0b9c7c4e-7a51-4c1c-9d57-0b3c6f5e8a11', 'r-0B9C7C4E-7A51-4C1C-9D57-0B3C6F5E8A11', `urn:uuid:${W1}`,
  `urn:uuid:${W1.toUpperCase()}`, 'urn:uuid:', 'sip:bob@example.com', 'example.com', '.', '..', 'a'.repeat(2000), 'geodetic-transformation', '10000', '1000.0', ' 100 ', 'Europe/Berlin', 'Mars/Olympus',
  '25:00', '09:00', 'mon funday', '2025-01-01T00:00:00Z', '2025-13-01T00:00:00Z', '0000-01-01T00:00:00+99:00', '__proto__', 'constructor', 'toString', '&#x7;', '&#xD800;', '\u0000', '&lt;script&gt;',
];

/** One string-level mutation of a document. */
const mutation: fc.Arbitrary<(doc: string) => string> = fc.oneof(
  fc.nat().map((n) => (doc: string) => doc.slice(0, n % (doc.length + 1))),
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 40 })).map(([at, len]) => (doc: string) => {
    const i = at % (doc.length + 1);
    return doc.slice(0, i) + doc.slice(i + len);
  }),
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 400 }), fc.integer({ min: 1, max: 20 })).map(([at, len, times]) => (doc: string) => {
    const i = at % (doc.length + 1);
    return doc.slice(0, i) + doc.slice(i, i + len).repeat(times) + doc.slice(i);
  }),
  fc.tuple(fc.nat(), fc.constantFrom(...TOKENS)).map(([at, token]) => (doc: string) => {
    const i = at % (doc.length + 1);
    return doc.slice(0, i) + token + doc.slice(i);
  }),
  fc.tuple(fc.nat(), fc.constantFrom(...TOKENS)).map(([at, token]) => (doc: string) => {
    // At a tag boundary, where markup tokens mean the most.
    const marks = [...doc.matchAll(/[<>]/g)].map((m) => m.index ?? 0);
    const i = marks.length ? (marks[at % marks.length] as number) + 1 : 0;
    return doc.slice(0, i) + token + doc.slice(i);
  }),
  fc.tuple(fc.nat(), fc.constantFrom(...NAMESPACE_VARIANTS)).map(([at, ns]) => (doc: string) => {
    const uris = [...doc.matchAll(/xmlns(?::[\w-]+)?="([^"]*)"/g)];
    const m = uris.length ? uris[at % uris.length] : undefined;
    if (!m || m.index === undefined) return doc;
    return doc.slice(0, m.index) + m[0].replace(/"[^"]*"$/, `"${ns}"`) + doc.slice(m.index + m[0].length);
  }),
  fc.tuple(fc.nat(), fc.constantFrom('zz', 'xml', 'xmlns', '', 'cr:cr', 'CR', '__proto__')).map(([at, prefix]) => (doc: string) => {
    const tags = [...doc.matchAll(/<\/?([\w-]+):/g)];
    const m = tags.length ? tags[at % tags.length] : undefined;
    if (!m || m.index === undefined || m[1] === undefined) return doc;
    const colon = m.index + m[0].length - 1;
    return doc.slice(0, colon - m[1].length) + prefix + doc.slice(colon);
  }),
  fc.tuple(fc.nat(), fc.constantFrom(...HOSTILE_VALUES)).map(([at, value]) => (doc: string) => {
    const attrs = [...doc.matchAll(/="[^"]*"/g)];
    const m = attrs.length ? attrs[at % attrs.length] : undefined;
    if (!m || m.index === undefined) return doc;
    return `${doc.slice(0, m.index)}="${value}"${doc.slice(m.index + m[0].length)}`;
  }),
  fc.tuple(fc.nat(), fc.constantFrom(...HOSTILE_VALUES, 'meeting', 'on-the-phone', 'block', 'polite-block', 'confirm', 'thresholds', 'full', 'bare', 'phone', 'all')).map(([at, value]) => (doc: string) => {
    const texts = [...doc.matchAll(/>([^<>]+)</g)];
    const m = texts.length ? texts[at % texts.length] : undefined;
    if (!m || m.index === undefined) return doc;
    return `${doc.slice(0, m.index)}>${value}<${doc.slice(m.index + m[0].length)}`;
  }),
  fc.nat().map((at) => (doc: string) => {
    // Duplicate one whole element (tag to its closing tag), as siblings.
    const opens = [...doc.matchAll(/<([\w:-]+)[^>]*>/g)].filter((m) => !m[0].endsWith('/>') && !m[0].startsWith('<?'));
    const m = opens.length ? opens[at % opens.length] : undefined;
    if (!m || m.index === undefined) return doc;
    const close = doc.indexOf(`</${m[1]}>`, m.index);
    if (close < 0) return doc;
    const end = close + `</${m[1]}>`.length;
    return doc.slice(0, end) + doc.slice(m.index, end) + doc.slice(end);
  }),
  fc.nat().map((at) => (doc: string) => {
    // Swap the case of one tag name.
    const tags = [...doc.matchAll(/<\/?([A-Za-z][\w:-]*)/g)];
    const m = tags.length ? tags[at % tags.length] : undefined;
    if (!m || m.index === undefined) return doc;
    return doc.slice(0, m.index) + m[0].toUpperCase() + doc.slice(m.index + m[0].length);
  }),
);

const mutated = (bases: readonly string[]) =>
  fc.tuple(fc.constantFrom(...bases), fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([doc, steps]) => steps.reduce((d, step) => step(d), doc));

// --- grammar-built documents in the PIDF and pres-rules vocabularies --------------------

const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');

interface Vocabulary {
  readonly root: string;
  readonly declarations: string;
  readonly prefixes: readonly string[];
  readonly names: readonly string[];
  readonly attributes: readonly string[];
  readonly values: readonly string[];
}

const PIDF_VOCABULARY: Vocabulary = {
  root: 'presence',
  declarations: ` xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:x="urn:x" entity="${ENTITY}"`,
  prefixes: ['', '', 'dm:', 'rpid:', 'x:', 'zz:'],
  names: ['tuple', 'status', 'basic', 'note', 'person', 'activities', 'on-the-phone', 'meeting', 'sleeping', 'vacation', 'busy', 'unknown', 'away', 'travel', 'device', 'deviceID', 'contact', 'timestamp', 'user-input', 'place-type', 'sphere', 'presence', 'a'],
  attributes: ['id', 'entity', 'mustUnderstand', 'xml:lang', 'priority', 'from', 'until', 'x:attr', 'zz:attr'],
  values: ['open', 'closed', 'true', '1', 't', 'p', ENTITY, 'pres:bob@presence.local', ...HOSTILE_VALUES],
};

const RULES_VOCABULARY: Vocabulary = {
  root: 'cr:ruleset',
  declarations:
    ' xmlns:cr="urn:ietf:params:xml:ns:common-policy" xmlns="urn:ietf:params:xml:ns:pres-rules" xmlns:pp="urn:x-presence:policy" xmlns:gp="urn:ietf:params:xml:ns:geolocation-policy" xmlns:lp="urn:ietf:params:xml:ns:location-profile"',
  prefixes: ['cr:', 'cr:', '', '', 'pp:', 'gp:', 'lp:', 'zz:'],
  names: [
    'rule', 'conditions', 'identity', 'one', 'many', 'except', 'sphere', 'validity', 'from', 'until', 'actions', 'transformations', 'sub-handling', 'provide-services', 'provide-persons', 'provide-devices',
    'all-services', 'all-persons', 'all-devices', 'class', 'occurrence-id', 'provide-activities', 'provide-place-type', 'provide-sphere', 'provide-note', 'provide-time-offset', 'provide-user-input',
    'provide-all-attributes', 'provide-unknown-attribute', 'provide-mood', 'provide-location', 'provide-geo', 'location-usage', 'provide-zone-name', 'group', 'recurring', 'until-arrival', 'service-uri',
    'ruleset',
  ],
  attributes: ['id', 'domain', 'value', 'profile', 'radius', 'days', 'from', 'to', 'time-zone', 'zone', 'arrived-at', 'retransmission-allowed', 'retention-days', 'name', 'ns', 'cr:id', 'zz:id'],
  values: ['allow', 'block', 'polite-block', 'confirm', 'home', 'work', 'r-1', 'thresholds', 'full', 'bare', 'phone', ...HOSTILE_VALUES],
};

function grammar(v: Vocabulary): fc.Arbitrary<string> {
  const attribute = fc.tuple(fc.constantFrom(...v.attributes), fc.constantFrom(...v.values), fc.boolean()).map(([name, value, raw]) => ` ${name}="${raw ? value.replace(/"/g, '') : xmlEscape(value)}"`);
  const text = fc.oneof(fc.constantFrom(...v.values).map((s) => xmlEscape(s)), fc.constantFrom('&#x7;', '&#xD800;', '&#65;', '&amp;', '<![CDATA[open]]>', '<!-- c -->', ' '));
  const { node } = fc.letrec<{ node: string }>((tie) => ({
    node: fc
      .tuple(
        fc.constantFrom(...v.prefixes),
        fc.constantFrom(...v.names),
        fc.array(attribute, { maxLength: 3 }),
        fc.oneof({ depthSize: 'small', withCrossShrink: true }, fc.constant<string[]>([]), fc.array(fc.oneof(text, tie('node')), { maxLength: 4 })),
      )
      .map(([prefix, name, attrs, children]) => (children.length === 0 ? `<${prefix}${name}${attrs.join('')}/>` : `<${prefix}${name}${attrs.join('')}>${children.join('')}</${prefix}${name}>`)),
  }));
  return fc.array(node, { maxLength: 5 }).map((children) => `<?xml version="1.0" encoding="UTF-8"?>\n<${v.root}${v.declarations}>${children.join('')}</${v.root}>`);
}

// --- attacks -----------------------------------------------------------------------------

const pidfWith = (inner: string, before = '') =>
  `<?xml version="1.0" encoding="UTF-8"?>${before}<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="${ENTITY}"><tuple id="t"><status><basic>open</basic></status></tuple>${inner}</presence>`;
const rulesWith = (inner: string, before = '') =>
  `<?xml version="1.0" encoding="UTF-8"?>${before}<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" xmlns="urn:ietf:params:xml:ns:pres-rules"><cr:rule id="r-1"><cr:conditions><cr:identity><cr:many/></cr:identity></cr:conditions><cr:actions><sub-handling>allow</sub-handling></cr:actions><cr:transformations>${inner}</cr:transformations></cr:rule></cr:ruleset>`;
const wrap = fc.constantFrom(
  (inner: string, before?: string) => pidfWith(inner, before),
  (inner: string, before?: string) => rulesWith(inner, before),
  (inner: string, before = '') => `${before}<a>${inner}</a>`,
);

const laughs = (levels: number, fanout: number) =>
  `<!DOCTYPE lolz [<!ENTITY lol0 "lol">${Array.from({ length: levels }, (_, i) => `<!ENTITY lol${i + 1} "${`&lol${i};`.repeat(fanout)}">`).join('')}]>`;

const entityTricks: fc.Arbitrary<string> = fc.oneof(
  fc.tuple(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 2, max: 12 }), wrap).map(([levels, fanout, w]) => w(`<note>&lol${levels};</note>`, laughs(levels, fanout))),
  fc.tuple(fc.constantFrom('file:///etc/passwd', 'http://127.0.0.1:1/evil', 'https://example.com/x.dtd', 'expect://id', 'php://filter/resource=/etc/passwd', '/dev/random', 'jar:file:///x!/y'), fc.constantFrom('SYSTEM', 'PUBLIC "-//X//EN"'), wrap).map(
    ([url, kind, w]) => w('<note>&xxe;</note>', `<!DOCTYPE p [<!ENTITY xxe ${kind} "${url}">]>`),
  ),
  fc.tuple(fc.constantFrom('http://127.0.0.1:1/evil.dtd', 'file:///etc/passwd'), wrap).map(([url, w]) => w('', `<!DOCTYPE p [<!ENTITY % p SYSTEM "${url}"> %p;]>`)),
  fc.tuple(fc.constantFrom('<!DOCTYPE x>', '<!doctype x>', '<!DocType x>', '<! DOCTYPE x>', '<!DOCTYPE\nx>', '<!DOCTYPE x SYSTEM "file:///etc/passwd">', '<!DOCTYPE x PUBLIC "a" "b">', '<!DOCTYPE x [ ]>', '<!DOCTYPE>', '<!>', '<!X>', '<!-- <!DOCTYPE x> -->'), fc.boolean(), wrap).map(([dt, after, w]) =>
    after ? `${w('')}${dt}` : w('', dt),
  ),
  fc.tuple(fc.constantFrom('<![CDATA[<!DOCTYPE x [<!ENTITY e "x">]>]]>', '&#60;!DOCTYPE x&#62;', '&lt;!ENTITY e "x"&gt;', '<!ENTITY e "x">', '<!ELEMENT e ANY>', '<!NOTATION n SYSTEM "x">'), wrap).map(([s, w]) => w(`<note>${s}</note>`)),
  // Character references, in range and out of it, in text and in attributes, with and without the semicolon.
  fc.tuple(
    fc.oneof(fc.integer({ min: 0, max: 0x11_0010 }), fc.constantFrom(0, 9, 10, 13, 31, 0xd7ff, 0xd800, 0xdfff, 0xe000, 0xfffd, 0xfffe, 0xffff, 0x10000, 0x10ffff, 0x110000, 2 ** 31, 2 ** 53)),
    fc.constantFrom('dec', 'hex', 'HEX', 'zeros', 'nosemi'),
    fc.boolean(),
    wrap,
  ).map(([code, form, inAttribute, w]) => {
    const ref = form === 'dec' ? `&#${code};` : form === 'hex' ? `&#x${code.toString(16)};` : form === 'HEX' ? `&#X${code.toString(16).toUpperCase()};` : form === 'zeros' ? `&#x0000000${code.toString(16)};` : `&#${code}`;
    return inAttribute ? w(`<x:e xmlns:x="urn:x" a="${ref}"/>`) : w(`<note>${ref}</note>`);
  }),
  fc.tuple(fc.string({ minLength: 1, maxLength: 12 }), wrap).map(([name, w]) => w(`<note>&${name};</note>`)),
);

const deepNesting: fc.Arbitrary<string> = fc.oneof(
  fc.tuple(fc.integer({ min: 1, max: 400 }), fc.constantFrom('a', 'x:a', 'rpid:activities', 'cr:identity', 'dm:person'), fc.boolean(), wrap).map(([depth, tag, declare, w]) => {
    const open = `<${tag}${declare && tag.startsWith('x:') ? ' xmlns:x="urn:x"' : ''}>`;
    return w(`${open.repeat(depth)}text${`</${tag}>`.repeat(depth)}`);
  }),
  fc.integer({ min: 1, max: 6000 }).map((depth) => `${'<a>'.repeat(depth)}${'</a>'.repeat(depth)}`),
  fc.integer({ min: 1, max: 6000 }).map((depth) => `${'<a>'.repeat(depth)}`),
  fc.integer({ min: 30, max: 40 }).map((depth) => `${'<a xmlns:p="urn:p">'.repeat(depth)}<p:b/>${'</a>'.repeat(depth)}`),
  fc.integer({ min: 4990, max: 5010 }).map((n) => `<a>${'<b/>'.repeat(n)}</a>`),
  fc.integer({ min: 1, max: 3000 }).map((n) => pidfWith(`<dm:person id="p"><rpid:activities>${'<rpid:meeting/>'.repeat(n)}</rpid:activities></dm:person>`)),
);

const manyAttributes: fc.Arbitrary<string> = fc.oneof(
  fc.tuple(fc.integer({ min: 10, max: 4000 }), wrap).map(([n, w]) => w(`<x:e xmlns:x="urn:x"${Array.from({ length: n }, (_, i) => ` a${i}="v"`).join('')}/>`)),
  fc.tuple(fc.integer({ min: 10, max: 2000 }), wrap).map(([n, w]) => w(`<x:e xmlns:x="urn:x"${Array.from({ length: n }, (_, i) => ` xmlns:p${i}="urn:p${i}"`).join('')}/>`)),
  fc.tuple(fc.integer({ min: 2, max: 500 }), wrap).map(([n, w]) => w(`<x:e xmlns:x="urn:x"${Array.from({ length: n }, (_, i) => ` xmlns:p${i}="urn:same" p${i}:a="v"`).join('')}/>`)),
  fc.tuple(fc.integer({ min: 2, max: 2000 }), wrap).map(([n, w]) => w(`<x:e xmlns:x="urn:x"${' a="v"'.repeat(n)}/>`)),
  fc.tuple(fc.integer({ min: 1, max: 60_000 }), wrap).map(([n, w]) => w(`<x:e xmlns:x="urn:x" a="${'v'.repeat(n)}"/>`)),
  fc.tuple(fc.integer({ min: 60_000, max: 70_000 }), wrap).map(([n, w]) => w(`<note>${'é'.repeat(Math.floor(n / 2))}</note>`)),
  fc.integer({ min: 1, max: 2000 }).map((n) => `<?xml version="1.0"${' standalone="yes"'.repeat(n)}?><a/>`),
);

const cdataCommentPi: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom(
      '<![CDATA[]]>',
      '<![CDATA[]]]]><![CDATA[>]]>',
      '<![CDATA[<![CDATA[x]]>]]>',
      '<![CDATA[x',
      '<![cdata[x]]>',
      '<![CDATA [x]]>',
      '<![CDATA[&amp;&#0;&e;]]>',
      '<![CDATA[\u0000]]>',
      '<![CDATA[open]]>',
      '<!---->',
      '<!--->',
      '<!-- - -->',
      '<!-- -- -->',
      '<!-- --->',
      '<!--',
      '<!-- <a> -->',
      '<!-- <!DOCTYPE x> -->',
      '<?pi?>',
      '<?pi x="1"?>',
      '<?xml?>',
      '<?xml version="1.0"?>',
      '<?xml version="1.1"?>',
      '<?xml encoding="UTF-16"?>',
      '<?XmL version="1.0"?>',
      '<? ?>',
      '<?>',
      '<?xml-stylesheet type="text/xsl" href="file:///etc/passwd"?>',
      '<?php system("id"); ?>',
      '<?pi ?> ?>',
      ']]>',
    ),
    fc.constantFrom('inside', 'before', 'after', 'text'),
    wrap,
  )
  .map(([snippet, where, w]) => {
    if (where === 'inside') return w(snippet);
    if (where === 'before') return w('', snippet);
    if (where === 'after') return `${w('')}${snippet}`;
    return w(`<note>a${snippet}b</note>`);
  });

const declarations: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom(
      '<?xml version="1.0" encoding="UTF-8"?>',
      '<?xml version="1.0" encoding="utf-8" standalone="no"?>',
      '<?xml version="1.0" encoding="ISO-8859-1"?>',
      '<?xml version="1.0" encoding="UTF-16"?>',
      '<?xml version="2.0"?>',
      '<?xml encoding="UTF-8" version="1.0"?>',
      '<?xml version="1.0" standalone="maybe"?>',
      '<?xml version="1.0" foo="bar"?>',
      '<?xml version=1.0?>',
      ' <?xml version="1.0"?>',
      '\uFEFF<?xml version="1.0"?>',
      '\uFEFF\uFEFF<?xml version="1.0"?>',
      '<?xml version="1.0"?><?xml version="1.0"?>',
    ),
    fc.constantFrom(pidfWith('').replace(/^<\?xml[^>]*\?>/, ''), rulesWith('').replace(/^<\?xml[^>]*\?>/, '')),
  )
  .map(([declaration, doc]) => `${declaration}${doc}`);

const namespaceGames: fc.Arbitrary<string> = fc.oneof(
  fc
    .constantFrom(
      '<p:a/>',
      '<a p:b="1"/>',
      '<xmlns:a xmlns:xmlns="urn:x"/>',
      '<a xmlns:xml="urn:not-xml"/>',
      '<a xmlns:x="http://www.w3.org/XML/1998/namespace"/>',
      '<a xmlns="http://www.w3.org/XML/1998/namespace"/>',
      '<a xmlns="http://www.w3.org/2000/xmlns/"/>',
      '<a xmlns:p="http://www.w3.org/2000/xmlns/"/>',
      '<a xmlns:p=""/>',
      '<a xmlns:=""/>',
      '<a xmlns:="urn:x"/>',
      '<a:b:c xmlns:a="urn:a"/>',
      '<:a/>',
      '<a:/>',
      '<a xmlns:a="urn:1" xmlns:b="urn:1" a:x="1" b:x="2"/>',
      '<a xmlns:a="urn:1" xmlns:b="urn:2" a:x="1" b:x="2"/>',
      '<a xmlns:a="urn:1" a:x="1" x="2"/>',
      '<a xmlns:p="urn:1"><p:b xmlns:p="urn:2"><p:c/></p:b><p:d/></a>',
      '<a xmlns="urn:1"><b xmlns=""><c/></b></a>',
      '<p:a xmlns:p="urn:1"></q:a>',
      '<p:a xmlns:p="urn:1"></P:a>',
      '<a xmlns:__proto__="urn:x"><__proto__:b/></a>',
      '<a xmlns:constructor="urn:x"><constructor:b/></a>',
      '<a xmlns:toString="urn:x" toString:c="1"/>',
      '<a xml:lang="en" xml:space="preserve" xml:id="x"/>',
      '<a xml:foo="1"/>',
      '<xml:a/>',
      '<a xmlns:p="urn:1" xmlns:p="urn:2"/>',
      '<a xmlns="urn:1" xmlns="urn:2"/>',
    )
    .chain((fragment) => wrap.map((w) => w(fragment))),
  // The root's own namespace played with: PIDF and pres-rules roots under other prefixes or namespaces.
  fc.tuple(fc.constantFrom('p', 'cr', 'xml', 'x-y', 'a.b', 'A'), fc.constantFrom(...NAMESPACE_VARIANTS)).map(
    ([prefix, ns]) => `<${prefix}:presence xmlns:${prefix}="${ns}" entity="${ENTITY}"><${prefix}:tuple id="t"><${prefix}:status><${prefix}:basic>open</${prefix}:basic></${prefix}:status></${prefix}:tuple></${prefix}:presence>`,
  ),
  fc.tuple(fc.constantFrom('q', 'cr', 'pr', 'xmlns'), fc.constantFrom(...NAMESPACE_VARIANTS)).map(
    ([prefix, ns]) =>
      `<${prefix}:ruleset xmlns:${prefix}="${ns}" xmlns:pr="urn:ietf:params:xml:ns:pres-rules"><${prefix}:rule id="r-1"><${prefix}:conditions><${prefix}:identity><${prefix}:many/></${prefix}:identity></${prefix}:conditions><${prefix}:actions><pr:sub-handling>allow</pr:sub-handling></${prefix}:actions></${prefix}:rule></${prefix}:ruleset>`,
  ),
);

const MARKUP = ['<a>', '</a>', '<b x="1">', '</b>', '<c/>', '<x:a>', '</x:a>', ' xmlns:x="urn:x"', 'text', ' ', '\n', '&amp;', '&', '&#65;', '<![CDATA[z]]>', '<!--c-->', '<?p?>', '<', '>', '"', "'", '=', '/', '<a', '</', '/>', ']]>', '<!', '?>'];
const randomMarkup: fc.Arbitrary<string> = fc.oneof(
  fc.array(fc.constantFrom(...MARKUP), { minLength: 1, maxLength: 60 }).map((parts) => parts.join('')),
  fc.string({ maxLength: 400, unit: 'binary' }),
  fc.string({ maxLength: 400, unit: fc.constantFrom('<', '>', '/', 'a', ':', '"', '=', ' ', '&', ';', '#', 'x', '!', '?', '[', ']', '-') }),
  fc.array(fc.constantFrom(...MARKUP), { minLength: 1, maxLength: 30 }).chain((parts) => wrap.map((w) => w(parts.join('')))),
);

export const documentArb: fc.Arbitrary<{ family: string; doc: string }> = fc.oneof(
  { weight: 6, arbitrary: mutated(pidfDocs).map((doc) => ({ family: 'mutated PIDF', doc })) },
  { weight: 6, arbitrary: mutated(rulesDocs).map((doc) => ({ family: 'mutated pres-rules', doc })) },
  { weight: 3, arbitrary: grammar(PIDF_VOCABULARY).map((doc) => ({ family: 'PIDF grammar', doc })) },
  { weight: 4, arbitrary: grammar(RULES_VOCABULARY).map((doc) => ({ family: 'pres-rules grammar', doc })) },
  { weight: 3, arbitrary: entityTricks.map((doc) => ({ family: 'entity tricks', doc })) },
  { weight: 2, arbitrary: deepNesting.map((doc) => ({ family: 'deep nesting', doc })) },
  { weight: 2, arbitrary: manyAttributes.map((doc) => ({ family: 'attribute counts and sizes', doc })) },
  { weight: 2, arbitrary: cdataCommentPi.map((doc) => ({ family: 'CDATA, comments, PIs', doc })) },
  { weight: 1, arbitrary: declarations.map((doc) => ({ family: 'XML declarations', doc })) },
  { weight: 2, arbitrary: namespaceGames.map((doc) => ({ family: 'namespace games', doc })) },
  { weight: 2, arbitrary: randomMarkup.map((doc) => ({ family: 'random markup', doc })) },
);
