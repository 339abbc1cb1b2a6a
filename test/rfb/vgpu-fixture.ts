// A BochsVgpu served by an RfbDisplay and a VncServer on a free loopback port,
// with helpers to program modes and paint VRAM as a guest would.
import { createServer } from 'node:net';
import { BochsVgpu, DISPI } from '../../src/devices/vgpu/bochs-vgpu.js';
import { RfbDisplay, type RfbDisplayOptions } from '../../src/display/rfb/display.js';
import { VncServer } from '../../src/display/rfb/server.js';
import type { RfbSession } from '../../src/display/rfb/session.js';
import type { Frame, Rect } from '../../src/display/rfb/types.js';
import { frame } from './content.js';

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export interface FixtureOptions {
  width?: number;
  height?: number;
  password?: string | null;
  handshakeTimeoutMs?: number;
  display?: Partial<RfbDisplayOptions>;
}

export class VgpuFixture {
  readonly vgpu: BochsVgpu;
  readonly display: RfbDisplay;
  server!: VncServer;
  port = 0;
  readonly logs: string[] = [];
  /** What the guest shows (mirrors VRAM), canonical 0x00RRGGBB. */
  screen: Frame;

  private constructor(o: FixtureOptions) {
    this.vgpu = new BochsVgpu({ vramBytes: 16 << 20, width: 1024, height: 768, maxWidth: 2560, maxHeight: 1600 });
    const w = o.width ?? 640;
    const h = o.height ?? 480;
    this.screen = frame(w, h);
    this.setMode(w, h);
    this.display = new RfbDisplay(this.vgpu, { name: 'test-vgpu', ...o.display });
  }

  static async start(o: FixtureOptions = {}): Promise<VgpuFixture> {
    const f = new VgpuFixture(o);
    f.port = await freePort();
    f.server = new VncServer(f.display, {
      host: '127.0.0.1',
      port: f.port,
      password: o.password ?? null,
      log: (m) => f.logs.push(m),
      ...(o.handshakeTimeoutMs ? { handshakeTimeoutMs: o.handshakeTimeoutMs } : {}),
    });
    await f.server.listen();
    return f;
  }

  private reg(index: number, value: number): void {
    this.vgpu.regionWrite(2, 0x500 + 2 * index, Uint8Array.of(value & 0xff, value >> 8));
  }

  /** Programs a 32-bpp mode as the bochs driver does (VRAM keeps its content). */
  setMode(w: number, h: number): void {
    this.reg(DISPI.ENABLE, 0);
    this.reg(DISPI.BPP, 32);
    this.reg(DISPI.XRES, w);
    this.reg(DISPI.YRES, h);
    this.reg(DISPI.VIRT_WIDTH, w);
    this.reg(DISPI.X_OFFSET, 0);
    this.reg(DISPI.Y_OFFSET, 0);
    this.reg(DISPI.ENABLE, 0x41);
    if (this.screen.width !== w || this.screen.height !== h) this.screen = frame(w, h);
    this.flush();
  }

  /** The guest turns the display off ("no plane"). */
  disable(): void {
    this.reg(DISPI.ENABLE, 0);
  }

  private get vram32(): Uint32Array {
    const b = this.vgpu.vram.bytes;
    return new Uint32Array(b.buffer, b.byteOffset, this.screen.width * this.screen.height);
  }

  /** Copies `screen` into VRAM (XRGB8888 little-endian: B, G, R, X). */
  flush(): void {
    this.vram32.set(this.screen.pixels);
  }

  /** Shows `f` (same size as the mode). */
  show(f: Frame): void {
    if (f.width !== this.screen.width || f.height !== this.screen.height) throw new Error('frame size differs from the mode');
    this.screen = { width: f.width, height: f.height, pixels: Uint32Array.from(f.pixels) };
    this.flush();
  }

  /** Paints `r` with `colour` in VRAM and in `screen`. */
  fill(r: Rect, colour: number): void {
    const v = this.vram32;
    const W = this.screen.width;
    for (let y = r.y; y < r.y + r.h; y++) {
      this.screen.pixels.fill(colour, y * W + r.x, y * W + r.x + r.w);
      v.fill(colour, y * W + r.x, y * W + r.x + r.w);
    }
  }

  /** The server-side session of the client whose local port is `localPort`. */
  session(localPort: number): RfbSession | undefined {
    for (const s of this.display.sessions) if (s.transport.remote.endsWith(`:${localPort}`)) return s;
    return undefined;
  }

  async waitSessions(n: number, ms = 2000): Promise<void> {
    const end = Date.now() + ms;
    while (this.display.sessions.size !== n) {
      if (Date.now() > end) throw new Error(`${this.display.sessions.size} sessions, want ${n}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async close(): Promise<void> {
    await this.server.close();
    this.vgpu.dispose();
  }
}
