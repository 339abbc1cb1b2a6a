// What one viewer has not been sent yet, as a bitmap of TILE×TILE tiles: bounded
// however long the viewer lags, and turned into few rects when an update is built.
import { TILE } from './framebuffer.js';
import type { Rect } from './types.js';

export class DamageMap {
  /** The framebuffer size the map was made for, so rects never mix two geometries. */
  width = 0;
  height = 0;
  private tilesX = 0;
  private tilesY = 0;
  private dirty = new Uint8Array(0);

  reset(width: number, height: number, all: boolean): void {
    this.width = width;
    this.height = height;
    this.tilesX = Math.ceil(width / TILE);
    this.tilesY = Math.ceil(height / TILE);
    this.dirty = new Uint8Array(this.tilesX * this.tilesY);
    if (all) this.dirty.fill(1);
  }

  mark(r: Rect): void {
    const x0 = Math.max(0, Math.floor(r.x / TILE));
    const y0 = Math.max(0, Math.floor(r.y / TILE));
    const x1 = Math.min(this.tilesX, Math.ceil((r.x + r.w) / TILE));
    const y1 = Math.min(this.tilesY, Math.ceil((r.y + r.h) / TILE));
    for (let ty = y0; ty < y1; ty++) this.dirty.fill(1, ty * this.tilesX + x0, ty * this.tilesX + x1);
  }

  /** Whether any dirty tile intersects `area` (anywhere when omitted). */
  any(area?: Rect): boolean {
    if (!area) return this.dirty.includes(1);
    const x0 = Math.max(0, Math.floor(area.x / TILE));
    const y0 = Math.max(0, Math.floor(area.y / TILE));
    const x1 = Math.min(this.tilesX, Math.ceil((area.x + area.w) / TILE));
    const y1 = Math.min(this.tilesY, Math.ceil((area.y + area.h) / TILE));
    for (let ty = y0; ty < y1; ty++) for (let tx = x0; tx < x1; tx++) if (this.dirty[ty * this.tilesX + tx]) return true;
    return false;
  }

  /** Dirty tiles as rects (horizontal runs merged with identical runs below), then cleared. */
  take(): Rect[] {
    const W = this.width;
    const H = this.height;
    const rects: Rect[] = [];
    const open = new Map<string, Rect>();
    for (let ty = 0; ty < this.tilesY; ty++) {
      const seen = new Set<string>();
      let tx = 0;
      while (tx < this.tilesX) {
        if (!this.dirty[ty * this.tilesX + tx]) {
          tx++;
          continue;
        }
        let end = tx;
        while (end + 1 < this.tilesX && this.dirty[ty * this.tilesX + end + 1]) end++;
        const key = `${tx}:${end}`;
        const y = ty * TILE;
        const h = Math.min(TILE, H - y);
        const prev = open.get(key);
        if (prev && prev.y + prev.h === y) prev.h += h;
        else {
          const r = { x: tx * TILE, y, w: Math.min(W, (end + 1) * TILE) - tx * TILE, h };
          rects.push(r);
          open.set(key, r);
        }
        seen.add(key);
        tx = end + 1;
      }
      for (const k of [...open.keys()]) if (!seen.has(k)) open.delete(k);
    }
    this.dirty.fill(0);
    // The rect holding the bottom-right corner goes last: some clients (gvnccapture) treat
    // its arrival as "the picture is complete".
    rects.sort((a, b) => a.y + a.h - (b.y + b.h) || a.x + a.w - (b.x + b.w));
    return rects;
  }
}
