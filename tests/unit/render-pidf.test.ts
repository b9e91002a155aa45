import t from 'tap';
import { escapeXml, renderPidf, type PidfInput } from '../../core/render-pidf.js';
import { validatePidf } from '../helpers/pidf-validator.js';

const entity = 'pres:alice@example.com';

/** Golden documents: the exact bytes for each shape a watcher can be sent. */
const golden: Record<string, { input: PidfInput; xml: string }> = {
  offline: {
    input: { entity, basic: 'closed', availability: 'offline' },
    xml:
      '<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="pres:alice@example.com">' +
      '<tuple id="presence"><status><basic>closed</basic></status></tuple></presence>\n',
  },
  'on-the-phone-in-meeting': {
    input: { entity, basic: 'open', availability: 'busy', activities: ['on-the-phone', 'meeting'] },
    xml:
      '<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="pres:alice@example.com">' +
      '<tuple id="presence"><status><basic>open</basic></status></tuple>' +
      '<dm:person id="p"><rpid:activities><rpid:on-the-phone/><rpid:meeting/></rpid:activities></dm:person></presence>\n',
  },
  'busy-without-activities-granted': {
    input: { entity, basic: 'open', availability: 'busy' },
    xml:
      '<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="pres:alice@example.com">' +
      '<tuple id="presence"><status><basic>open</basic></status></tuple>' +
      '<dm:person id="p"><rpid:activities><rpid:busy/></rpid:activities></dm:person></presence>\n',
  },
};

for (const [name, { input, xml }] of Object.entries(golden)) {
  t.test(`golden: ${name}`, async (t) => t.equal(renderPidf(input), xml));
}

t.test('escaping of the entity attribute', async (t) => {
  t.equal(escapeXml(`a&b<c>"d'`), 'a&amp;b&lt;c&gt;&quot;d&apos;');
  t.match(renderPidf({ entity: 'pres:a&b@x', basic: 'closed' }), /entity="pres:a&amp;b@x"/);
});

t.test('every document shape the service can emit passes the official schemas (strict)', async (t) => {
  const documents: Record<string, string> = {};
  for (const availability of ['available', 'busy', 'do-not-disturb', 'away', 'unknown', 'offline', undefined] as const) {
    for (const activities of [
      undefined,
      [],
      ['on-the-phone'],
      ['meeting'],
      ['away'],
      ['steering'],
      ['sleeping'],
      ['on-the-phone', 'meeting'],
      ['travel'],
      ['meal'],
      ['working'],
      ['sleeping', 'on-the-phone', 'meeting', 'steering', 'travel', 'meal', 'working', 'away'],
    ] as const) {
      for (const basic of ['open', 'closed'] as const) {
        documents[`${availability ?? 'none'}-${(activities ?? ['none']).join('+') || 'empty'}-${basic}`] = renderPidf({ entity, basic, availability, activities });
      }
    }
  }
  for (const [name, { xml }] of Object.entries(golden)) documents[`golden-${name}`] = xml;
  // Many combinations render the same bytes; validate each distinct document once.
  const distinct = Object.fromEntries([...new Map(Object.entries(documents).map(([name, xml]) => [xml, name]))].map(([xml, name]) => [name, xml]));
  const result = await validatePidf(distinct, true);
  t.ok(result.ok, result.output);
  t.equal((result.output.match(/: OK/g) ?? []).length, Object.keys(distinct).length, 'every distinct document validated');
});
