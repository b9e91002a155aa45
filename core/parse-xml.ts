import { AppError } from './errors.js';

/**
 * The one way the service reads an inbound XML document (pres-rules, PIDF
 * publications). XML parsers are a classic attack surface, so this reader
 * is deliberately narrower than XML 1.0:
 *
 * - No DOCTYPE at all. Without a DTD there are no entity declarations, so no
 *   external entities (XXE: reading files or URLs) and no entity expansion
 *   (billion laughs); only the five predefined entities and character
 *   references remain (XML 1.0 §4.1, §4.6). The check runs on the raw text
 *   before anything else reads it.
 * - Bounded size, nesting depth and element count, so a hostile document
 *   costs bounded memory and time. The reader keeps its own stack, so no
 *   depth can overflow the call stack either.
 * - No processing instructions except the leading `<?xml ...?>` declaration:
 *   a PI is an instruction to some application (XML 1.0 §2.6) and none of
 *   ours takes any; refusing them beats ignoring them silently.
 * - Namespaces resolved here, once (Namespaces in XML 1.0): callers match on
 *   (namespace URI, local name) and never on prefixes, which a sender may
 *   choose freely.
 * - Names that are properties of every JavaScript object (`__proto__`,
 *   `toString`, ...) are refused for elements and attributes, so a caller's
 *   `table[element.name]` can never reach Object.prototype.
 *
 * One pass over the text, with its own stack: every well-formedness rule
 * of XML 1.0 that applies to a document without a DTD is checked as it is
 * read (names, attribute syntax, quoting and uniqueness, matching end tags,
 * comments without `--`, `]]>` outside CDATA, one root, nothing but
 * comments and white space around it). This replaced fast-xml-parser, whose
 * validator, parser and the walk over its output read each publication
 * three times: a fifth of the service's CPU per HTTP PUBLISH (measured with
 * bench/publish.ts under the CPU profiler). tests/unit/parse-xml-differential.test.ts
 * compares the two on generated documents. Pure: no I/O.
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
function decodeReferences(raw: string, where: () => string): string {
  if (!raw.includes('&')) return raw;
  return raw.replace(/&([^;&\s<]*);?/g, (match, body: string) => {
    if (!match.endsWith(';')) throw notWellFormed(`'&' not followed by a reference in ${where()}`);
    const predefined = Object.hasOwn(PREDEFINED, body) ? PREDEFINED[body] : undefined;
    if (predefined !== undefined) return predefined;
    const numeric = /^#(?:x([0-9a-fA-F]{1,6})|([0-9]{1,7}))$/.exec(body);
    if (numeric) {
      const code = numeric[1] !== undefined ? parseInt(numeric[1], 16) : Number(numeric[2]);
      if (!isXmlChar(code)) throw notWellFormed(`character reference &${body}; is not an XML character, in ${where()}`);
      return String.fromCodePoint(code);
    }
    throw notWellFormed(`undefined entity &${body}; in ${where()} (only &amp; &lt; &gt; &quot; &apos; and character references exist without a DTD)`);
  });
}

/** Properties every object has: refused as names (see the module comment). */
const OBJECT_PROPERTY_NAMES: ReadonlySet<string> = new Set([
  '__proto__',
  'constructor',
  'prototype',
  'hasOwnProperty',
  'toString',
  'valueOf',
  '__defineGetter__',
  '__defineSetter__',
  '__lookupGetter__',
  '__lookupSetter__',
  'isPrototypeOf',
  'propertyIsEnumerable',
  'toLocaleString',
]);

/**
 * XML 1.0 (fifth edition) §2.3 Name: NameStartChar NameChar*. Sticky, so it
 * matches at `lastIndex` only; the u flag reads astral characters whole.
 */
const NAME =
  // eslint-disable-next-line no-misleading-character-class -- the joiners and combining marks are name characters by themselves (§2.3), not parts of a sequence
  /[:A-Z_a-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u02FF\u0370-\u037D\u037F-\u1FFF\u200C\u200D\u2070-\u218F\u2C00-\u2FEF\u3001-\uD7FF\uF900-\uFDCF\uFDF0-\uFFFD\u{10000}-\u{EFFFF}][:A-Z_a-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u02FF\u0370-\u037D\u037F-\u1FFF\u200C\u200D\u2070-\u218F\u2C00-\u2FEF\u3001-\uD7FF\uF900-\uFDCF\uFDF0-\uFFFD\u{10000}-\u{EFFFF}\-.0-9\u00B7\u0300-\u036F\u203F\u2040]*/uy;

/** An ASCII NameChar: the common case, read without the regular expression. */
const isAsciiNameChar = (c: number) =>
  (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x3a || c === 0x5f;
const isAsciiNameStart = (c: number) => (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x3a || c === 0x5f;
/** XML 1.0 §2.3 S: space, tab, line feed (carriage returns are gone by then, §2.11). */
const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d;

/** `xmlns` or `xmlns:prefix`: a namespace declaration, not an attribute (Namespaces in XML §3). */
const isNamespaceDeclaration = (name: string) => name === 'xmlns' || name.startsWith('xmlns:');

/** Whether a raw attribute value holds a tab, line feed or carriage return (most hold none: no regular expression run per value). */
function hasLiteralWhiteSpace(value: string): boolean {
  for (let j = 0; j < value.length; j++) {
    const c = value.charCodeAt(j);
    if (c === 0x09 || c === 0x0a || c === 0x0d) return true;
  }
  return false;
}

/** XML 1.0 §3.3.3 attribute-value normalization: literal tab, line feed and carriage return become spaces; then references are replaced. */
function attributeText(raw: string, name: string, element: string): string {
  const spaced = hasLiteralWhiteSpace(raw) ? raw.replace(/[\t\n\r]/g, ' ') : raw;
  return spaced.includes('&') ? decodeReferences(spaced, () => `attribute ${name} on <${element}>`) : spaced;
}

/** Namespaces in XML 1.0 §3: a QName is `local` or `prefix:local`, each an NCName. */
function splitQName(qname: string, what: string): { prefix: string | undefined; local: string } {
  const colon = qname.indexOf(':');
  if (colon === -1) return { prefix: undefined, local: qname };
  if (colon > 0 && colon < qname.length - 1 && qname.indexOf(':', colon + 1) === -1) return { prefix: qname.slice(0, colon), local: qname.slice(colon + 1) };
  throw notWellFormed(`${what} name '${qname}' is not a qualified name (Namespaces in XML §3)`);
}

/** An element being read: what its end tag will turn into an XmlElement. */
interface Open {
  readonly qname: string;
  readonly ns: string;
  readonly name: string;
  readonly attributes: Record<string, string>;
  readonly children: XmlElement[];
  readonly scope: ReadonlyMap<string, string>;
  text: string;
}

class Reader {
  private i = 0;
  private elements = 0;
  private readonly stack: Open[] = [];
  private root: XmlElement | undefined;

  constructor(
    private readonly text: string,
    private readonly limits: XmlLimits,
  ) {}

  read(): XmlElement {
    const s = this.text;
    if (s.startsWith('<?xml') && (s.length === 5 || isSpace(s.charCodeAt(5)) || s.startsWith('<?xml?>'))) this.declaration();
    while (this.i < s.length) {
      const lt = s.indexOf('<', this.i);
      const end = lt === -1 ? s.length : lt;
      if (end > this.i) this.characters(this.i, end);
      if (lt === -1) break;
      this.i = lt;
      this.markup();
    }
    const open = this.stack.at(-1);
    if (open) throw this.malformed(`<${open.qname}> is not closed`);
    if (!this.root) throw notWellFormed('no root element');
    return this.root;
  }

  /** Line and column of an offset, for messages (1-based, in characters). */
  private at(offset: number): string {
    let line = 1;
    let start = 0;
    for (let j = this.text.indexOf('\n'); j !== -1 && j < offset; j = this.text.indexOf('\n', j + 1)) {
      line += 1;
      start = j + 1;
    }
    return `line ${line}, column ${offset - start + 1}`;
  }

  private malformed(detail: string, offset = this.i): AppError {
    return notWellFormed(`${detail} (${this.at(offset)})`);
  }

  /** Character data between markup: the open element's text, or white space around the root (XML 1.0 §2.1 Misc). */
  private characters(from: number, to: number): void {
    const raw = this.text.slice(from, to);
    const open = this.stack.at(-1);
    if (!open) {
      for (let j = 0; j < raw.length; j++) if (!isSpace(raw.charCodeAt(j))) throw this.malformed('text outside the root element', from + j);
      return;
    }
    // XML 1.0 §2.4: ']]>' may not appear in character data.
    if (raw.includes(']]>')) throw this.malformed(`']]>' in the text of <${open.qname}> (XML 1.0 §2.4)`, from + raw.indexOf(']]>'));
    open.text += decodeReferences(raw, () => `the text of <${open.qname}>`);
  }

  /** At a '<': a tag, an end tag, a comment, CDATA or a processing instruction. */
  private markup(): void {
    const s = this.text;
    const next = s.charCodeAt(this.i + 1);
    if (next === 0x2f /* / */) return this.endTag();
    if (next === 0x3f /* ? */) return this.processingInstruction();
    if (next === 0x21 /* ! */) {
      if (s.startsWith('<!--', this.i)) return this.comment();
      if (s.startsWith('<![CDATA[', this.i)) return this.cdata();
      // Declarations were refused before reading; anything else after '<!' is not markup.
      throw this.malformed("'<!' that begins neither a comment nor a CDATA section");
    }
    this.startTag();
  }

  /** XML 1.0 §2.3 Name at the cursor; moves past it. */
  private name(what: string): string {
    const s = this.text;
    const from = this.i;
    let j = from;
    if (j < s.length && isAsciiNameStart(s.charCodeAt(j))) {
      j += 1;
      while (j < s.length && isAsciiNameChar(s.charCodeAt(j))) j += 1;
      if (j >= s.length || s.charCodeAt(j) < 0x80) {
        this.i = j;
        return s.slice(from, j);
      }
    }
    NAME.lastIndex = from;
    const match = NAME.exec(s);
    if (!match) throw this.malformed(`expected ${what} name`);
    this.i = from + match[0].length;
    return match[0];
  }

  private skipSpace(): boolean {
    const from = this.i;
    while (this.i < this.text.length && isSpace(this.text.charCodeAt(this.i))) this.i += 1;
    return this.i > from;
  }

  /** S? '=' S? and a quoted value (XML 1.0 §2.3 AttValue): returns the raw value, without its quotes. */
  private attributeValue(qname: string, element: string): string {
    const s = this.text;
    this.skipSpace();
    if (s.charCodeAt(this.i) !== 0x3d /* = */) throw this.malformed(`attribute ${qname} on <${element}> without a value`);
    this.i += 1;
    this.skipSpace();
    const quote = s[this.i];
    if (quote !== '"' && quote !== "'") throw this.malformed(`the value of attribute ${qname} on <${element}> is not quoted`);
    const close = s.indexOf(quote, this.i + 1);
    if (close === -1) throw this.malformed(`the value of attribute ${qname} on <${element}> is not closed`);
    const raw = s.slice(this.i + 1, close);
    const lt = raw.indexOf('<');
    if (lt !== -1) throw this.malformed(`'<' in the value of attribute ${qname} on <${element}>`, this.i + 1 + lt);
    this.i = close + 1;
    return raw;
  }

  /** XML 1.0 §3.1 STag / EmptyElemTag, with Namespaces in XML resolved. */
  private startTag(): void {
    const s = this.text;
    const tagAt = this.i;
    this.i += 1;
    const qname = this.name('an element');
    const parent = this.stack.at(-1);
    if (!parent && this.root) throw this.malformed(`a second root element <${qname}> (a document has exactly one)`, tagAt);
    const depth = this.stack.length + 1;
    if (depth > this.limits.maxDepth) throw refuse(`nesting deeper than ${this.limits.maxDepth}`);
    this.elements += 1;
    if (this.elements > this.limits.maxElements) throw refuse(`more than ${this.limits.maxElements} elements`);

    // Attributes as written: qualified names and raw values, side by side (no pair per attribute).
    const names: string[] = [];
    const raws: string[] = [];
    let seen: Set<string> | undefined;
    let selfClosing = false;
    for (;;) {
      const spaced = this.skipSpace();
      const c = s.charCodeAt(this.i);
      if (c === 0x3e /* > */) {
        this.i += 1;
        break;
      }
      if (c === 0x2f /* / */ && s.charCodeAt(this.i + 1) === 0x3e) {
        this.i += 2;
        selfClosing = true;
        break;
      }
      if (this.i >= s.length) throw this.malformed(`<${qname}> is not closed`, tagAt);
      // XML 1.0 §3.1: attributes are separated by white space.
      if (!spaced) throw this.malformed(`expected white space, '>' or '/>' in <${qname}>`);
      const name = this.name('an attribute');
      const value = this.attributeValue(name, qname);
      // XML 1.0 §3.1 WFC: Unique Att Spec. A set only for many attributes: most elements have one or two.
      if (names.length < 8) {
        if (names.includes(name)) throw this.malformed(`attribute ${name} appears twice on <${qname}>`, tagAt);
      } else {
        seen ??= new Set(names);
        if (seen.has(name)) throw this.malformed(`attribute ${name} appears twice on <${qname}>`, tagAt);
        seen.add(name);
      }
      names.push(name);
      raws.push(value);
    }

    // XML 1.0 §3.3.3: literal white space becomes a space; character references survive.
    const values: string[] = [];
    for (let k = 0; k < names.length; k++) values.push(attributeText(raws[k] as string, names[k] as string, qname));

    // Namespace declarations first: they apply to the element that carries them (Namespaces in XML §6.1).
    const scope = parent?.scope ?? ROOT_SCOPE;
    let inScope: Map<string, string> | undefined;
    for (let k = 0; k < names.length; k++) {
      const name = names[k] as string;
      if (!isNamespaceDeclaration(name)) continue;
      const value = values[k] as string;
      inScope ??= new Map(scope);
      if (name === 'xmlns') {
        if (value === XML_NS || value === XMLNS_NS) throw notWellFormed(`${value} cannot be the default namespace`);
        inScope.set('', value);
        continue;
      }
      const prefix = name.slice('xmlns:'.length);
      if (prefix === '' || prefix.includes(':')) throw notWellFormed(`namespace prefix '${prefix}' is not an NCName`);
      // Namespaces in XML §3 (XML 1.0): xmlns:p="" is not allowed; xml and xmlns are reserved.
      if (value === '') throw notWellFormed(`namespace prefix '${prefix}' declared with an empty URI`);
      if (prefix === 'xmlns') throw notWellFormed('the prefix xmlns cannot be declared');
      if ((prefix === 'xml') !== (value === XML_NS)) throw notWellFormed(`the prefix xml is bound to ${XML_NS} and only it`);
      if (value === XMLNS_NS) throw notWellFormed(`${XMLNS_NS} cannot be bound to a prefix`);
      inScope.set(prefix, value);
    }
    const elementScope: ReadonlyMap<string, string> = inScope ?? scope;

    const { prefix, local } = splitQName(qname, 'element');
    if (prefix === 'xmlns') throw notWellFormed(`element <${qname}> uses the reserved prefix xmlns`);
    if (OBJECT_PROPERTY_NAMES.has(local)) throw refuse(`the name ${local} is not allowed for an element or attribute`);
    const ns = prefix === undefined ? (elementScope.get('') ?? '') : elementScope.get(prefix);
    if (ns === undefined) throw refuse(`unknown namespace prefix '${prefix}' on element <${qname}>`);

    // Attributes: an unprefixed attribute is in no namespace (the default
    // namespace does not apply to attributes, Namespaces in XML §6.2).
    // No prototype: a lookup such as attributes['isPrototypeOf'] finds nothing the document did not say.
    const attributes = Object.create(null) as Record<string, string>;
    let expanded: Set<string> | undefined;
    for (let k = 0; k < names.length; k++) {
      const name = names[k] as string;
      if (isNamespaceDeclaration(name)) continue;
      const a = splitQName(name, 'attribute');
      if (OBJECT_PROPERTY_NAMES.has(a.local)) throw refuse(`the name ${a.local} is not allowed for an element or attribute`);
      const attrNs = a.prefix === undefined ? '' : elementScope.get(a.prefix);
      if (attrNs === undefined) throw refuse(`unknown namespace prefix '${a.prefix}' on attribute ${name} of <${qname}>`);
      if (a.prefix !== undefined) {
        expanded ??= new Set();
        const key = `{${attrNs}}${a.local}`;
        if (expanded.has(key)) throw notWellFormed(`attribute ${a.local} appears twice on <${qname}> (Namespaces in XML §6.3)`);
        expanded.add(key);
      }
      // Callers see local names only, so two attributes sharing one would be ambiguous.
      if (Object.hasOwn(attributes, a.local)) throw refuse(`two attributes named ${a.local} (in different namespaces) on <${qname}>`);
      attributes[a.local] = values[k] as string;
    }

    const open: Open = { qname, ns, name: local, attributes, children: [], scope: elementScope, text: '' };
    if (selfClosing) this.close(open);
    else this.stack.push(open);
  }

  /** XML 1.0 §3.1 ETag: '</' Name S? '>', naming the open element (WFC: Element Type Match). */
  private endTag(): void {
    const tagAt = this.i;
    this.i += 2;
    const qname = this.name('an end tag');
    this.skipSpace();
    if (this.text.charCodeAt(this.i) !== 0x3e) throw this.malformed(`expected '>' to end </${qname}>`);
    this.i += 1;
    const open = this.stack.pop();
    if (!open) throw this.malformed(`closing tag </${qname}> without an open element`, tagAt);
    if (open.qname !== qname) throw this.malformed(`closing tag </${qname}> does not match <${open.qname}>`, tagAt);
    this.close(open);
  }

  private close(open: Open): void {
    const element: XmlElement = { ns: open.ns, name: open.name, attributes: open.attributes, children: open.children, text: open.text.trim() };
    const parent = this.stack.at(-1);
    if (parent) parent.children.push(element);
    else this.root = element;
  }

  /** XML 1.0 §2.5: '<!--' ((Char - '-') | ('-' (Char - '-')))* '-->'. Skipped. */
  private comment(): void {
    const from = this.i + 4;
    const dashes = this.text.indexOf('--', from);
    if (dashes === -1) throw this.malformed('comment is not closed');
    if (this.text.charCodeAt(dashes + 2) !== 0x3e) throw this.malformed("'--' inside a comment (XML 1.0 §2.5)", dashes);
    this.i = dashes + 3;
  }

  /** XML 1.0 §2.7: CDATA is text as written, no references; only inside the root. */
  private cdata(): void {
    const from = this.i + '<![CDATA['.length;
    const end = this.text.indexOf(']]>', from);
    if (end === -1) throw this.malformed('CDATA section is not closed');
    const open = this.stack.at(-1);
    if (!open) throw this.malformed('CDATA outside the root element');
    open.text += this.text.slice(from, end);
    this.i = end + 3;
  }

  /** XML 1.0 §2.6: any processing instruction is refused; the declaration was read first, so one here is misplaced. */
  private processingInstruction(): void {
    const at = this.i;
    this.i += 2;
    const target = this.name('a processing instruction target');
    if (target === 'xml' && this.stack.length === 0) throw this.malformed('the XML declaration must be at the very start', at);
    throw refuse(`processing instruction <?${target}?> is not allowed`);
  }

  /**
   * XML 1.0 §2.8 XMLDecl: '<?xml' VersionInfo EncodingDecl? SDDecl? S? '?>'.
   * The text reaching us is already decoded, so the declaration may only say
   * what is true of it: XML 1.0 in UTF-8.
   */
  private declaration(): void {
    const end = this.text.indexOf('?>');
    if (end === -1) throw this.malformed('the XML declaration is not closed');
    const body = this.text.slice('<?xml'.length, end);
    const pseudo = DECLARATION.exec(body);
    if (!pseudo) throw this.malformed('the XML declaration must be <?xml version="1.0" [encoding="UTF-8"] [standalone="yes|no"]?>', 0);
    const version = pseudo[1] ?? pseudo[2] ?? '';
    if (version !== '1.0') throw refuse(`XML version ${version} is not supported (1.0 only)`);
    const encoding = pseudo[3] ?? pseudo[4];
    if (encoding !== undefined && !/^utf-8$/i.test(encoding)) throw refuse(`encoding ${encoding} is not supported (UTF-8 only)`);
    this.i = end + 2;
  }
}

/** XML 1.0 §2.8 VersionInfo EncodingDecl? SDDecl? S?, with S = space, tab, line feed (§2.3; no other Unicode space). */
const DECLARATION =
  /^[ \t\n]+version[ \t\n]*=[ \t\n]*(?:"([^"]*)"|'([^']*)')(?:[ \t\n]+encoding[ \t\n]*=[ \t\n]*(?:"([^"]*)"|'([^']*)'))?(?:[ \t\n]+standalone[ \t\n]*=[ \t\n]*(?:"(?:yes|no)"|'(?:yes|no)'))?[ \t\n]*$/;

const ROOT_SCOPE: ReadonlyMap<string, string> = new Map([['xml', XML_NS]]);

/**
 * Parses one XML document into its root element, refusing (AppError
 * `invalid_document`) anything unsafe, malformed or over the limits.
 */
export function parseXml(input: string, limits: Partial<XmlLimits> = {}): XmlElement {
  const l: XmlLimits = { ...DEFAULT_XML_LIMITS, ...limits };
  // UTF-8 never takes fewer bytes than UTF-16 takes code units: check that cheap bound first.
  if (input.length > l.maxBytes || Buffer.byteLength(input, 'utf8') > l.maxBytes) throw refuse(`document larger than ${l.maxBytes} bytes`);

  // XML 1.0 §2.11: line ends are normalized before parsing; a leading byte order mark is not content.
  const bomless = input.startsWith('\uFEFF') ? input.slice(1) : input;
  const text = bomless.includes('\r') ? bomless.replace(/\r\n?/g, '\n') : bomless;

  // Before anything reads the text: no DTD, hence no entities of any kind.
  // These checks also refuse the strings inside a comment or CDATA section,
  // which costs nothing real and keeps them trivially correct.
  if (/<!DOCTYPE/i.test(text)) throw refuse('DOCTYPE is not allowed (no DTDs, so no entity declarations or external entities)');
  const declaration = /<!(?!--|\[CDATA\[)([A-Za-z]*)/.exec(text);
  if (declaration) throw refuse(`markup declaration <!${declaration[1] ?? ''} is not allowed (no DTDs, no entity declarations)`);
  const forbidden = FORBIDDEN_CHAR.exec(text);
  if (forbidden) throw notWellFormed(`character ${codePoint(forbidden[0])} is not allowed in XML 1.0 (§2.2)`);

  return new Reader(text, l).read();
}
