import t from 'tap';
import { AppError } from '../../core/errors.js';
import { parsePidf } from '../../core/parse-pidf.js';
import { renderPidf } from '../../core/render-pidf.js';

const entity = 'pres:alice@presence.local';
const doc = (inner: string, attrs = `entity="${entity}"`) =>
  `<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" ${attrs}>${inner}</presence>`;
const refused = (xml: string) => {
  try {
    parsePidf(xml);
    return undefined;
  } catch (error) {
    return error instanceof AppError ? `${error.code}: ${error.message}` : `unexpected ${String(error)}`;
  }
};

t.test('RFC 3863 / RFC 4480 documents map to availability, activities and note', async (t) => {
  const table: [string, string, object][] = [
    ['open, nothing else', '<tuple id="t"><status><basic>open</basic></status></tuple>', { availability: 'available', activities: [], note: undefined }],
    ['closed', '<tuple id="t"><status><basic>closed</basic></status><note>gone</note></tuple>', { availability: 'offline', activities: [], note: undefined }],
    [
      'on the phone, with a tuple note',
      '<tuple id="t"><status><basic>open</basic></status><note>Call me later</note></tuple><dm:person id="p"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>',
      { availability: 'busy', activities: ['on-the-phone'], note: 'Call me later' },
    ],
    ['rpid busy', '<tuple id="t"><status><basic>open</basic></status></tuple><dm:person id="p"><rpid:activities><rpid:busy/></rpid:activities></dm:person>', { availability: 'busy', activities: [] }],
    ['vacation says away', '<tuple id="t"><status><basic>open</basic></status></tuple><dm:person id="p"><rpid:activities><rpid:vacation/></rpid:activities></dm:person>', { availability: 'away', activities: [] }],
    ['sleeping', '<tuple id="t"><status><basic>open</basic></status></tuple><dm:person id="p"><rpid:activities><rpid:sleeping/></rpid:activities></dm:person>', { availability: 'do-not-disturb', activities: ['sleeping'] }],
    ['a person note', '<tuple id="t"><status><basic>open</basic></status></tuple><dm:person id="p"><dm:note>at lunch</dm:note></dm:person>', { availability: 'available', note: 'at lunch' }],
    ['unknown extensions are ignored', '<tuple id="t"><status><basic>open</basic><x:y xmlns:x="urn:x"/></status></tuple><x:z xmlns:x="urn:x"/>', { availability: 'available' }],
    ['activities without a tuple', '<dm:person id="p"><rpid:activities><rpid:meeting/></rpid:activities></dm:person>', { availability: 'busy', activities: ['meeting'] }],
  ];
  for (const [name, inner, expected] of table) t.match(parsePidf(doc(inner)), { entity, ...expected }, name);
});

t.test('what the service renders, it reads back', async (t) => {
  const xml = renderPidf({ entity, basic: 'open', availability: 'busy', activities: ['meeting'], note: 'Back at 3' });
  t.match(parsePidf(xml), { entity, availability: 'busy', activities: ['meeting'], note: 'Back at 3' });
});

t.test('malformed, unsafe or meaningless documents are refused with invalid_document', async (t) => {
  const table: [string, string, RegExp][] = [
    ['not PIDF', '<foo xmlns="urn:x"/>', /Expected a PIDF/],
    ['no entity', doc('<tuple id="t"><status><basic>open</basic></status></tuple>', ''), /entity attribute/],
    ['a bad basic', doc('<tuple id="t"><status><basic>maybe</basic></status></tuple>'), /open or closed/],
    ['a tuple without status', doc('<tuple id="t"/>'), /needs a <status>/],
    ['says nothing', doc(''), /says nothing/],
    ['mustUnderstand', doc('<tuple id="t"><status><basic>open</basic></status></tuple><x:y xmlns:x="urn:x" mustUnderstand="true"/>'), /requires understanding/],
    ['a long note', doc(`<tuple id="t"><status><basic>open</basic></status><note>${'x'.repeat(201)}</note></tuple>`), /at most 200/],
    ['XXE', `<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]>${doc('<tuple id="t"><status><basic>open</basic></status><note>&e;</note></tuple>')}`, /DOCTYPE/],
    ['billion laughs', `<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>${doc('&b;')}`, /DOCTYPE/],
    ['not well-formed', doc('<tuple id="t"><status><basic>open</basic></status>'), /./],
    ['too deep', doc(`${'<x:a xmlns:x="urn:x">'.repeat(40)}${'</x:a>'.repeat(40)}`), /deep/],
  ];
  for (const [name, xml, message] of table) {
    const outcome = refused(xml);
    t.match(outcome, /^invalid_document: /, name);
    t.match(outcome, message, name);
  }
});
