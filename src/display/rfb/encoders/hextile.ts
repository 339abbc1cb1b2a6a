// Hextile (encoding 5): 16×16 tiles, each either raw or a background plus
// subrectangles (one foreground colour, or coloured subrects). Background and
// foreground carry over between tiles; neither survives a Raw tile, and the
// foreground does not survive a SubrectsColoured tile (rfbproto). Per tile the
// smaller of the raw and subrect forms is sent (raw on a tie: cheaper to decode).
import { makePixelPacker } from '../pixel-format.js';
import type { EncodedRect, Encoder } from '../types.js';
import { ByteSink, isEmpty, rectValues } from './common.js';

export const HEXTILE = 5;

const RAW = 1;
const BACKGROUND = 2;
const FOREGROUND = 4;
const ANY_SUBRECTS = 8;
const SUBRECTS_COLOURED = 16;

const TRACKED = 4; // colours counted exactly per tile (to pick the background); slot 4 collects the rest
const tileColours = new Uint32Array(TRACKED + 1);
const tileCounts = new Int32Array(TRACKED + 1);
const covered = new Uint8Array(256);
const subrects = new Uint8Array(255 * 6);

export const encodeHextile: Encoder = (frame, rect, pf): EncodedRect[] => {
  if (isEmpty(rect)) return [];
  const vals = rectValues(frame, rect, pf);
  const packer = makePixelPacker(pf);
  const bpp = packer.bytesPerPixel;
  const W = rect.w;
  const H = rect.h;
  const out = new ByteSink(((W * H * bpp) >> 3) + 256);
  let bgValid = false;
  let fgValid = false;
  let prevBg = 0;
  let prevFg = 0;

  for (let ty = 0; ty < H; ty += 16) {
    const th = Math.min(16, H - ty);
    for (let tx = 0; tx < W; tx += 16) {
      const tw = Math.min(16, W - tx);
      const base = ty * W + tx;

      // Colour census: up to four colours counted exactly, the rest lumped together;
      // also how often a pixel differs from its left and upper neighbours.
      let last = vals[base]!;
      let lastSlot = 0;
      let nc = 1;
      let overflow = false;
      let hChanges = 0;
      let vChanges = 0;
      tileColours[0] = last;
      tileCounts[0] = 0;
      for (let r = 0; r < th; r++) {
        const row = base + r * W;
        const above = r > 0 ? row - W : row;
        for (let c = 0; c < tw; c++) {
          const v = vals[row + c]!;
          if (v !== vals[above + c]) vChanges++;
          if (v === last) {
            tileCounts[lastSlot]!++;
            continue;
          }
          hChanges++;
          last = v;
          let j = 0;
          while (j < nc && tileColours[j] !== v) j++;
          if (j < nc) {
            lastSlot = j;
            tileCounts[j]!++;
          } else if (nc < TRACKED) {
            tileColours[nc] = v;
            tileCounts[nc] = 1;
            lastSlot = nc++;
          } else {
            overflow = true;
            lastSlot = TRACKED;
            tileCounts[TRACKED]!++;
          }
        }
      }

      let bgSlot = 0;
      for (let j = 1; j < nc; j++) if (tileCounts[j]! > tileCounts[bgSlot]!) bgSlot = j;
      const bg = tileColours[bgSlot]!;
      const bgSpecified = !bgValid || bg !== prevBg;

      if (nc === 1 && !overflow) {
        out.u8(bgSpecified ? BACKGROUND : 0);
        if (bgSpecified) {
          const at = out.reserve(bpp);
          out.len = packer.writeValue(out.buf, at, bg);
        }
        prevBg = bg;
        bgValid = true;
        continue;
      }

      const twoColour = nc === 2 && !overflow;
      const fg = twoColour ? tileColours[1 - bgSlot]! : 0;
      const fgSpecified = twoColour && (!fgValid || fg !== prevFg);
      const rawSize = 1 + tw * th * bpp;
      const header = 2 + (bgSpecified ? bpp : 0) + (fgSpecified ? bpp : 0);
      const per = twoColour ? 2 : bpp + 2;
      // Photo-like tiles (many colours, changing both along rows and down columns) would
      // need more subrects than raw can afford: skip the search.
      const busy = overflow && 2 * hChanges > tw * th && 2 * vChanges > tw * th;
      const maxSubrects = busy ? 0 : Math.min(255, Math.floor((rawSize - 1 - header) / per));

      // Subrectangles of non-background pixels, greedy in scan order; each grows
      // right-then-down or down-then-right, whichever covers more.
      covered.fill(0, 0, tw * th);
      let n = 0;
      let sp = 0;
      let fits = maxSubrects > 0;
      scan: for (let y = 0; y < th && fits; y++) {
        const row = base + y * W;
        for (let x = 0; x < tw; x++) {
          if (covered[y * tw + x] !== 0) continue;
          const v = vals[row + x]!;
          if (v === bg) continue;
          if (n === maxSubrects) {
            fits = false;
            break scan;
          }
          let x2 = x + 1;
          while (x2 < tw && vals[row + x2] === v) x2++;
          let y2 = y + 1;
          down: while (y2 < th) {
            const r2 = base + y2 * W;
            for (let k = x; k < x2; k++) if (vals[r2 + k] !== v) break down;
            y2++;
          }
          let yv = y + 1;
          while (yv < th && vals[base + yv * W + x] === v) yv++;
          let xv = x + 1;
          right: while (xv < tw) {
            for (let k = y; k < yv; k++) if (vals[base + k * W + xv] !== v) break right;
            xv++;
          }
          if ((xv - x) * (yv - y) > (x2 - x) * (y2 - y)) {
            x2 = xv;
            y2 = yv;
          }
          if (!twoColour) sp = packer.writeValue(subrects, sp, v);
          subrects[sp++] = (x << 4) | y;
          subrects[sp++] = ((x2 - x - 1) << 4) | (y2 - y - 1);
          n++;
          for (let k = y; k < y2; k++) for (let j = k * tw + x, e = k * tw + x2; j < e; j++) covered[j] = 1;
        }
      }

      if (!fits) {
        out.u8(RAW);
        let at = out.reserve(tw * th * bpp);
        for (let r = 0; r < th; r++) at = packer.writeValues(out.buf, at, vals, base + r * W, tw);
        out.len = at;
        bgValid = false;
        fgValid = false;
        continue;
      }

      let mask = ANY_SUBRECTS;
      if (bgSpecified) mask |= BACKGROUND;
      if (fgSpecified) mask |= FOREGROUND;
      if (!twoColour) mask |= SUBRECTS_COLOURED;
      let at = out.reserve(header + sp);
      out.buf[at++] = mask;
      if (bgSpecified) at = packer.writeValue(out.buf, at, bg);
      if (fgSpecified) at = packer.writeValue(out.buf, at, fg);
      out.buf[at++] = n;
      out.buf.set(subrects.subarray(0, sp), at);
      out.len = at + sp;
      prevBg = bg;
      bgValid = true;
      if (twoColour) {
        prevFg = fg;
        fgValid = true;
      } else fgValid = false;
    }
  }
  return [{ rect: { ...rect }, encoding: HEXTILE, pieces: [{ kind: 'raw', bytes: out.bytes() }] }];
};
