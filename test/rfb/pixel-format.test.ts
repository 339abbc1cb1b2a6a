// PIXEL_FORMAT parsing and validation, PIXEL/CPIXEL/TPIXEL byte layouts and
// bulk conversion against the independent reference conversion.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  convertRect,
  cpixelBytes,
  encodePixelFormat,
  makeCPixelPacker,
  makePixelPacker,
  makeTPixelPacker,
  parsePixelFormat,
  pixelFormatKey,
  SERVER_FORMAT,
  toClientValues,
  tpixelBytes,
  validatePixelFormat,
  writeCPixel,
  writeTPixel,
} from '../../src/display/rfb/pixel-format.js';
import type { PixelFormat } from '../../src/display/rfb/types.js';
import { FORMATS, gradient, mixed, noise } from './content.js';
import { decodeRaw, expectedPixels } from './decoders.js';

const fmt = (over: Partial<PixelFormat>): PixelFormat => ({ ...SERVER_FORMAT, ...over });

describe('PIXEL_FORMAT', () => {
  it('parses the wire structure and encodes it back', () => {
    // noVNC's SetPixelFormat body: 32/24, little-endian, true colour, 255 ×3, shifts 0/8/16.
    const wire = Uint8Array.of(0xaa, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0);
    const pf = parsePixelFormat(wire, 1);
    assert.deepEqual(pf, {
      bitsPerPixel: 32,
      depth: 24,
      bigEndian: false,
      trueColour: true,
      redMax: 255,
      greenMax: 255,
      blueMax: 255,
      redShift: 0,
      greenShift: 8,
      blueShift: 16,
    });
    assert.deepEqual(encodePixelFormat(pf), wire.subarray(1));
    assert.deepEqual(parsePixelFormat(encodePixelFormat(SERVER_FORMAT), 0), SERVER_FORMAT);
    assert.deepEqual([...encodePixelFormat(SERVER_FORMAT)], [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    assert.throws(() => parsePixelFormat(wire, 2), RangeError);
    const be = parsePixelFormat(Uint8Array.of(16, 15, 1, 1, 0, 31, 0, 31, 0, 31, 10, 5, 0, 0, 0, 0), 0);
    assert.equal(be.bigEndian, true);
    assert.equal(be.redMax, 31);
  });

  it('accepts the formats real clients send', () => {
    for (const { name, pf } of FORMATS) assert.equal(validatePixelFormat(pf), null, name);
    // TigerVNC's low-bandwidth 8-bit formats.
    for (const [maxes, shifts] of [
      [
        [7, 7, 3],
        [5, 2, 0],
      ],
      [
        [3, 3, 3],
        [4, 2, 0],
      ],
      [
        [1, 1, 1],
        [2, 1, 0],
      ],
    ] as const)
      assert.equal(
        validatePixelFormat(
          fmt({
            bitsPerPixel: 8,
            depth: 8,
            redMax: maxes[0],
            greenMax: maxes[1],
            blueMax: maxes[2],
            redShift: shifts[0],
            greenShift: shifts[1],
            blueShift: shifts[2],
          }),
        ),
        null,
      );
  });

  it('rejects absurd formats with a reason', () => {
    const bad: [string, Partial<PixelFormat>][] = [
      ['bpp 24', { bitsPerPixel: 24 as 32 }],
      ['bpp 0', { bitsPerPixel: 0 as 32 }],
      ['depth 0', { depth: 0 }],
      ['depth > bpp', { bitsPerPixel: 16, depth: 24, redMax: 31, greenMax: 63, blueMax: 31, redShift: 11, greenShift: 5, blueShift: 0 }],
      ['colour map', { trueColour: false }],
      ['max not 2^n-1', { redMax: 100 }],
      ['max 0', { greenMax: 0 }],
      ['shift ≥ bpp', { blueShift: 32 }],
      ['channel past bpp', { redShift: 25 }],
      ['overlap', { greenShift: 4 }],
      ['8 bpp with 8-bit channels', { bitsPerPixel: 8, depth: 8 }],
    ];
    for (const [what, over] of bad) {
      const why = validatePixelFormat(fmt(over));
      assert.equal(typeof why, 'string', what);
      assert.ok(why!.length > 5, what);
    }
    assert.match(validatePixelFormat(fmt({ trueColour: false }))!, /colour.map/i);
  });

  it('keys formats by what affects the bytes', () => {
    const a = fmt({ bitsPerPixel: 8, depth: 8, redMax: 7, greenMax: 7, blueMax: 3, redShift: 0, greenShift: 3, blueShift: 6 });
    assert.equal(pixelFormatKey(a), pixelFormatKey({ ...a, bigEndian: true }), 'byte order is irrelevant at 8 bpp');
    assert.notEqual(pixelFormatKey(SERVER_FORMAT), pixelFormatKey(fmt({ bigEndian: true })));
    assert.notEqual(pixelFormatKey(SERVER_FORMAT), pixelFormatKey(fmt({ depth: 32 })));
    assert.notEqual(pixelFormatKey(SERVER_FORMAT), pixelFormatKey(FORMATS[1]!.pf));
  });
});

describe('pixel byte layouts', () => {
  const rgb = 0x123456;
  const write = (f: (d: Uint8Array, at: number) => number, n: number): number[] => {
    const d = new Uint8Array(n + 2);
    assert.equal(f(d, 1), 1 + n);
    assert.equal(d[0], 0);
    assert.equal(d[n + 1], 0);
    return [...d.subarray(1, 1 + n)];
  };

  it('PIXEL follows bpp and byte order', () => {
    assert.deepEqual(
      write((d, at) => makePixelPacker(SERVER_FORMAT).write(d, at, rgb), 4),
      [0x56, 0x34, 0x12, 0],
    );
    assert.deepEqual(
      write((d, at) => makePixelPacker(fmt({ bigEndian: true })).write(d, at, rgb), 4),
      [0, 0x12, 0x34, 0x56],
    );
    assert.deepEqual(
      write((d, at) => makePixelPacker(FORMATS[1]!.pf).write(d, at, rgb), 4),
      [0x12, 0x34, 0x56, 0],
    );
    const p565 = FORMATS.find((f) => f.name.startsWith('16-bit'))!.pf;
    // r 0x12>>3 = 2, g 0x34>>2 = 13, b 0x56>>3 = 10 → 2<<11 | 13<<5 | 10 = 0x11aa
    assert.equal(makePixelPacker(p565).value(rgb), 0x11aa);
    assert.deepEqual(
      write((d, at) => makePixelPacker(p565).write(d, at, rgb), 2),
      [0xaa, 0x11],
    );
    const bgr233 = FORMATS.at(-1)!.pf;
    // r 0x12>>5 = 0, g 0x34>>5 = 1, b 0x56>>6 = 1 → 0 | 1<<3 | 1<<6
    assert.deepEqual(
      write((d, at) => makePixelPacker(bgr233).write(d, at, rgb), 1),
      [0x48],
    );
  });

  it('CPIXEL is 3 bytes at 32/≤24 when the colour bits fit the low (preferred) or high three bytes', () => {
    const cases: [string, PixelFormat, number[]][] = [
      ['LE low', SERVER_FORMAT, [0x56, 0x34, 0x12]],
      ['BE low', fmt({ bigEndian: true }), [0x12, 0x34, 0x56]],
      ['LE high', fmt({ redShift: 24, greenShift: 16, blueShift: 8 }), [0x56, 0x34, 0x12]],
      ['BE high', fmt({ bigEndian: true, redShift: 24, greenShift: 16, blueShift: 8 }), [0x12, 0x34, 0x56]],
      ['noVNC', FORMATS[1]!.pf, [0x12, 0x34, 0x56]],
      // Both would fit (bits 8..23 only): the low three bytes by convention.
      ['LE middle', fmt({ depth: 16, redMax: 31, greenMax: 63, blueMax: 31, redShift: 19, greenShift: 13, blueShift: 8 }), [0x00, 0xaa, 0x11]],
      ['BE middle', fmt({ bigEndian: true, depth: 16, redMax: 31, greenMax: 63, blueMax: 31, redShift: 19, greenShift: 13, blueShift: 8 }), [0x11, 0xaa, 0x00]],
    ];
    for (const [what, pf, bytes] of cases) {
      assert.equal(validatePixelFormat(pf), null, what);
      assert.equal(cpixelBytes(pf), 3, what);
      assert.deepEqual(
        write((d, at) => writeCPixel(pf, d, at, rgb), 3),
        bytes,
        what,
      );
    }
    assert.equal(cpixelBytes(fmt({ depth: 32 })), 4);
    assert.equal(cpixelBytes(fmt({ redShift: 24, greenShift: 8, blueShift: 0 })), 4, 'bits in bytes 0 and 3');
    assert.equal(cpixelBytes(FORMATS.find((f) => f.name.startsWith('16-bit'))!.pf), 2);
    assert.equal(cpixelBytes(FORMATS.at(-1)!.pf), 1);
    assert.deepEqual(
      write((d, at) => makeCPixelPacker(fmt({ depth: 32 })).write(d, at, rgb), 4),
      [0x56, 0x34, 0x12, 0],
    );
  });

  it('TPIXEL is R, G, B at 32/24 with 8-bit channels, whatever the shifts and byte order', () => {
    for (const pf of [SERVER_FORMAT, FORMATS[1]!.pf, fmt({ bigEndian: true }), fmt({ redShift: 24, greenShift: 16, blueShift: 8 })]) {
      assert.equal(tpixelBytes(pf), 3);
      assert.deepEqual(
        write((d, at) => writeTPixel(pf, d, at, rgb), 3),
        [0x12, 0x34, 0x56],
      );
    }
    assert.equal(tpixelBytes(fmt({ depth: 32 })), 4);
    assert.equal(tpixelBytes(FORMATS.find((f) => f.name.startsWith('16-bit'))!.pf), 2);
    assert.deepEqual(
      write((d, at) => makeTPixelPacker(fmt({ depth: 32 })).write(d, at, rgb), 4),
      [0x56, 0x34, 0x12, 0],
    );
  });
});

describe('bulk conversion', () => {
  it('convertRect and toClientValues match the reference in every format, aligned or not', () => {
    const frames = [gradient(67, 41), noise(33, 20), mixed(130, 90)];
    for (const { name, pf } of FORMATS) {
      const bpp = pf.bitsPerPixel / 8;
      for (const f of frames) {
        for (const rect of [
          { x: 0, y: 0, w: f.width, h: f.height },
          { x: 5, y: 3, w: f.width - 9, h: f.height - 4 },
        ]) {
          const want = expectedPixels(f, rect, pf);
          assert.deepEqual(toClientValues(f, rect, pf), want, `${name} values`);
          for (const at of [0, 1, 3]) {
            const dst = new Uint8Array(at + rect.w * rect.h * bpp + 1);
            assert.equal(convertRect(f, rect, pf, dst, at), rect.w * rect.h * bpp);
            assert.deepEqual(decodeRaw(dst.subarray(at, at + rect.w * rect.h * bpp), rect, pf), want, `${name} at ${at}`);
            assert.equal(dst[dst.length - 1], 0, 'no write past the end');
          }
          const v = makePixelPacker(pf).value(f.pixels[rect.y * f.width + rect.x]!);
          assert.equal(v, want[0]);
        }
      }
    }
  });

  it('refuses rectangles outside the frame and short destinations', () => {
    const f = gradient(10, 10);
    assert.throws(() => convertRect(f, { x: 8, y: 0, w: 3, h: 1 }, SERVER_FORMAT, new Uint8Array(12)), RangeError);
    assert.throws(() => convertRect(f, { x: 0, y: 0, w: 3, h: 1 }, SERVER_FORMAT, new Uint8Array(11)), RangeError);
    assert.throws(() => toClientValues(f, { x: -1, y: 0, w: 3, h: 1 }, SERVER_FORMAT), RangeError);
  });
});
