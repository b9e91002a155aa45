import { controlCharacterIn, findHeaderEnd, MAX_MESSAGE_BYTES, parseContentLength, parseMessage, SipParseError, type ParseResult, type SipMessage } from './message.js';

/**
 * Splits a SIP byte stream (TCP) into messages. RFC 3261 §18.3: over a
 * stream, Content-Length is mandatory and is the only framing; RFC 5626
 * §3.5.1 keep-alives (bare CRLFs between messages) are skipped.
 *
 * A framing error cannot be recovered from (the next message's start is
 * unknown): after one, {@link StreamFramer.broken} is true and the caller
 * must drop the connection.
 */
export class StreamFramer {
  private buffer: Buffer = Buffer.alloc(0);
  private failed = false;

  constructor(private readonly maxBytes = MAX_MESSAGE_BYTES) {}

  get broken(): boolean {
    return this.failed;
  }

  /** Feeds bytes; returns every complete message (or the error that broke the stream). */
  push(chunk: Buffer): ParseResult<SipMessage>[] {
    if (this.failed) return [];
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const out: ParseResult<SipMessage>[] = [];
    for (;;) {
      let skip = 0;
      while (skip < this.buffer.length && (this.buffer[skip] === 0x0d || this.buffer[skip] === 0x0a)) skip++;
      if (skip > 0) this.buffer = this.buffer.subarray(skip);
      if (this.buffer.length === 0) break;
      const end = findHeaderEnd(this.buffer);
      if (!end) {
        if (this.buffer.length > this.maxBytes) out.push(this.breakWith(new SipParseError('too-large', `header section longer than ${this.maxBytes} bytes`)));
        break;
      }
      const head = this.buffer.subarray(0, end.index).toString('latin1');
      // A bare CR would start a line for the search below and not for
      // parseMessage: the two must frame alike, so such a head breaks the stream.
      const control = controlCharacterIn(head);
      if (control !== -1) {
        out.push(this.breakWith(new SipParseError('bad-header', `control character U+${head.charCodeAt(control).toString(16).toUpperCase().padStart(4, '0')} in the header section (RFC 3261 §25.1)`)));
        break;
      }
      const lengths = [...head.matchAll(/^(?:content-length|l)[ \t]*:(.*)$/gim)].map((m) => m[1]);
      if (lengths.length !== 1) {
        out.push(this.breakWith(new SipParseError('bad-content-length', lengths.length === 0 ? 'Content-Length is mandatory over a stream transport (RFC 3261 §18.3)' : 'more than one Content-Length')));
        break;
      }
      const length = parseContentLength(lengths[0]);
      if (length === undefined || length === 'invalid') {
        out.push(this.breakWith(new SipParseError('bad-content-length', `Content-Length is not a number: ${JSON.stringify((lengths[0] ?? '').slice(0, 40))}`)));
        break;
      }
      const total = end.index + end.length + length;
      if (total > this.maxBytes) {
        out.push(this.breakWith(new SipParseError('too-large', `message of ${total} bytes exceeds ${this.maxBytes}`)));
        break;
      }
      if (this.buffer.length < total) break;
      const frame = this.buffer.subarray(0, total);
      this.buffer = this.buffer.subarray(total);
      out.push(parseMessage(Buffer.from(frame), { stream: true, maxBytes: this.maxBytes }));
    }
    if (this.buffer.length === 0) this.buffer = Buffer.alloc(0);
    return out;
  }

  private breakWith(error: SipParseError): ParseResult<SipMessage> {
    this.failed = true;
    this.buffer = Buffer.alloc(0);
    return { ok: false, error };
  }
}
