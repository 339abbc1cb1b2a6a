// Per-client persistent deflate streams: sync-flushed pieces, framing, ordering
// without awaiting, level changes mid-stream, separation by encoding.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compactLength } from '../../src/display/rfb/encoders/index.js';
import type { EncodedRect } from '../../src/display/rfb/types.js';
import { finishRect, rectHeader, ZlibStreams } from '../../src/display/rfb/zlib-streams.js';
import { rng } from './content.js';
import { Inflater, Reader } from './decoders.js';

function data(n: number, seed: number, alphabet = 4): Uint8Array {
  const r = rng(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * alphabet) * 17;
  return b;
}

const rect = { x: 0, y: 0, w: 1, h: 1 };
const zrle = (bytes: Uint8Array): EncodedRect => ({ rect, encoding: 16, pieces: [{ kind: 'zlib', stream: 0, framing: 'u32', bytes }] });
const tight = (stream: number, bytes: Uint8Array): EncodedRect => ({
  rect,
  encoding: 7,
  pieces: [
    { kind: 'raw', bytes: Uint8Array.of(stream << 4) },
    { kind: 'zlib', stream, framing: 'compact', bytes },
  ],
});

function readCompact(r: Reader): number {
  let n = r.u8();
  if (n & 0x80) {
    const b = r.u8();
    n = (n & 0x7f) | ((b & 0x7f) << 7);
    if (b & 0x80) n |= r.u8() << 14;
  }
  return n;
}

describe('ZlibStreams', () => {
  it('compresses each piece with a sync flush into one persistent stream', async () => {
    const s = new ZlibStreams(2);
    const z = new Inflater();
    for (let i = 0; i < 20; i++) {
      const input = data(1 + i * 997, i);
      const out = await s.compress(16, 0, input);
      assert.deepEqual([...out.subarray(-4)], [0, 0, 0xff, 0xff]);
      if (i === 0) assert.equal(out[0], 0x78);
      else assert.notEqual(out[0], 0x78, 'no new zlib header mid-stream');
      assert.deepEqual(new Uint8Array(await z.push(out)), input);
    }
    assert.equal(s.streamCount, 1);
    s.close();
    z.close();
  });

  it('applies level changes between pieces without breaking the stream', async () => {
    const s = new ZlibStreams(2);
    const z = new Inflater();
    const sizes: number[] = [];
    for (const level of [2, 9, 0, 6, 6, 1]) {
      s.setCompressLevel(level);
      const input = data(50_000, level);
      const out = await s.compress(16, 0, input);
      sizes.push(out.length);
      assert.deepEqual(new Uint8Array(await z.push(out)), input);
    }
    assert.ok(sizes[2]! > 50_000, 'level 0 stores');
    assert.ok(sizes[1]! < 50_000 / 2, 'level 9 compresses');
    assert.equal(s.compressLevel, 1);
    s.setCompressLevel(42);
    assert.equal(s.compressLevel, 9);
    s.close();
    z.close();
  });

  it('finishRect frames ZRLE with a U32 length and Tight with a compact length or raw under 12 bytes', async () => {
    const s = new ZlibStreams(2);
    const z0 = new Inflater();
    const input = data(3000, 1);
    const zr = Buffer.concat(await finishRect(zrle(input), s));
    const r = new Reader(zr);
    const len = r.u32();
    assert.equal(len, zr.length - 4);
    assert.deepEqual(new Uint8Array(await z0.push(r.bytes(len))), input);

    const t1 = new Inflater();
    const small = Buffer.concat(await finishRect(tight(1, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)), s));
    assert.deepEqual([...small], [0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], '11 bytes: sent as is');
    const twelve = Buffer.concat(await finishRect(tight(1, data(12, 2)), s));
    const tr = new Reader(twelve);
    assert.equal(tr.u8(), 0x10);
    const tl = readCompact(tr);
    assert.equal(tl, tr.left);
    assert.deepEqual(new Uint8Array(await t1.push(tr.bytes(tl))), data(12, 2));
    // Streams are per encoding family: ZRLE's and Tight stream 1 are separate.
    assert.equal(s.streamCount, 2);
    s.close();
    z0.close();
    t1.close();
  });

  it('keeps every stream in order when rectangles are finished without awaiting', async () => {
    const s = new ZlibStreams(3);
    const inflaters = [new Inflater(), new Inflater(), new Inflater(), new Inflater()];
    const inputs: Uint8Array[] = [];
    const pending: Promise<Uint8Array[]>[] = [];
    for (let i = 0; i < 40; i++) {
      const input = data(100 + ((i * 7919) % 20000), i, 3 + (i % 5));
      inputs.push(input);
      pending.push(finishRect(tight(i % 4, input), s));
    }
    const results = await Promise.all(pending);
    for (let i = 0; i < results.length; i++) {
      const r = new Reader(Buffer.concat(results[i]!));
      assert.equal(r.u8(), (i % 4) << 4);
      const n = readCompact(r);
      assert.deepEqual(new Uint8Array(await inflaters[i % 4]!.push(r.bytes(n))), inputs[i], `rect ${i}`);
    }
    assert.equal(s.streamCount, 4);
    s.close();
    for (const z of inflaters) z.close();
  });

  it('refuses streams an encoding does not have, and work after close', async () => {
    const s = new ZlibStreams();
    assert.throws(() => s.compress(7, 4, data(20, 1)), RangeError);
    assert.throws(() => s.compress(16, 1, data(20, 1)), RangeError);
    assert.throws(() => s.compress(0, 0, data(20, 1)), RangeError);
    s.close();
    await assert.rejects(s.compress(16, 0, data(20, 1)));
  });
});

describe('framing helpers', () => {
  it('compactLength follows rfbproto (10000 = 90 4E)', () => {
    assert.deepEqual([...compactLength(10000)], [0x90, 0x4e]);
    assert.deepEqual([...compactLength(0)], [0]);
    assert.deepEqual([...compactLength(127)], [127]);
    assert.deepEqual([...compactLength(128)], [0x80, 1]);
    assert.deepEqual([...compactLength(16383)], [0xff, 0x7f]);
    assert.deepEqual([...compactLength(16384)], [0x80, 0x80, 1]);
    assert.deepEqual([...compactLength(4194303)], [0xff, 0xff, 0xff]);
    assert.throws(() => compactLength(4194304), RangeError);
    for (const n of [1, 200, 5000, 70000, 1234567]) assert.equal(readCompact(new Reader(compactLength(n))), n);
  });

  it('rectHeader writes x, y, w, h and a signed encoding', () => {
    assert.deepEqual(
      [...rectHeader({ rect: { x: 1, y: 0x203, w: 640, h: 480 }, encoding: -223, pieces: [] })],
      [0, 1, 2, 3, 2, 128, 1, 224, 0xff, 0xff, 0xff, 0x21],
    );
  });
});
