// The display side of the daemon: for every instance that has a display, its
// VNC server, browser-viewer token and input hook; the web viewer; the buffer
// registry; and the management operations that query planes and export buffers.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BochsVgpu } from '../devices/vgpu/bochs-vgpu.js';
import { vgpuAttrs } from '../devices/vgpu/types.js';
import { BufferRegistry } from '../display/buffers.js';
import { type DisplaySource, PLANE_FLAG_DMABUF, PLANE_FLAG_PROBE, PLANE_FLAG_REGION, PlaneType } from '../display/plane.js';
import { RfbDisplay } from '../display/rfb/display.js';
import { VncServer } from '../display/rfb/server.js';
import type { InputEvent } from '../display/rfb/session.js';
import { ViewerServer } from '../display/web/viewer-server.js';
import type { Instance, MdevCore } from '../mdev/core.js';
import { MdevError } from '../mdev/errors.js';
import { str } from './args.js';
import type { Handler } from './control-server.js';

/** Viewers of one display instance: its VNC server, browser token and input hook. */
export interface DisplayConsumers {
  vnc: VncServer;
  token: string;
  input: { keys: number; pointer: number; last: InputEvent | null; listeners: Set<(e: InputEvent) => void> };
}

/** The display side of an instance, if it has one. */
export function displayOf(inst: Instance | undefined): DisplaySource | null {
  const b = inst?.device?.backend as unknown as Partial<DisplaySource> | undefined;
  return b && typeof b.queryPlane === 'function' && b.framebuffer ? (b as DisplaySource) : null;
}

export class Displays {
  readonly buffers = new BufferRegistry();
  readonly consumers = new Map<string, DisplayConsumers>();
  viewer: ViewerServer | null = null;
  private readonly adminToken = randomBytes(16).toString('hex');

  constructor(
    private readonly core: MdevCore,
    private readonly log: (m: string) => void,
  ) {}

  /** Starts the web viewer and records its list-page URL (with the admin token) in the run dir. */
  async startViewer(http: { host: string; port: number }, runDir: string): Promise<void> {
    this.viewer = new ViewerServer({
      host: http.host,
      port: http.port,
      adminToken: this.adminToken,
      log: this.log,
      targets: () => [...this.consumers.entries()].map(([uuid, c]) => ({ uuid, type: this.core.instance(uuid)?.type.id ?? '', token: c.token, vnc: c.vnc })),
    });
    await this.viewer.listen();
    // The list page's URL carries the admin token: only the daemon's user may read it.
    writeFileSync(join(runDir, 'viewer.url'), `${this.viewer.url()}\n`, { mode: 0o600 });
    this.log(`browser viewer: ${this.viewer.url()}`);
  }

  async close(): Promise<void> {
    await this.viewer?.close();
  }

  /** A display instance gets its VNC server, browser token and input hook when it starts. */
  async attach(inst: Instance): Promise<void> {
    const source = displayOf(inst);
    if (!source) return;
    const attrs = vgpuAttrs(inst.type.id, inst.attrs);
    const input: DisplayConsumers['input'] = { keys: 0, pointer: 0, last: null, listeners: new Set() };
    const vgpu = inst.device?.backend as unknown as BochsVgpu;
    const display = new RfbDisplay(source, {
      name: `mediated ${inst.type.id} ${inst.uuid.slice(0, 8)}`,
      onInput: (e) => {
        if (e.kind === 'key') input.keys++;
        else input.pointer++;
        input.last = e;
        for (const l of input.listeners) l(e);
      },
      onSizeRequest: (w, h) => {
        try {
          vgpu.setMonitor(w, h);
          return true;
        } catch {
          return false;
        }
      },
    });
    const log = (m: string) => this.log(`[${inst.uuid.slice(0, 8)}] vnc ${m}`);
    const vnc = new VncServer(display, {
      host: attrs?.vnc?.host ?? '127.0.0.1',
      port: attrs?.vnc?.port ?? 0,
      password: attrs?.vncPassword ?? null,
      viewPassword: attrs?.vncViewPassword ?? null,
      log,
    });
    if (attrs?.vnc) {
      const a = await vnc.listen();
      log(`listening on ${a.host}:${a.port}`);
    }
    this.consumers.set(inst.uuid, { vnc, token: randomBytes(16).toString('hex'), input });
  }

  async detach(inst: Instance): Promise<void> {
    const c = this.consumers.get(inst.uuid);
    this.consumers.delete(inst.uuid);
    this.buffers.releaseInstance(inst.uuid);
    if (c) await c.vnc.close();
  }

  /** What `list --dumpjson` shows about an instance's viewers. */
  facts(uuid: string): Record<string, unknown> {
    const c = this.consumers.get(uuid);
    if (!c) return {};
    const a = c.vnc.address;
    return {
      vnc: a ? `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}` : null,
      viewer: this.viewer ? this.viewer.url(`/vm/${uuid}`, c.token) : null,
      viewers: c.vnc.display.sessions.size,
      input: { keys: c.input.keys, pointer: c.input.pointer },
    };
  }

  private display(args: Record<string, unknown>): { inst: Instance; source: DisplaySource } {
    const inst = this.core.instance(str(args, 'uuid'));
    if (!inst) throw new MdevError('ENODEV', `no running instance ${args.uuid}`);
    const source = displayOf(inst);
    if (!source) throw new MdevError('EINVAL', `${inst.uuid} (${inst.type.id}) has no display`);
    return { inst, source };
  }

  /** QUERY_GFX_PLANE and GET_GFX_DMABUF over the management socket, plus subscriptions. */
  registerHandlers(h: Map<string, Handler>): void {
    h.set('plane-query', (args) => {
      const { source } = this.display(args);
      const flags = typeof args.flags === 'number' ? args.flags : PLANE_FLAG_DMABUF;
      if (flags & PLANE_FLAG_PROBE) {
        // Probing asks which mechanism is supported: dma-buf style export, not a region.
        if (flags === (PLANE_FLAG_PROBE | PLANE_FLAG_DMABUF)) return { supported: true };
        if (flags === (PLANE_FLAG_PROBE | PLANE_FLAG_REGION)) throw new MdevError('EINVAL', 'region-style planes are not offered; use dmabuf export');
        throw new MdevError('EINVAL', 'probe takes exactly one of DMABUF or REGION');
      }
      if (flags !== PLANE_FLAG_DMABUF) throw new MdevError('EINVAL', 'a plane query sets the DMABUF flag');
      const type = typeof args.plane_type === 'number' ? args.plane_type : PlaneType.PRIMARY;
      if (type !== PlaneType.PRIMARY && type !== PlaneType.CURSOR && type !== PlaneType.OVERLAY) throw new MdevError('EINVAL', `bad plane type ${type}`);
      return source.queryPlane(type);
    });
    h.set('buffer-export', (args, link) => {
      const { inst, source } = this.display(args);
      const plane = source.queryPlane(PlaneType.PRIMARY);
      if (!plane.drm_format) throw new MdevError('ENOENT', 'the guest shows no plane right now');
      if (typeof args.dmabuf_id === 'number' && args.dmabuf_id !== plane.dmabuf_id) {
        throw new MdevError('ENOENT', `plane ${args.dmabuf_id} is not current (current: ${plane.dmabuf_id})`);
      }
      const b = this.buffers.export(inst.uuid, source, plane, link);
      link.onClose(() => this.buffers.releaseHolder(link), 'buffers');
      return { result: b.descriptor, fds: [b.fd] };
    });
    h.set('buffer-import', (args, link) => {
      const b = this.buffers.import(str(args, 'buffer'), link);
      if (!b) throw new MdevError('ENOENT', `no exported buffer ${args.buffer}`);
      link.onClose(() => this.buffers.releaseHolder(link), 'buffers');
      return { result: b.descriptor, fds: [b.fd] };
    });
    h.set('buffer-release', (args, link) => {
      if (!this.buffers.release(str(args, 'buffer'), link)) throw new MdevError('ENOENT', `no exported buffer ${args.buffer}`);
      return { released: true };
    });
    h.set('buffers', () => this.buffers.list());
    h.set('subscribe-input', (args, link) => {
      const { inst } = this.display(args);
      const c = this.consumers.get(inst.uuid);
      if (!c) throw new MdevError('ENODEV', `${inst.uuid} has no viewers attached`);
      const l = (e: InputEvent) => link.event({ event: 'input', uuid: inst.uuid, input: e });
      c.input.listeners.add(l);
      link.onClose(() => c.input.listeners.delete(l));
      return { subscribed: inst.uuid };
    });
    h.set('viewer-url', () => ({ url: this.viewer?.url() ?? null }));
    h.set('subscribe', (args, link) => {
      const { inst, source } = this.display(args);
      const off = source.onPlaneChange((plane) => link.event({ event: 'plane-change', uuid: inst.uuid, plane }));
      link.onClose(off);
      return { subscribed: inst.uuid, plane: source.queryPlane(PlaneType.PRIMARY) };
    });
  }
}
