import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { AppError } from '../../core/errors.js';

/**
 * The one way the service reads an inbound XML document (pres-rules now,
 * PIDF later). XML parsers are a classic attack surface, so this wrapper is
 * deliberately narrower than XML 1.0:
 *
 * - No DOCTYPE at all. Without a DTD there are no entity declarations, so no
 *   external entities (XXE: reading files or URLs) and no entity expansion
 *   (billion laughs); only the five predefined entities and character
 *   references remain (XML 1.0 §4.1, §4.6). The check runs on the raw text
 *   before any parser sees it.
 * - Bounded size, nesting depth and element count, so a hostile document
 *   costs bounded memory and time (and the tree walk below cannot overflow
 *   the stack).
 * - No processing instructions except the leading `<?xml ...?>` declaration:
 *   a PI is an instruction to some application (XML 1.0 §2.6) and none of
 *   ours takes any; refusing them beats ignoring them silently.
 * - Namespaces resolved here, once (Namespaces in XML 1.0): callers match on
 *   (namespace URI, local name) and never on prefixes, which a sender may
 *   choose freely.
 *
 * fast-xml-parser's validator and parser are lenient in places (undeclared
 * entities, `<` in attribute values, several roots, misplaced declarations),
 * so the well-formedness rules that matter here are checked again below.
 * Pure: no I/O.
 */

export interface XmlLimits {
  /** Largest document, in UTF-8 bytes. */
  readonly maxBytes: number;
  /** Deepest nesting; the root element is at depth 1. */
  readonly maxDepth: number;
  /** Most elements in the whole document. */
  readonly maxElements: number;
}

export const DEFAULT_XML_LIMITS: XmlLimits = Object.freeze({ maxBytes: 64 * 1024, maxDepth: 32, maxElements: 5000 });

export interface XmlElement {
  /** Namespace URI; '' for an element in no namespace. */
  readonly ns: string;
  /** Local name (the prefix is resolved into `ns`). */
  readonly name: string;
  /** Attributes by local name, values decoded and normalized (XML 1.0 §3.3.3); namespace declarations are not attributes here. */
  readonly attributes: Readonly<Record<string, string>>;
  readonly children: readonly XmlElement[];
  /** The element's own text (text and CDATA children, not descendants'), concatenated and trimmed. */
  readonly text: string;
}

const XML_NS = 'http://www.w3.org/XML/1998/namespace';
const XMLNS_NS = 'http://www.w3.org/2000/xmlns/';

const refuse = (message: string): AppError => new AppError('invalid_document', message);
const notWellFormed = (detail: string): AppError => refuse(`not well-formed: ${detail}`);

/**
 * Characters XML 1.0 §2.2 does not allow anywhere, not even as character
 * references. With the u flag a surrogate range matches lone surrogates only.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const FORBIDDEN_CHAR = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF\uD800-\uDFFF]/u;
const isXmlChar = (code: number) =>
  code === 0x9 || code === 0xa || code === 0xd || (code >= 0x20 && code <= 0xd7ff) || (code >= 0xe000 && code <= 0xfffd) || (code >= 0x10000 && code <= 0x10ffff);
const codePoint = (char: string) => `U+${(char.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;

const PREDEFINED: Readonly<Record<string, string>> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** Replaces entity and character references; anything else after `&` is not well-formed once there is no DTD (XML 1.0 §4.1 WFC: Entity Declared). */
function decodeReferences(raw: string, where: string): string {
  if (!raw.includes('&')) return raw;
  return raw.replace(/&([^;&\s<]*);?/g, (match, body: string) => {
    if (!match.endsWith(';')) throw notWellFormed(`'&' not followed by a reference in ${where}`);
    const predefined = PREDEFINED[body];
    if (predefined !== undefined) return predefined;
    const numeric = /^#(?:x([0-9a-fA-F]{1,6})|([0-9]{1,7}))$/.exec(body);
    if (numeric) {
      const code = numeric[1] !== undefined ? parseInt(numeric[1], 16) : Number(numeric[2]);
      if (!isXmlChar(code)) throw notWellFormed(`character reference &${body}; is not an XML character, in ${where}`);
      return String.fromCodePoint(code);
    }
    throw notWellFormed(`undefined entity &${body}; in ${where} (only &amp; &lt; &gt; &quot; &apos; and character references exist without a DTD)`);
  });
}

// --- the parser's output (preserveOrder), narrowed from unknown --------------

const TEXT = '#text';
const CDATA = '#cdata';
const ATTRS = ':@';

type OrderedNode = Record<string, unknown>;

const isRecord = (value: unknown): value is OrderedNode => typeof value === 'object' && value !== null && !Array.isArray(value);

function nodeList(value: unknown): OrderedNode[] {
  if (!Array.isArray(value)) throw notWellFormed('unexpected parser output');
  return value.map((v) => {
    if (!isRecord(v)) throw notWellFormed('unexpected parser output');
    return v;
  });
}

/** The node's one key besides its attributes: a tag name, `#text`, `#cdata`, or `?target` for a PI. */
function nodeKey(node: OrderedNode): string {
  const key = Object.keys(node).find((k) => k !== ATTRS);
  if (key === undefined) throw notWellFormed('unexpected parser output');
  return key;
}

function rawAttributes(node: OrderedNode): [string, string][] {
  const attrs = node[ATTRS];
  if (attrs === undefined) return [];
  if (!isRecord(attrs)) throw notWellFormed('unexpected parser output');
  return Object.entries(attrs).map(([name, value]) => {
    if (typeof value !== 'string') throw notWellFormed(`attribute ${name} without a value`);
    return [name, value];
  });
}

const textOf = (node: OrderedNode): string => {
  const text = node[TEXT];
  if (typeof text === 'string') return text;
  if (text === undefined) return '';
  return String(text);
};

/** Namespaces in XML 1.0 §3: a QName is `local` or `prefix:local`, each an NCName. */
function splitQName(qname: string, what: string): { prefix: string | undefined; local: string } {
  const parts = qname.split(':');
  if (parts.length === 1 && parts[0]) return { prefix: undefined, local: qname };
  if (parts.length === 2 && parts[0] && parts[1]) return { prefix: parts[0], local: parts[1] };
  throw notWellFormed(`${what} name '${qname}' is not a qualified name (Namespaces in XML §3)`);
}

class DangerousName extends Error {}

/** Building a parser costs about as much as parsing a small document: one per depth limit, reused (parse keeps no state between calls). */
const parsers = new Map<number, XMLParser>();
function parserFor(limits: XmlLimits): XMLParser {
  let parser = parsers.get(limits.maxDepth);
  if (!parser) {
    parser = makeParser(limits);
    if (parsers.size < 8) parsers.set(limits.maxDepth, parser);
  }
  return parser;
}

function makeParser(limits: XmlLimits): XMLParser {
  return new XMLParser({
    preserveOrder: true,
    ignoreAttributes: false,
    attributeNamePrefix: '',
    allowBooleanAttributes: false,
    removeNSPrefix: false,
    textNodeName: TEXT,
    cdataPropName: CDATA,
    // Values stay raw strings: entities are decoded above (no DTD, so only
    // the predefined ones), and nothing is converted to numbers or trimmed.
    processEntities: false,
    htmlEntities: false,
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: false,
    ignoreDeclaration: false,
    ignorePiTags: false,
    // One more than allowed, so that the walk below reports the depth itself.
    maxNestedTags: limits.maxDepth + 1,
    // Names such as toString would become object keys in the parser's output.
    onDangerousProperty: (name: string) => {
      throw new DangerousName(name);
    },
  });
}

interface WalkState {
  readonly limits: XmlLimits;
  elements: number;
}

function toElement(node: OrderedNode, qname: string, scope: ReadonlyMap<string, string>, depth: number, state: WalkState): XmlElement {
  if (depth > state.limits.maxDepth) throw refuse(`nesting deeper than ${state.limits.maxDepth}`);
  state.elements += 1;
  if (state.elements > state.limits.maxElements) throw refuse(`more than ${state.limits.maxElements} elements`);

  // Namespace declarations first: they apply to the element that carries them (Namespaces in XML §6.1).
  const attrs = rawAttributes(node).map(([name, raw]): [string, string] => {
    if (raw.includes('<')) throw notWellFormed(`'<' in the value of attribute ${name} on <${qname}>`);
    // XML 1.0 §3.3.3: literal white space becomes a space; character references survive.
    return [name, decodeReferences(raw.replace(/[\t\n\r]/g, ' '), `attribute ${name} on <${qname}>`)];
  });
  let inScope = scope;
  for (const [name, value] of attrs) {
    if (name !== 'xmlns' && !name.startsWith('xmlns:')) continue;
    if (inScope === scope) inScope = new Map(scope);
    const declared = inScope as Map<string, string>;
    if (name === 'xmlns') {
      if (value === XML_NS || value === XMLNS_NS) throw notWellFormed(`${value} cannot be the default namespace`);
      declared.set('', value);
      continue;
    }
    const prefix = name.slice('xmlns:'.length);
    if (prefix === '' || prefix.includes(':')) throw notWellFormed(`namespace prefix '${prefix}' is not an NCName`);
    // Namespaces in XML §3 (XML 1.0): xmlns:p="" is not allowed; xml and xmlns are reserved.
    if (value === '') throw notWellFormed(`namespace prefix '${prefix}' declared with an empty URI`);
    if (prefix === 'xmlns') throw notWellFormed('the prefix xmlns cannot be declared');
    if ((prefix === 'xml') !== (value === XML_NS)) throw notWellFormed(`the prefix xml is bound to ${XML_NS} and only it`);
    if (value === XMLNS_NS) throw notWellFormed(`${XMLNS_NS} cannot be bound to a prefix`);
    declared.set(prefix, value);
  }

  const { prefix, local } = splitQName(qname, 'element');
  if (prefix === 'xmlns') throw notWellFormed(`element <${qname}> uses the reserved prefix xmlns`);
  const ns = prefix === undefined ? (inScope.get('') ?? '') : inScope.get(prefix);
  if (ns === undefined) throw refuse(`unknown namespace prefix '${prefix}' on element <${qname}>`);

  // Attributes: an unprefixed attribute is in no namespace (the default
  // namespace does not apply to attributes, Namespaces in XML §6.2).
  const attributes = new Map<string, string>();
  const expanded = new Set<string>();
  for (const [name, value] of attrs) {
    if (name === 'xmlns' || name.startsWith('xmlns:')) continue;
    const a = splitQName(name, 'attribute');
    const attrNs = a.prefix === undefined ? '' : inScope.get(a.prefix);
    if (attrNs === undefined) throw refuse(`unknown namespace prefix '${a.prefix}' on attribute ${name} of <${qname}>`);
    const key = `{${attrNs}}${a.local}`;
    if (expanded.has(key)) throw notWellFormed(`attribute ${a.local} appears twice on <${qname}> (Namespaces in XML §6.3)`);
    expanded.add(key);
    // Callers see local names only, so two attributes sharing one would be ambiguous.
    if (attributes.has(a.local)) throw refuse(`two attributes named ${a.local} (in different namespaces) on <${qname}>`);
    attributes.set(a.local, value);
  }

  const children: XmlElement[] = [];
  let text = '';
  for (const child of nodeList(node[qname])) {
    const key = nodeKey(child);
    if (key === TEXT) {
      const raw = textOf(child);
      if (raw.includes(']]>')) throw notWellFormed(`']]>' in the text of <${qname}> (XML 1.0 §2.4)`);
      text += decodeReferences(raw, `the text of <${qname}>`);
    } else if (key === CDATA) {
      for (const part of nodeList(child[CDATA])) text += textOf(part);
    } else if (key.startsWith('?')) {
      throw refuse(`processing instruction <${key}?> is not allowed`);
    } else {
      children.push(toElement(child, key, inScope, depth + 1, state));
    }
  }
  // No prototype: a lookup such as attributes['isPrototypeOf'] finds nothing the document did not say.
  const record = Object.create(null) as Record<string, string>;
  for (const [name, value] of attributes) Object.defineProperty(record, name, { value, enumerable: true, writable: true, configurable: true });
  return { ns, name: local, attributes: record, children, text: text.trim() };
}

/**
 * Parses one XML document into its root element, refusing (AppError
 * `invalid_document`) anything unsafe, malformed or over the limits.
 */
export function parseXml(input: string, limits: Partial<XmlLimits> = {}): XmlElement {
  const l: XmlLimits = { ...DEFAULT_XML_LIMITS, ...limits };
  // UTF-8 never takes fewer bytes than UTF-16 takes code units: check that cheap bound first.
  if (input.length > l.maxBytes || Buffer.byteLength(input, 'utf8') > l.maxBytes) throw refuse(`document larger than ${l.maxBytes} bytes`);

  // XML 1.0 §2.11: line ends are normalized before parsing; a leading byte order mark is not content.
  const text = (input.startsWith('\uFEFF') ? input.slice(1) : input).replace(/\r\n?/g, '\n');

  // Before any parser sees the text: no DTD, hence no entities of any kind.
  // These checks also refuse the strings inside a comment or CDATA section,
  // which costs nothing real and keeps them trivially correct.
  if (/<!DOCTYPE/i.test(text)) throw refuse('DOCTYPE is not allowed (no DTDs, so no entity declarations or external entities)');
  const declaration = /<!(?!--|\[CDATA\[)([A-Za-z]*)/.exec(text);
  if (declaration) throw refuse(`markup declaration <!${declaration[1] ?? ''} is not allowed (no DTDs, no entity declarations)`);
  const forbidden = FORBIDDEN_CHAR.exec(text);
  if (forbidden) throw notWellFormed(`character ${codePoint(forbidden[0])} is not allowed in XML 1.0 (§2.2)`);

  const validation = XMLValidator.validate(text, { allowBooleanAttributes: false });
  if (validation !== true) throw notWellFormed(`${validation.err.msg} (line ${validation.err.line}, column ${validation.err.col})`);

  let parsed: unknown;
  try {
    parsed = parserFor(l).parse(text);
  } catch (error) {
    if (error instanceof DangerousName) throw refuse(`the name ${error.message} is not allowed for an element or attribute`);
    const message = error instanceof Error ? error.message : String(error);
    if (/maximum nested tags/i.test(message)) throw refuse(`nesting deeper than ${l.maxDepth}`);
    const reserved = /Invalid name: "([^"]*)"/.exec(message);
    if (reserved) throw refuse(`the name ${reserved[1] ?? ''} is not allowed for an element or attribute`);
    throw notWellFormed(message);
  }

  const top = nodeList(parsed);
  let root: { node: OrderedNode; qname: string } | undefined;
  top.forEach((node, index) => {
    const key = nodeKey(node);
    if (key === '?xml') {
      // XML 1.0 §2.8: the declaration comes first or not at all.
      if (index !== 0 || !text.startsWith('<?xml')) throw notWellFormed('the XML declaration must be at the very start');
      checkDeclaration(rawAttributes(node));
    } else if (key.startsWith('?')) {
      throw refuse(`processing instruction <${key}?> is not allowed`);
    } else if (key === TEXT) {
      if (textOf(node).trim() !== '') throw notWellFormed('text outside the root element');
    } else if (key === CDATA) {
      throw notWellFormed('CDATA outside the root element');
    } else if (root) {
      throw notWellFormed(`a second root element <${key}> (a document has exactly one)`);
    } else {
      root = { node, qname: key };
    }
  });
  if (!root) throw notWellFormed('no root element');
  return toElement(root.node, root.qname, new Map([['xml', XML_NS]]), 1, { limits: l, elements: 0 });
}

/** The text reaching us is already decoded, so the declaration may only say what is true of it: XML 1.0 in UTF-8. */
function checkDeclaration(attrs: readonly [string, string][]): void {
  for (const [name, value] of attrs) {
    if (name === 'version' && value !== '1.0') throw refuse(`XML version ${value} is not supported (1.0 only)`);
    if (name === 'encoding' && !/^utf-8$/i.test(value)) throw refuse(`encoding ${value} is not supported (UTF-8 only)`);
    if (name !== 'version' && name !== 'encoding' && name !== 'standalone') throw notWellFormed(`unexpected ${name} in the XML declaration`);
  }
}
