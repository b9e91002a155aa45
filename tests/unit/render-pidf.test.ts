import t from 'tap';
import { escapeXml, renderPidf, retentionExpiry, type PidfInput } from '../../core/render-pidf.js';
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

t.test('characters XML 1.0 cannot carry never reach a document (XML 1.0 §2.2)', async (t) => {
  t.equal(escapeXml('a\u0001b\uFFFEc\uD800d\uDC00e'), 'a\uFFFDb\uFFFDc\uFFFDd\uFFFDe');
  t.equal(escapeXml('\uD83D\uDE00 ok'), '\uD83D\uDE00 ok', 'a surrogate pair is kept');
});

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

/** A view with every field a rule can grant (RFC 4479 person/device/service, RPID, PIDF-LO). */
const full: PidfInput = {
  entity,
  basic: 'open',
  availability: 'busy',
  activities: ['on-the-phone', 'working'],
  placeType: 'office',
  zone: 'HQ & "annex"',
  sphere: 'work',
  location: { latitude: 48.2037, longitude: 16.3735, radiusMeters: 708, retransmissionAllowed: true, retentionDays: 7 },
  userInput: { state: 'idle', idleThresholdSeconds: 300, lastInput: '2026-11-25T10:29:00.000Z' },
  timeOffsetMinutes: 60,
  note: 'Back at 3 <pm>',
  devices: [{ id: 'd0123456789ab', deviceId: 'urn:uuid:01234567-89ab-8cde-8f01-23456789abcd', class: 'phone' }],
  services: [
    { id: 's0123456789ab', class: 'phone', basic: 'open' },
    { id: 's0123456789ac', basic: 'closed' },
  ],
};

t.test('RFC 4119 retention-expiry: the end of the UTC day plus the granted days', async (t) => {
  t.equal(retentionExpiry(Date.parse('2026-11-25T10:30:00Z'), 0), '2026-11-26T00:00:00Z');
  t.equal(retentionExpiry(Date.parse('2026-11-25T23:59:59Z'), 1), '2026-11-27T00:00:00Z');
  t.equal(retentionExpiry(Date.parse('2026-11-26T00:00:00Z'), 0), '2026-11-27T00:00:00Z');
});

t.test('golden: every granted field', async (t) => {
  t.equal(
    renderPidf(full, Date.parse('2026-11-25T10:30:00Z')),
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
      '<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"' +
      ' xmlns:lt="urn:ietf:params:xml:ns:location-type" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" xmlns:gbp="urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"' +
      ' xmlns:gml="http://www.opengis.net/gml" xmlns:gs="http://www.opengis.net/pidflo/1.0" entity="pres:alice@example.com">' +
      '<tuple id="presence"><status><basic>open</basic></status><note>Back at 3 &lt;pm&gt;</note></tuple>' +
      '<tuple id="s0123456789ab"><status><basic>open</basic></status><rpid:class>phone</rpid:class></tuple>' +
      '<tuple id="s0123456789ac"><status><basic>closed</basic></status></tuple>' +
      '<dm:person id="p"><rpid:activities><rpid:on-the-phone/><rpid:working/></rpid:activities>' +
      '<rpid:place-type><rpid:note>HQ &amp; &quot;annex&quot;</rpid:note><lt:office/></rpid:place-type>' +
      '<rpid:sphere><rpid:work/></rpid:sphere><rpid:time-offset>60</rpid:time-offset>' +
      '<rpid:user-input idle-threshold="300" last-input="2026-11-25T10:29:00.000Z">idle</rpid:user-input>' +
      '<gp:geopriv><gp:location-info><gs:Circle srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>48.2037 16.3735</gml:pos>' +
      '<gs:radius uom="urn:ogc:def:uom:EPSG::9001">708</gs:radius></gs:Circle></gp:location-info>' +
      '<gp:usage-rules><gbp:retransmission-allowed>true</gbp:retransmission-allowed><gbp:retention-expiry>2026-12-03T00:00:00Z</gbp:retention-expiry></gp:usage-rules></gp:geopriv></dm:person>' +
      '<dm:device id="d0123456789ab"><rpid:class>phone</rpid:class><dm:deviceID>urn:uuid:01234567-89ab-8cde-8f01-23456789abcd</dm:deviceID></dm:device>' +
      '</presence>\n',
  );
});

t.test('documents with every field pass the schemas; without a place type (RFC 4589 has no schema to check) also in strict mode', async (t) => {
  const { placeType: _placeType, ...noPlaceType } = full;
  const zoneOnly: PidfInput = { entity, basic: 'open', zone: 'Cabin' };
  const each: Record<string, PidfInput> = {
    'no-place-type': noPlaceType,
    'zone-without-type': zoneOnly,
    'location-only': { entity, basic: 'open', location: { latitude: -33.9, longitude: 151.2, radiusMeters: 1 } },
    'user-input-bare': { entity, basic: 'open', availability: 'available', userInput: { state: 'active' } },
    'device-without-class': { entity, basic: 'open', devices: [{ id: 'd1', deviceId: 'urn:uuid:01234567-89ab-8cde-8f01-23456789abcd' }] },
    'note-only': { entity, basic: 'open', note: 'x' },
    'negative-offset': { entity, basic: 'open', timeOffsetMinutes: -570 },
  };
  const strict = await validatePidf(Object.fromEntries(Object.entries(each).map(([name, input]) => [name, renderPidf(input)])), true);
  t.ok(strict.ok, strict.output);
  // lt: (RFC 4589) is declared lax at its extension point; --strict rejects any namespace without a schema by design.
  const lax = await validatePidf({ full: renderPidf(full), 'type-only': renderPidf({ entity, basic: 'open', placeType: 'airport' }) }, false);
  t.ok(lax.ok, lax.output);
});

t.test('RFC 5491 §3.4: the location goes in the element of the device that measured it', async (t) => {
  const now = Date.parse('2026-11-25T10:30:00Z');
  const device = { id: 'd0123456789ab', deviceId: 'urn:uuid:01234567-89ab-8cde-8f01-23456789abcd' };
  const location = { latitude: 48.2037, longitude: 16.3735, radiusMeters: 708, device };
  const alone = renderPidf({ entity, basic: 'open', location }, now);
  t.match(alone, /<dm:device id="d0123456789ab"><gp:geopriv>.*<\/gp:geopriv><dm:deviceID>urn:uuid:01234567-89ab-8cde-8f01-23456789abcd<\/dm:deviceID><\/dm:device>/);
  t.notMatch(alone, /<dm:person/, 'nothing else to say of the person');
  const merged = renderPidf({ entity, basic: 'open', location, devices: [{ ...device, class: 'phone' }, { id: 'dother', deviceId: 'urn:uuid:11111111-89ab-8cde-8f01-23456789abcd' }] }, now);
  t.equal(merged.match(/<dm:device /g)?.length, 2, 'merged with the granted device, not repeated');
  t.match(merged, /<dm:device id="d0123456789ab"><gp:geopriv>.*<\/gp:geopriv><rpid:class>phone<\/rpid:class><dm:deviceID>/);
  const valid = await validatePidf({ alone, merged }, true);
  t.ok(valid.ok, valid.output);
});
