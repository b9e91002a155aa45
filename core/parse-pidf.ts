import { AppError } from './errors.js';
import { parseXml, type XmlElement } from './parse-xml.js';
import { isPrintableText } from './text.js';
import type { Activity, Availability } from './presence.js';

/**
 * Reads an inbound PIDF publication (RFC 3863, with the RFC 4479 data model
 * and RFC 4480 RPID) into what a publication contributes to the owner's
 * presence: an availability, RPID activities the service knows, and a note.
 * The document is parsed by the safe parser (no DTD, no entities, bounded
 * size, depth and element count). Extensions the service does not know are
 * ignored, as RFC 3863 §4.1.8 allows, unless marked mustUnderstand (RFC 3863
 * §4.1.7), which refuses the document.
 */
export interface PublishedPresence {
  readonly entity: string;
  readonly availability: Availability;
  readonly activities: readonly Activity[];
  readonly note: string | undefined;
}

const NS_PIDF = 'urn:ietf:params:xml:ns:pidf';
const NS_DM = 'urn:ietf:params:xml:ns:pidf:data-model';
const NS_RPID = 'urn:ietf:params:xml:ns:pidf:rpid';
const MAX_NOTE = 200;

/** RPID activities (RFC 4480 §3.2) the service models itself. */
const KNOWN: ReadonlySet<string> = new Set<Activity>(['sleeping', 'on-the-phone', 'meeting', 'steering', 'travel', 'meal', 'working', 'away']);
/** RPID activities that say "not reachable now" or "away", for the availability. */
const SAYS_BUSY = new Set(['on-the-phone', 'meeting', 'steering', 'busy', 'presentation', 'performance', 'appointment']);
const SAYS_AWAY = new Set(['away', 'vacation', 'holiday', 'permanent-absence']);

const fail = (message: string): never => {
  throw new AppError('invalid_document', message);
};

const children = (e: XmlElement, ns: string, name: string) => e.children.filter((c) => c.ns === ns && c.name === name);

/** RFC 3863 §4.1.7: an extension marked mustUnderstand that we do not understand refuses the document. */
function checkMustUnderstand(e: XmlElement, understood: (e: XmlElement) => boolean): void {
  const flag = e.attributes.mustUnderstand;
  if ((flag === 'true' || flag === '1') && !understood(e)) fail(`The document requires understanding <${e.name}> (${e.ns}), which this service does not.`);
  for (const child of e.children) checkMustUnderstand(child, understood);
}

const UNDERSTOOD_NS = new Set([NS_PIDF, NS_DM, NS_RPID]);

function noteOf(e: XmlElement): string | undefined {
  const text = e.text.trim();
  if (text.length === 0) return undefined;
  if (text.length > MAX_NOTE) fail(`A note may hold at most ${MAX_NOTE} characters.`);
  if (!isPrintableText(text)) fail('A note must be printable text.');
  return text;
}

export function parsePidf(xml: string): PublishedPresence {
  const root = parseXml(xml);
  if (root.ns !== NS_PIDF || root.name !== 'presence') fail(`Expected a PIDF <presence> in ${NS_PIDF}.`);
  const entity = root.attributes.entity;
  if (!entity) fail('The <presence> element needs its entity attribute (RFC 3863 §4.1.1).');
  checkMustUnderstand(root, (e) => UNDERSTOOD_NS.has(e.ns));

  const tuples = children(root, NS_PIDF, 'tuple');
  const statuses: string[] = [];
  let note: string | undefined;
  for (const tuple of tuples) {
    if (!tuple.attributes.id) fail('Every <tuple> needs an id (RFC 3863 §4.1.2).');
    const status = children(tuple, NS_PIDF, 'status')[0];
    if (!status) fail('Every <tuple> needs a <status> (RFC 3863 §4.1.3).');
    const basic = children(status as XmlElement, NS_PIDF, 'basic')[0];
    if (basic) {
      if (basic.text !== 'open' && basic.text !== 'closed') fail('<basic> is open or closed (RFC 3863 §4.1.4).');
      statuses.push(basic.text);
    }
    for (const n of children(tuple, NS_PIDF, 'note')) note ??= noteOf(n);
  }
  for (const n of children(root, NS_PIDF, 'note')) note ??= noteOf(n);

  const rpid = new Set<string>();
  for (const person of children(root, NS_DM, 'person')) {
    for (const activities of children(person, NS_RPID, 'activities')) for (const a of activities.children) if (a.ns === NS_RPID && a.name !== 'note') rpid.add(a.name);
    for (const n of children(person, NS_DM, 'note')) note ??= noteOf(n);
  }
  if (statuses.length === 0 && rpid.size === 0) fail('The document says nothing: no basic status and no activity.');

  const open = statuses.length === 0 || statuses.includes('open');
  const activities = [...rpid].filter((a): a is Activity => KNOWN.has(a));
  let availability: Availability;
  if (!open) availability = 'offline';
  else if (rpid.has('sleeping')) availability = 'do-not-disturb';
  else if ([...rpid].some((a) => SAYS_BUSY.has(a))) availability = 'busy';
  else if ([...rpid].some((a) => SAYS_AWAY.has(a))) availability = 'away';
  else if (rpid.has('unknown')) availability = 'unknown';
  else availability = 'available';
  return { entity: entity as string, availability, activities: open ? activities : [], note: open ? note : undefined };
}
