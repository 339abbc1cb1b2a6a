// Encoders against the independent reference decoders: pixel-exact round trips
// of varied content and awkward sizes in every client pixel format we expect,
// stream persistence across frames, Hextile/ZRLE/Tight rules, sizes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  copyRect,
  ENCODINGS,
  encodeHextile,
  encodeRaw,
  encoderFor,
  encodeTight,
  encodeZlib,
  encodeZrle,
  makeTightEncoder,
} from '../../src/display/rfb/encoders/index.js';
import { SERVER_FORMAT } from '../../src/display/rfb/pixel-format.js';
import type { EncodedRect, Encoder, Frame, PixelFormat, Rect } from '../../src/display/rfb/types.js';
import { finishRect, ZlibStreams } from '../../src/display/rfb/zlib-streams.js';
import { colours16, contents, FORMATS, mixed, noise, photo, solid, text } from './content.js';
import { Client, Decoders, Inflater } from './decoders.js';
import { assertShows, concat, send } from './helpers.js';

const ENCODERS: { name: string; enc: Encoder; encoding: number }[] = [
  { name: 'Raw', enc: encodeRaw, encoding: 0 },
  { name: 'Hextile', enc: encodeHextile, encoding: 5 },
  { name: 'zlib', enc: encodeZlib, encoding: 6 },
  { name: 'ZRLE', enc: encodeZrle, encoding: 16 },
  { name: 'Tight', enc: encodeTight, encoding: 7 },
];

const full = (f: Frame): Rect => ({ x: 0, y: 0, w: f.width, h: f.height });

for (const { name, enc, encoding } of ENCODERS) {
  describe(`${name} round trips`, () => {
    for (const { name: fname, pf } of FORMATS) {
      it(`is pixel-exact in ${fname}`, async () => {
        // One client (decoders, streams) for every picture: streams persist throughout.
        const streams = new ZlibStreams(2);
        const decoders = new Decoders();
        try {
          for (const { name: cname, frame } of contents()) {
            const rects: Rect[] = [full(frame)];
            if (frame.width > 9 && frame.height > 9) rects.push({ x: 3, y: 5, w: frame.width - 7, h: frame.height - 9 });
            for (const rect of rects) {
              const client = new Client(frame.width, frame.height, pf, decoders);
              const sent = await send(enc, frame, rect, pf, streams, client);
              assert.ok(sent.rects >= 1);
              assertShows(client, frame, rect, pf, `${name} ${fname} ${cname} ${rect.w}x${rect.h}+${rect.x}+${rect.y}`);
            }
          }
          for (const er of enc(mixed(64, 64), { x: 0, y: 0, w: 64, h: 64 }, pf, { compressLevel: 2 })) assert.equal(er.encoding, encoding);
        } finally {
          streams.close();
          decoders.close();
        }
      });
    }
  });
}

describe('encoders in general', () => {
  it('return nothing for an empty rectangle and refuse one outside the frame', () => {
    const f = solid(10, 10);
    for (const { enc } of ENCODERS) {
      assert.deepEqual(enc(f, { x: 0, y: 0, w: 0, h: 5 }, SERVER_FORMAT, { compressLevel: 2 }), []);
      assert.throws(() => enc(f, { x: 5, y: 5, w: 6, h: 1 }, SERVER_FORMAT, { compressLevel: 2 }), RangeError);
    }
  });

  it('are pure: the same input gives the same bytes, and results do not alias scratch space', () => {
    const a = mixed(300, 200, 1);
    const b = mixed(300, 200, 2);
    for (const { name, enc } of ENCODERS) {
      const first = enc(a, full(a), SERVER_FORMAT, { compressLevel: 2 });
      const copy = first.map((er) => er.pieces.map((p) => Uint8Array.from(p.bytes)));
      enc(b, full(b), SERVER_FORMAT, { compressLevel: 2 });
      const again = enc(a, full(a), SERVER_FORMAT, { compressLevel: 2 });
      for (const [i, er] of first.entries()) for (const [j, p] of er.pieces.entries()) assert.deepEqual(p.bytes, copy[i]![j], `${name} output changed`);
      assert.deepEqual(
        again.map((er) => er.pieces.map((p) => p.bytes)),
        copy,
        `${name} not deterministic`,
      );
    }
  });

  it('encoderFor maps encodings to encoders and everything else to null', () => {
    assert.equal(encoderFor(ENCODINGS.RAW), encodeRaw);
    assert.equal(encoderFor(ENCODINGS.HEXTILE), encodeHextile);
    assert.equal(encoderFor(ENCODINGS.ZLIB), encodeZlib);
    assert.equal(encoderFor(ENCODINGS.TIGHT), encodeTight);
    assert.equal(encoderFor(ENCODINGS.ZRLE), encodeZrle);
    for (const e of [ENCODINGS.COPY_RECT, ENCODINGS.RRE, ENCODINGS.DESKTOP_SIZE, ENCODINGS.LAST_RECT, -300, 12345]) assert.equal(encoderFor(e), null);
    assert.equal(ENCODINGS.EXTENDED_CLIPBOARD, -1063131698);
  });

  it('copyRect carries the source position', () => {
    const er = copyRect({ x: 0x1234, y: 7 }, { x: 1, y: 2, w: 3, h: 4 });
    assert.equal(er.encoding, 1);
    assert.deepEqual(er.rect, { x: 1, y: 2, w: 3, h: 4 });
    assert.deepEqual(er.pieces, [{ kind: 'raw', bytes: Uint8Array.of(0x12, 0x34, 0, 7) }]);
  });
});

describe('persistent zlib streams across frames', () => {
  for (const { name, enc } of ENCODERS.filter((e) => e.name !== 'Raw' && e.name !== 'Hextile')) {
    it(`${name}: successive frames decode with one inflater per stream, and the second needs the first's history`, async () => {
      const pf = FORMATS[1]!.pf; // noVNC
      const f1 = text(400, 300, 11);
      // The next frame: the same text scrolled up by one line of glyphs, a new line at the bottom.
      const f2 = text(400, 300, 11);
      f2.pixels.copyWithin(0, 14 * 400);
      f2.pixels.set(text(400, 14, 99).pixels, (300 - 14) * 400);
      const streams = new ZlibStreams(2);
      const decoders = new Decoders();
      const fresh = new Decoders();
      try {
        const c1 = new Client(400, 300, pf, decoders);
        const s1 = await send(enc, f1, full(f1), pf, streams, c1);
        assertShows(c1, f1, full(f1), pf, `${name} frame 1`);
        const second = enc(f2, full(f2), pf, { compressLevel: 2 });
        const payloads: Uint8Array[] = [];
        for (const er of second) payloads.push(concat(await finishRect(er, streams)));
        const c2 = new Client(400, 300, pf, decoders);
        let bytes2 = 0;
        for (let i = 0; i < second.length; i++) {
          await c2.apply(second[i]!.rect, second[i]!.encoding, payloads[i]!);
          bytes2 += 12 + payloads[i]!.length;
        }
        assertShows(c2, f2, full(f2), pf, `${name} frame 2`);
        // zlib's raw 32-bit pixels put the previous frame beyond deflate's 32 KiB window; ZRLE and Tight data is compact enough.
        if (name !== 'zlib') assert.ok(bytes2 < s1.bytes, `${name}: second frame ${bytes2} B should beat the first ${s1.bytes} B thanks to the dictionary`);
        // A client without the first frame's stream state cannot decode the second.
        const c3 = new Client(400, 300, pf, fresh);
        await assert.rejects(async () => {
          for (let i = 0; i < second.length; i++) await c3.apply(second[i]!.rect, second[i]!.encoding, payloads[i]!);
        });
      } finally {
        streams.close();
        decoders.close();
        fresh.close();
      }
    });
  }
});

/** Bytes on the wire for one full frame with a fresh client. */
async function wireBytes(enc: Encoder, f: Frame, pf: PixelFormat): Promise<number> {
  const streams = new ZlibStreams(2);
  const client = new Client(f.width, f.height, pf);
  try {
    const sent = await send(enc, f, full(f), pf, streams, client);
    assertShows(client, f, full(f), pf, 'size check');
    return sent.bytes;
  } finally {
    streams.close();
    client.close();
  }
}

describe('sizes', () => {
  it('a 1280×800 two-colour text frame is far smaller than Raw in Tight, ZRLE and Hextile', async (t) => {
    const f = text(1280, 800, 21);
    const pf = SERVER_FORMAT;
    const raw = await wireBytes(encodeRaw, f, pf);
    const sizes: Record<string, number> = {};
    for (const { name, enc } of ENCODERS) sizes[name] = await wireBytes(enc, f, pf);
    t.diagnostic(JSON.stringify(sizes));
    assert.equal(raw, 1280 * 800 * 4 + 12);
    assert.ok(sizes.Tight! * 20 < raw, `Tight ${sizes.Tight}`);
    assert.ok(sizes.ZRLE! * 20 < raw, `ZRLE ${sizes.ZRLE}`);
    assert.ok(sizes.zlib! * 10 < raw, `zlib ${sizes.zlib}`);
    assert.ok(sizes.Hextile! * 4 < raw, `Hextile ${sizes.Hextile}`);
  });

  it('a 1280×800 mixed frame: every compressing encoder beats Raw', async (t) => {
    const f = mixed(1280, 800);
    const sizes: Record<string, number> = {};
    for (const { name, enc } of ENCODERS) sizes[name] = await wireBytes(enc, f, SERVER_FORMAT);
    t.diagnostic(JSON.stringify(sizes));
    for (const n of ['Hextile', 'zlib', 'ZRLE', 'Tight']) assert.ok(sizes[n]! < sizes.Raw! / 2, `${n} ${sizes[n]}`);
  });

  it('solid frames cost a few bytes per tile or rectangle', async () => {
    const f = solid(1280, 800);
    const pf = SERVER_FORMAT;
    const hextile = encodeHextile(f, full(f), pf, { compressLevel: 2 })[0]!.pieces[0]!.bytes;
    // First tile: mask + background; every other tile: mask 0 (background carried over).
    assert.equal(hextile.length, 1 + 4 + (80 * 50 - 1));
    assert.ok((await wireBytes(encodeTight, f, pf)) < 13 * 20, 'Tight: one Fill per band');
    assert.ok((await wireBytes(encodeZrle, f, pf)) < 400);
  });

  it('incompressible content stays close to Raw', async () => {
    const f = noise(256, 256);
    const raw = await wireBytes(encodeRaw, f, SERVER_FORMAT);
    for (const { name, enc } of ENCODERS) {
      const n = await wireBytes(enc, f, SERVER_FORMAT);
      assert.ok(n < raw * 1.02, `${name}: ${n} vs raw ${raw}`);
    }
  });
});

describe('Hextile specifics', () => {
  it('sends noise as raw tiles and a two-colour tile with a foreground', () => {
    const pf = SERVER_FORMAT;
    const n = encodeHextile(noise(32, 16), { x: 0, y: 0, w: 32, h: 16 }, pf, { compressLevel: 2 })[0]!.pieces[0]!.bytes;
    assert.equal(n.length, 2 * (1 + 16 * 16 * 4));
    assert.equal(n[0], 1);
    const f = solid(16, 16, 0xffffff);
    f.pixels[5 * 16 + 3] = 0;
    const t = encodeHextile(f, { x: 0, y: 0, w: 16, h: 16 }, pf, { compressLevel: 2 })[0]!.pieces[0]!.bytes;
    // mask (bg | fg | any), bg, fg, count 1, subrect at (3,5) 1×1
    assert.deepEqual([...t], [2 | 4 | 8, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1, 0x35, 0x00]);
  });
});

describe('Tight specifics', () => {
  it('picks fill, mono, indexed and copy by content, splits wide rectangles and sends short data raw', async () => {
    const pf = FORMATS[1]!.pf;
    const cases: [string, Frame, keyof Decoders['tight']['stats']][] = [
      ['solid', solid(300, 100), 'fill'],
      ['text', text(300, 100), 'mono'],
      ['16 colours', colours16(300, 100), 'indexed'],
      ['photo', photo(300, 100), 'copy'],
    ];
    for (const [what, f, kind] of cases) {
      const decoders = new Decoders();
      const streams = new ZlibStreams(2);
      await send(encodeTight, f, full(f), pf, streams, new Client(f.width, f.height, pf, decoders));
      const stats = decoders.tight.stats;
      assert.ok(stats[kind] > 0, `${what}: ${JSON.stringify(stats)}`);
      decoders.close();
      streams.close();
    }
    const wide = encodeTight(solid(5000, 3), { x: 0, y: 0, w: 5000, h: 3 }, pf, { compressLevel: 2 });
    assert.ok(wide.length >= 3 && wide.every((er) => er.rect.w <= 2048));
    // An 8×8 two-colour rect: 8 bytes of 1-bit rows, below 12 → uncompressed.
    const tiny = solid(8, 8, 0);
    tiny.pixels[9] = 0xffffff;
    const decoders = new Decoders();
    const streams = new ZlibStreams(2);
    await send(encodeTight, tiny, full(tiny), pf, streams, new Client(8, 8, pf, decoders));
    assert.equal(decoders.tight.stats.uncompressed, 1);
    assert.equal(streams.streamCount, 0, 'no stream touched');
    decoders.close();
    streams.close();
  });

  it('sends large solid areas around text as Fill, covering the rectangle exactly once', async () => {
    // A terminal-like frame: text in the top-left, a dark background elsewhere, wider than 2048.
    const f = solid(2600, 200, 0x1e1e1e);
    const t = text(300, 90, 31, 0x1e1e1e, 0xd0d0d0);
    for (let y = 0; y < t.height; y++) f.pixels.set(t.pixels.subarray(y * t.width, (y + 1) * t.width), (y + 7) * f.width + 5);
    f.pixels[150 * f.width + 2599] = 0xff0000; // a lone pixel at the right edge
    for (const { pf } of [FORMATS[1]!, FORMATS[6]!, FORMATS.at(-1)!]) {
      for (const rect of [full(f), { x: 3, y: 2, w: 2590, h: 190 }]) {
        const ers = encodeTight(f, rect, pf, { compressLevel: 2 });
        assert.ok(ers.every((er) => er.rect.w <= 2048 && er.rect.w > 0 && er.rect.h > 0));
        const fills = ers.filter((er) => er.pieces[0]!.bytes[0] === 0x80);
        const filled = fills.reduce((s, er) => s + er.rect.w * er.rect.h, 0);
        assert.ok(filled > rect.w * rect.h * 0.8, `only ${filled} pixels filled`);
        const decoders = new Decoders();
        const streams = new ZlibStreams(2);
        const client = new Client(f.width, f.height, pf, decoders);
        await send(encodeTight, f, rect, pf, streams, client);
        assertShows(client, f, rect, pf, `solid areas ${rect.w}x${rect.h}`);
        decoders.close();
        streams.close();
      }
    }
  });

  it('never uses JPEG unless a lossy hook is installed and the client sent a quality level', () => {
    const f = photo(128, 128);
    const calls: number[] = [];
    const lossy = makeTightEncoder({
      lossy: {
        jpeg: (rgb, w, h, q) => {
          calls.push(q);
          assert.equal(rgb.length, w * h * 3);
          return Uint8Array.of(0xff, 0xd8, 0xff, 0xd9);
        },
      },
    });
    const controls = (ers: EncodedRect[]) => ers.map((er) => er.pieces[0]!.bytes[0]! >> 4);
    assert.ok(!controls(encodeTight(f, full(f), SERVER_FORMAT, { compressLevel: 2, quality: 6 })).includes(9));
    assert.ok(!controls(lossy(f, full(f), SERVER_FORMAT, { compressLevel: 2 })).includes(9));
    assert.equal(calls.length, 0);
    const ers = lossy(f, full(f), SERVER_FORMAT, { compressLevel: 2, quality: 6 });
    assert.ok(controls(ers).every((c) => c === 9));
    assert.deepEqual([...ers[0]!.pieces[0]!.bytes], [0x90, 4]);
    assert.ok(calls.length > 0 && calls.every((q) => q === 6));
    // 8 bpp clients never get JPEG.
    assert.ok(!controls(lossy(f, full(f), FORMATS.at(-1)!.pf, { compressLevel: 2, quality: 6 })).includes(9));
  });
});

describe('ZRLE specifics', () => {
  it('a zero-history inflater decodes the first rectangle (the stream starts with a zlib header)', async () => {
    const streams = new ZlibStreams(2);
    const er = encodeZrle(text(64, 64), { x: 0, y: 0, w: 64, h: 64 }, SERVER_FORMAT, { compressLevel: 2 })[0]!;
    const payload = concat(await finishRect(er, streams));
    assert.equal(payload[4], 0x78); // zlib CMF: deflate, 32 KiB window
    const z = new Inflater();
    const plain = await z.push(payload.subarray(4));
    assert.ok(plain.length > 0);
    z.close();
    streams.close();
  });
});
