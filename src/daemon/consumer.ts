// A display consumer over the management socket, as any host program would
// write it: export the current plane's buffer (an fd), map it, use it, release.

import type { BufferDescriptor } from '../display/buffers.js';
import type { PlaneInfo } from '../display/plane.js';
import { planeToPng } from '../display/png.js';
import * as native from '../native/index.js';
import type { ControlClient } from './control-client.js';

export interface MappedBuffer {
  descriptor: BufferDescriptor;
  /** The whole mapping; pixels start at descriptor.offset. */
  bytes: Uint8Array;
  plane: PlaneInfo;
  close(): Promise<void>;
}

/** Exports and maps the current plane of instance `uuid` (read-only). */
export async function mapCurrentBuffer(client: ControlClient, uuid: string): Promise<MappedBuffer> {
  const { result, fds } = await client.callWithFds('buffer-export', { uuid });
  const d = result as BufferDescriptor;
  const fd = fds[0];
  if (fd === undefined) throw new Error('the daemon sent no buffer');
  let ab: ArrayBuffer;
  try {
    const length = Math.ceil((d.offset + d.size) / native.PAGE_SIZE) * native.PAGE_SIZE;
    ab = native.mmap(fd, Math.min(length, native.fileSize(fd)), 0, false);
  } finally {
    // The mapping keeps the memory alive; the fd is no longer needed.
    native.close(fd);
  }
  const plane: PlaneInfo = { ...d, drm_plane_type: 1, x_pos: 0, y_pos: 0, x_hot: 0xffffffff, y_hot: 0xffffffff };
  return {
    descriptor: d,
    bytes: new Uint8Array(ab),
    plane,
    async close() {
      native.munmap(ab);
      await client.call('buffer-release', { buffer: d.uuid }).catch(() => {});
    },
  };
}

export async function screenshot(client: ControlClient, uuid: string): Promise<Buffer> {
  const m = await mapCurrentBuffer(client, uuid);
  try {
    return planeToPng(m.plane, m.bytes);
  } finally {
    await m.close();
  }
}
