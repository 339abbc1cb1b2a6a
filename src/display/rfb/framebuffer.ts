// The shadow of a guest plane that RFB viewers are served from. Each refresh
// compares the guest's plane with the shadow copy row by row (memcmp) and,
// in rows that differ, tile by tile; changed tiles are copied into the shadow
// and converted into the canonical 0x00RRGGBB frame the encoders read. Only
// runs while viewers want updates, so an unwatched VM costs nothing.
import { rowToXrgb } from '../convert.js';
import { bytesPerPixel, type DisplaySource, type PlaneInfo, PlaneType } from '../plane.js';
import type { Frame, Rect } from './types.js';

/** Damage granularity: small enough that a moving bar resends little more than itself. */
export const TILE = 16;

/** A vertical scroll found in the new frame: rows [srcY, srcY+h) of the old frame now sit at dstY. */
export interface ScrollCopy {
  srcY: number;
  dstY: number;
  h: number;
  width: number;
}

export interface RefreshResult {
  /** The plane geometry changed (or appeared/disappeared): everything is new. */
  resized: boolean;
  /** A scroll applied to the shadow before `damage` was computed (CopyRect for viewers in sync). */
  copy?: ScrollCopy;
  /** Changed tiles as rectangles, merged along rows. */
  damage: Rect[];
}

/** Scroll detection runs only when at least this share of rows changed. */
const SCROLL_MIN_ROWS = 0.25;
/** ... and reports a scroll only if the moved band is at least this tall. */
const SCROLL_MIN_BAND = 64;

export class ShadowFramebuffer {
  frame: Frame = { width: 0, height: 0, pixels: new Uint32Array(0) };
  /** Bumped whenever the frame changes; encoders' results are cached per generation. */
  generation = 0;
  private plane: PlaneInfo | null = null;
  private shadow: Buffer = Buffer.alloc(0);
  private rowBytes = 0;

  constructor(readonly source: DisplaySource) {}

  get width(): number {
    return this.frame.width;
  }

  get height(): number {
    return this.frame.height;
  }

  /** The plane currently shadowed (null when the guest shows nothing). */
  get current(): PlaneInfo | null {
    return this.plane;
  }

  refresh(): RefreshResult {
    const p = this.source.queryPlane(PlaneType.PRIMARY);
    const fb = this.source.framebuffer.bytes;
    const prev = this.plane;
    const geometryChanged = !prev || !p.drm_format || prev.drm_format !== p.drm_format || prev.width !== p.width || prev.height !== p.height;
    if (!p.drm_format) {
      // Nothing shown: viewers get a small black screen until the guest sets a mode.
      if (prev || this.frame.width === 0) {
        this.plane = null;
        this.frame = { width: 640, height: 480, pixels: new Uint32Array(640 * 480) };
        this.generation++;
        return { resized: true, damage: [{ x: 0, y: 0, w: 640, h: 480 }] };
      }
      return { resized: false, damage: [] };
    }
    if (geometryChanged) {
      this.plane = p;
      this.rowBytes = p.width * bytesPerPixel(p.drm_format);
      this.shadow = Buffer.alloc(this.rowBytes * p.height);
      this.frame = { width: p.width, height: p.height, pixels: new Uint32Array(p.width * p.height) };
      for (let y = 0; y < p.height; y++) {
        const at = p.offset + y * p.stride;
        this.shadow.set(fb.subarray(at, at + this.rowBytes), y * this.rowBytes);
        rowToXrgb(p.drm_format, fb, at, p.width, this.frame.pixels, y * p.width);
      }
      this.generation++;
      return { resized: true, damage: [{ x: 0, y: 0, w: p.width, h: p.height }] };
    }
    // Same geometry; a flip (new offset or stride) is just more damage.
    this.plane = p;
    const copy = this.detectScroll(p, fb);
    return copy ? { resized: false, copy, damage: this.compare(p, fb) } : { resized: false, damage: this.compare(p, fb) };
  }

  /**
   * Looks for a vertical scroll (terminals, log viewers): if most rows changed and a tall band of
   * the new frame equals the old shadow shifted by dy, the shadow is shifted first so only the
   * rows that are really new remain as damage, and viewers can be sent a CopyRect.
   */
  private detectScroll(p: PlaneInfo, fb: Uint8Array): ScrollCopy | undefined {
    const H = p.height;
    const rb = this.rowBytes;
    const vram = Buffer.from(fb.buffer, fb.byteOffset, fb.byteLength);
    const rowNew = (y: number) => p.offset + y * p.stride;
    const same = (yNew: number, yOld: number) => vram.compare(this.shadow, yOld * rb, yOld * rb + rb, rowNew(yNew), rowNew(yNew) + rb) === 0;
    // Cheap test first: sample rows; most must have changed.
    let changed = 0;
    const step = Math.max(1, Math.floor(H / 32));
    for (let y = 0; y < H; y += step) if (!same(y, y)) changed++;
    if (changed < Math.ceil(H / step) * SCROLL_MIN_ROWS) return undefined;
    // Anchor: a changed row in the middle that is not blank-like (compare with its neighbour row).
    let anchor = -1;
    for (let k = 0; k < H / 2 && anchor < 0; k += 7) {
      for (const y of [Math.floor(H / 2) + k, Math.floor(H / 2) - k]) {
        if (y > 0 && y < H - 1 && !same(y, y) && vram.compare(vram, rowNew(y - 1), rowNew(y - 1) + rb, rowNew(y), rowNew(y) + rb) !== 0) {
          anchor = y;
          break;
        }
      }
    }
    if (anchor < 0) return undefined;
    // Candidate shifts: old rows equal to the anchor's new content.
    let best: { dy: number; start: number; len: number } | null = null;
    let tried = 0;
    for (let yOld = 0; yOld < H && tried < 8; yOld++) {
      if (yOld === anchor || !same(anchor, yOld)) continue;
      tried++;
      const dy = yOld - anchor;
      let start = anchor;
      while (start - 1 >= 0 && start - 1 + dy >= 0 && start - 1 + dy < H && same(start - 1, start - 1 + dy)) start--;
      let end = anchor + 1;
      while (end < H && end + dy < H && end + dy >= 0 && same(end, end + dy)) end++;
      if (!best || end - start > best.len) best = { dy, start, len: end - start };
    }
    if (!best || best.len < SCROLL_MIN_BAND) return undefined;
    const { dy, start, len } = best;
    // Shift the shadow and the canonical frame as the viewers will (memmove semantics).
    this.shadow.copy(this.shadow, start * rb, (start + dy) * rb, (start + dy + len) * rb);
    const W = p.width;
    this.frame.pixels.copyWithin(start * W, (start + dy) * W, (start + dy + len) * W);
    this.generation++;
    return { srcY: start + dy, dstY: start, h: len, width: W };
  }

  private compare(p: PlaneInfo, fb: Uint8Array): Rect[] {
    const bpp = bytesPerPixel(p.drm_format);
    const tilesX = Math.ceil(p.width / TILE);
    const tileBytes = TILE * bpp;
    const vram = Buffer.from(fb.buffer, fb.byteOffset, fb.byteLength);
    const damage: Rect[] = [];
    const dirtyCols = new Uint8Array(tilesX);
    for (let ty = 0; ty * TILE < p.height; ty++) {
      const y0 = ty * TILE;
      const y1 = Math.min(p.height, y0 + TILE);
      dirtyCols.fill(0);
      let any = false;
      for (let y = y0; y < y1; y++) {
        const src = p.offset + y * p.stride;
        const sh = y * this.rowBytes;
        if (vram.compare(this.shadow, sh, sh + this.rowBytes, src, src + this.rowBytes) === 0) continue;
        for (let tx = 0; tx < tilesX; tx++) {
          const a = tx * tileBytes;
          const b = Math.min(this.rowBytes, a + tileBytes);
          if (vram.compare(this.shadow, sh + a, sh + b, src + a, src + b) !== 0) {
            dirtyCols[tx] = 1;
            any = true;
          }
        }
      }
      if (!any) continue;
      // Copy and convert dirty tiles of this tile row, and merge adjacent ones into rects.
      let tx = 0;
      while (tx < tilesX) {
        if (!dirtyCols[tx]) {
          tx++;
          continue;
        }
        let end = tx;
        while (end + 1 < tilesX && dirtyCols[end + 1]) end++;
        const x0 = tx * TILE;
        const x1 = Math.min(p.width, (end + 1) * TILE);
        for (let y = y0; y < y1; y++) {
          const src = p.offset + y * p.stride + x0 * bpp;
          const n = x1 - x0;
          this.shadow.set(fb.subarray(src, src + n * bpp), y * this.rowBytes + x0 * bpp);
          rowToXrgb(p.drm_format, fb, src, n, this.frame.pixels, y * p.width + x0);
        }
        damage.push({ x: x0, y: y0, w: x1 - x0, h: y1 - y0 });
        tx = end + 1;
      }
    }
    if (damage.length) this.generation++;
    return damage;
  }
}
