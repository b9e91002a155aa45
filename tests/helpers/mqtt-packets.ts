/** MQTT 3.1.1 control packets built by hand, for tests that speak the protocol below a client library. */

/** §2.2: the fixed header, the packet's first byte and its remaining length as a variable byte integer (§2.2.3). */
export function fixedHeader(first: number, remainingLength: number): Buffer {
  const length: number[] = [];
  let n = remainingLength;
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    length.push(byte);
  } while (n > 0);
  return Buffer.from([first, ...length]);
}

/** A control packet: the fixed header, then the rest. */
export function packet(first: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  return Buffer.concat([fixedHeader(first, body.length), body]);
}

/** §1.5.3: a UTF-8 string, two bytes of length, then the bytes. */
export function utf8(text: string | Buffer): Buffer {
  const bytes = Buffer.from(text);
  return Buffer.concat([Buffer.from([bytes.length >> 8, bytes.length & 0xff]), bytes]);
}
