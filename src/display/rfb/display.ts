// The RFB side of one display instance, shared by all its viewers: the shadow
// framebuffer, refresh pacing, and one encoding per (frame, rect, pixel format,
// encoding, level) reused by every viewer that needs the same thing.
import type { DisplaySource } from '../plane.js';
import { ENCODINGS, encoderFor } from './encoders/index.js';
import { ShadowFramebuffer } from './framebuffer.js';
import { pixelFormatKey } from './pixel-format.js';
import type { InputEvent, RfbDisplayLink, RfbSession } from './session.js';
import type { EncodedRect, PixelFormat, Rect } from './types.js';

export interface RfbDisplayOptions {
  name: string;
  /** Poll interval while viewers wait for changes (the guest writes VRAM directly, so we must look). */
  intervalMs?: number;
  onInput?: (e: InputEvent) => void;
  onSizeRequest?: (width: number, height: number) => boolean;
}

export class RfbDisplay implements RfbDisplayLink {
  readonly fb: ShadowFramebuffer;
  readonly sessions = new Set<RfbSession>();
  private timer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  private cacheGen = -1;
  private cache = new Map<string, EncodedRect[]>();
  private pokeScheduled = false;
  refreshes = 0;
  refreshMs = 0;

  constructor(
    readonly source: DisplaySource,
    private readonly options: RfbDisplayOptions,
  ) {
    this.fb = new ShadowFramebuffer(source);
    this.fb.refresh();
  }

  get name(): string {
    return this.options.name;
  }
  get width(): number {
    return this.fb.width;
  }
  get height(): number {
    return this.fb.height;
  }
  get generation(): number {
    return this.fb.generation;
  }

  attach(s: RfbSession): void {
    this.sessions.add(s);
    this.ensureRunning();
  }

  detach(s: RfbSession): void {
    this.sessions.delete(s);
    if (this.sessions.size === 0) this.stop();
  }

  private ensureRunning(): void {
    if (this.timer) return;
    // Flips and mode sets arrive as events; plain VRAM writes are found by the periodic compare.
    this.unsubscribe = this.source.onPlaneChange(() => this.poke());
    this.timer = setInterval(() => this.tick(), this.options.intervalMs ?? 16);
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.cache.clear();
  }

  poke(): void {
    if (this.pokeScheduled) return;
    this.pokeScheduled = true;
    setImmediate(() => {
      this.pokeScheduled = false;
      this.tick();
    });
  }

  /** Compares the guest plane with the shadow and hands damage to every viewer. */
  tick(): void {
    // Nobody is waiting for pixels: don't even look at the framebuffer.
    let waiting = false;
    for (const s of this.sessions) if (s.wantsUpdates) waiting = true;
    if (!waiting) return;
    // After a second without changes, look every other tick (~32 ms): half the idle cost, and a
    // change still reaches viewers well within 40 ms. Flips and mode sets poke at once anyway.
    this.ticks++;
    if (performance.now() - this.lastChange > 1000 && this.ticks % 2 === 1) return;
    this.refreshNow();
  }

  private ticks = 0;
  private lastChange = 0;

  private lastRefresh = 0;

  refreshSoon(): void {
    if (performance.now() - this.lastRefresh < 4) return;
    this.refreshNow();
  }

  refreshNow(): void {
    this.lastRefresh = performance.now();
    const t0 = performance.now();
    const r = this.fb.refresh();
    this.refreshes++;
    this.refreshMs += performance.now() - t0;
    if (r.resized || r.copy || r.damage.length) this.lastChange = performance.now();
    if (r.resized) for (const s of this.sessions) s.resized();
    else {
      if (r.copy) for (const s of this.sessions) s.scrolled(r.copy);
      if (r.damage.length) for (const s of this.sessions) for (const d of r.damage) s.markDirty(d);
    }
    for (const s of this.sessions) s.pump();
  }

  encode(rect: Rect, pf: PixelFormat, encoding: number, level: number): EncodedRect[] {
    if (this.cacheGen !== this.fb.generation) {
      this.cache.clear();
      this.cacheGen = this.fb.generation;
    }
    const key = `${rect.x},${rect.y},${rect.w},${rect.h}|${pixelFormatKey(pf)}|${encoding}|${level}`;
    let out = this.cache.get(key);
    if (!out) {
      const enc = encoderFor(encoding) ?? (encoderFor(ENCODINGS.RAW) as NonNullable<ReturnType<typeof encoderFor>>);
      out = enc(this.fb.frame, rect, pf, { compressLevel: level });
      if (this.cache.size > 4096) this.cache.clear();
      this.cache.set(key, out);
    }
    return out;
  }

  input(e: InputEvent): void {
    this.options.onInput?.(e);
  }

  requestSize(width: number, height: number): boolean {
    return this.options.onSizeRequest?.(width, height) ?? false;
  }

  close(): void {
    for (const s of [...this.sessions]) s.close();
    this.stop();
  }
}
