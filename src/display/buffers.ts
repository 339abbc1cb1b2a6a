// Exported framebuffers: the dma-buf analogue. A consumer asks for the current
// plane's buffer and receives a file descriptor (the instance's framebuffer
// memory) with offset, size and format. Exports are cached per plane id and
// reference-counted per holder; every export is also registered host-wide under
// a UUID so another consumer or device can import it by UUID.
import { randomUUID } from 'node:crypto';
import type { DisplaySource, PlaneInfo } from './plane.js';

export interface BufferDescriptor {
  uuid: string;
  /** Owning device instance. */
  instance: string;
  dmabuf_id: number;
  drm_format: number;
  drm_format_mod: number;
  width: number;
  height: number;
  stride: number;
  offset: number;
  size: number;
}

export class ExportedBuffer {
  private readonly holders = new Map<object, number>();
  constructor(
    readonly descriptor: BufferDescriptor,
    readonly source: DisplaySource,
  ) {}

  get fd(): number {
    return this.source.framebuffer.fd;
  }

  get refs(): number {
    let n = 0;
    for (const c of this.holders.values()) n += c;
    return n;
  }

  hold(holder: object): void {
    this.holders.set(holder, (this.holders.get(holder) ?? 0) + 1);
  }

  /** Drops one (or, with `all`, every) reference of `holder`; returns the references left. */
  drop(holder: object, all = false): number {
    const c = this.holders.get(holder) ?? 0;
    if (c <= 1 || all) this.holders.delete(holder);
    else this.holders.set(holder, c - 1);
    return this.refs;
  }
}

export class BufferRegistry {
  private readonly byUuid = new Map<string, ExportedBuffer>();
  private readonly byPlane = new Map<string, ExportedBuffer>();

  private static key(instance: string, id: number): string {
    return `${instance}/${id}`;
  }

  /** Exports the plane of `source` for `holder`, reusing the cached export of the same plane id. */
  export(instance: string, source: DisplaySource, plane: PlaneInfo, holder: object): ExportedBuffer {
    if (!plane.drm_format || !plane.dmabuf_id) throw new RangeError('the guest shows no plane to export');
    const key = BufferRegistry.key(instance, plane.dmabuf_id);
    let b = this.byPlane.get(key);
    if (!b) {
      b = new ExportedBuffer(
        {
          uuid: randomUUID(),
          instance,
          dmabuf_id: plane.dmabuf_id,
          drm_format: plane.drm_format,
          drm_format_mod: plane.drm_format_mod,
          width: plane.width,
          height: plane.height,
          stride: plane.stride,
          offset: plane.offset,
          size: plane.size,
        },
        source,
      );
      this.byPlane.set(key, b);
      this.byUuid.set(b.descriptor.uuid, b);
    }
    b.hold(holder);
    return b;
  }

  /** Imports a registered buffer by UUID (takes a reference for `holder`). */
  import(uuid: string, holder: object): ExportedBuffer | undefined {
    const b = this.byUuid.get(uuid.toLowerCase());
    b?.hold(holder);
    return b;
  }

  get(uuid: string): ExportedBuffer | undefined {
    return this.byUuid.get(uuid.toLowerCase());
  }

  release(uuid: string, holder: object): boolean {
    const b = this.byUuid.get(uuid.toLowerCase());
    if (!b) return false;
    if (b.drop(holder) === 0) this.forget(b);
    return true;
  }

  /** A holder went away (consumer disconnected): drop all its references. */
  releaseHolder(holder: object): void {
    for (const b of [...this.byUuid.values()]) if (b.drop(holder, true) === 0) this.forget(b);
  }

  /** An instance went away: its buffers are gone for everyone. */
  releaseInstance(instance: string): void {
    for (const b of [...this.byUuid.values()]) if (b.descriptor.instance === instance) this.forget(b);
  }

  private forget(b: ExportedBuffer): void {
    this.byUuid.delete(b.descriptor.uuid);
    this.byPlane.delete(BufferRegistry.key(b.descriptor.instance, b.descriptor.dmabuf_id));
  }

  list(): BufferDescriptor[] {
    return [...this.byUuid.values()].map((b) => ({ ...b.descriptor, refs: b.refs }));
  }
}
