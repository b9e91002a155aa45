import t from 'tap';
import { FrameSizeChecker } from '../../ingest/mqtt-frame-guard.js';
import { fixedHeader, packet } from '../helpers/mqtt-packets.js';

/** A packet of `bodyLength` bytes after its fixed header. */
const frame = (type: number, bodyLength: number): Buffer => packet(type, Buffer.alloc(bodyLength, 1));

t.test('passes packets up to the limit, across arbitrary chunking', async (t) => {
  const checker = new FrameSizeChecker(1000);
  const stream = Buffer.concat([frame(0x10, 50), frame(0x30, 1000), frame(0xc0, 0), frame(0x30, 127), frame(0x30, 128)]);
  for (let i = 0; i < stream.length; i += 7) t.equal(checker.push(stream.subarray(i, i + 7)), 'ok');
});

t.test('reports an oversized packet from its header alone', async (t) => {
  const checker = new FrameSizeChecker(1000);
  t.equal(checker.push(frame(0x30, 10)), 'ok');
  t.equal(checker.push(fixedHeader(0x30, 268_435_455)), 'too_large', 'the 256 MB maximum, header only');
  t.equal(new FrameSizeChecker(1000).push(Buffer.from([0x30, 0xe9, 0x07])), 'too_large', '1001 bytes');
});

t.test('reports a remaining length longer than four bytes', async (t) => {
  t.equal(new FrameSizeChecker(Number.MAX_SAFE_INTEGER).push(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80, 0x01])), 'malformed');
});
