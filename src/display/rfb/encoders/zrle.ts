// ZRLE (encoding 16): 64×64 tiles, each sent as raw CPIXELs, a solid colour, a
// packed palette (2–16 colours), plain RLE or palette RLE (2–127 colours),
// whichever is smallest before compression. The whole rectangle's tile stream
// is one zlib piece for the client's single persistent ZRLE stream, framed by
// a U32 length.
import { makeCPixelPacker } from '../pixel-format.js';
import type { EncodedRect, Encoder } from '../types.js';
import { ByteSink, isEmpty, rectValues } from './common.js';

export const ZRLE = 16;

const TILE = 64;
const MAX_PALETTE = 127;
const HASH_SIZE = 512; // power of two, > 4 × MAX_PALETTE so probes stay short

// Per-tile scratch (a tile has at most 4096 pixels and 4096 runs).
const hashSlots = new Uint8Array(HASH_SIZE); // palette index + 1, 0 = empty
const palette = new Uint32Array(MAX_PALETTE);
const paletteHash = new Uint16Array(MAX_PALETTE);
const pixelIndex = new Uint8Array(TILE * TILE);
const runValue = new Uint32Array(TILE * TILE);
const runIndex = new Uint8Array(TILE * TILE);
const runLength = new Uint16Array(TILE * TILE);

enum Sub {
  Raw = 0,
  Solid = 1,
  Packed = 2,
  PlainRle = 128,
  PaletteRle = 129,
}

export const encodeZrle: Encoder = (frame, rect, pf): EncodedRect[] => {
  if (isEmpty(rect)) return [];
  const vals = rectValues(frame, rect, pf);
  const packer = makeCPixelPacker(pf);
  const cp = packer.bytesPerPixel;
  const W = rect.w;
  const H = rect.h;
  const out = new ByteSink(((W * H * cp) >> 2) + 1024);

  for (let ty = 0; ty < H; ty += TILE) {
    const th = Math.min(TILE, H - ty);
    for (let tx = 0; tx < W; tx += TILE) {
      const tw = Math.min(TILE, W - tx);
      const base = ty * W + tx;

      // One pass: palette (until it overflows), runs (which may span rows), RLE sizes.
      let np = 0;
      let overflow = false;
      let nRuns = 0;
      let plainRle = 0;
      let paletteRle = 0;
      let runV = vals[base]!;
      let runL = 0;
      let idx = 0;
      {
        // The first colour always enters the palette.
        const h = Math.imul(runV, 0x9e3779b1) >>> 23;
        hashSlots[h] = 1;
        palette[0] = runV;
        paletteHash[0] = h;
        np = 1;
      }
      for (let r = 0, p = 0; r < th; r++) {
        const row = base + r * W;
        for (let c = 0; c < tw; c++, p++) {
          const v = vals[row + c]!;
          if (v !== runV) {
            const lenBytes = (((runL - 1) / 255) | 0) + 1;
            runValue[nRuns] = runV;
            runIndex[nRuns] = idx;
            runLength[nRuns++] = runL;
            plainRle += cp + lenBytes;
            paletteRle += runL === 1 ? 1 : 1 + lenBytes;
            runV = v;
            runL = 0;
            if (!overflow) {
              let h = Math.imul(v, 0x9e3779b1) >>> 23;
              for (;;) {
                const e = hashSlots[h]!;
                if (e === 0) {
                  if (np === MAX_PALETTE) {
                    overflow = true;
                    break;
                  }
                  hashSlots[h] = np + 1;
                  palette[np] = v;
                  paletteHash[np] = h;
                  idx = np++;
                  break;
                }
                if (palette[e - 1] === v) {
                  idx = e - 1;
                  break;
                }
                h = (h + 1) & (HASH_SIZE - 1);
              }
            }
          }
          runL++;
          pixelIndex[p] = idx;
        }
      }
      {
        const lenBytes = (((runL - 1) / 255) | 0) + 1;
        runValue[nRuns] = runV;
        runIndex[nRuns] = idx;
        runLength[nRuns++] = runL;
        plainRle += cp + lenBytes;
        paletteRle += runL === 1 ? 1 : 1 + lenBytes;
      }
      for (let i = 0; i < np; i++) hashSlots[paletteHash[i]!] = 0;

      // Pick the smallest form.
      let mode = Sub.Raw;
      let best = tw * th * cp;
      let bits = 0;
      if (!overflow) {
        if (np === 1) mode = Sub.Solid;
        else {
          if (np <= 16) {
            bits = np === 2 ? 1 : np <= 4 ? 2 : 4;
            const size = np * cp + th * ((tw * bits + 7) >> 3);
            if (size < best) {
              best = size;
              mode = Sub.Packed;
            }
          }
          if (np * cp + paletteRle < best) {
            best = np * cp + paletteRle;
            mode = Sub.PaletteRle;
          }
        }
      }
      if (mode !== Sub.Solid && plainRle < best) {
        best = plainRle;
        mode = Sub.PlainRle;
      }

      switch (mode) {
        case Sub.Solid: {
          const at = out.reserve(1 + cp);
          out.buf[at] = 1;
          out.len = packer.writeValue(out.buf, at + 1, runV);
          break;
        }
        case Sub.Raw: {
          let at = out.reserve(1 + tw * th * cp);
          out.buf[at++] = 0;
          for (let r = 0; r < th; r++) at = packer.writeValues(out.buf, at, vals, base + r * W, tw);
          out.len = at;
          break;
        }
        case Sub.Packed: {
          let at = out.reserve(1 + best);
          const buf = out.buf;
          buf[at++] = np;
          at = packer.writeValues(buf, at, palette, 0, np);
          const perByte = 8 / bits;
          for (let r = 0, p = 0; r < th; r++) {
            let acc = 0;
            let nIn = 0;
            for (let c = 0; c < tw; c++) {
              acc = (acc << bits) | pixelIndex[p++]!;
              if (++nIn === perByte) {
                buf[at++] = acc;
                acc = 0;
                nIn = 0;
              }
            }
            if (nIn !== 0) buf[at++] = acc << (8 - nIn * bits);
          }
          out.len = at;
          break;
        }
        case Sub.PlainRle: {
          let at = out.reserve(1 + best);
          const buf = out.buf;
          buf[at++] = 128;
          for (let i = 0; i < nRuns; i++) {
            at = packer.writeValue(buf, at, runValue[i]!);
            at = writeRunLength(buf, at, runLength[i]!);
          }
          out.len = at;
          break;
        }
        case Sub.PaletteRle: {
          let at = out.reserve(1 + best);
          const buf = out.buf;
          buf[at++] = 128 + np;
          at = packer.writeValues(buf, at, palette, 0, np);
          for (let i = 0; i < nRuns; i++) {
            const len = runLength[i]!;
            if (len === 1) {
              buf[at++] = runIndex[i]!;
              continue;
            }
            buf[at++] = runIndex[i]! | 128;
            at = writeRunLength(buf, at, len);
          }
          out.len = at;
          break;
        }
      }
    }
  }
  return [{ rect: { ...rect }, encoding: ZRLE, pieces: [{ kind: 'zlib', stream: 0, framing: 'u32', bytes: out.bytes() }] }];
};

/** ZRLE's run length: (length - 1) as a sum of bytes, 255 meaning "more follows". */
function writeRunLength(buf: Uint8Array, at: number, length: number): number {
  let l = length - 1;
  while (l >= 255) {
    buf[at++] = 255;
    l -= 255;
  }
  buf[at++] = l;
  return at;
}
