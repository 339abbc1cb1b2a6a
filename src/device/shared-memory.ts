// Shared memory a device exposes to the client for direct mapping (e.g. VRAM):
// a sealed memfd mapped once into this process.
import * as native from '../native/index.js';

export class SharedMemory {
  private ab: ArrayBuffer | null;
  readonly bytes: Uint8Array;

  private constructor(
    readonly fd: number,
    readonly size: number,
    ab: ArrayBuffer,
  ) {
    this.ab = ab;
    this.bytes = new Uint8Array(ab);
  }

  /** Creates `size` bytes of zeroed shared memory that can neither shrink nor grow. */
  static create(name: string, size: number): SharedMemory {
    const fd = native.memfd(name, size);
    try {
      // Sealing stops a peer from truncating the file under our mapping (SIGBUS).
      native.addSeals(fd, native.SEAL_SHRINK | native.SEAL_GROW);
      const ab = native.mmap(fd, size, 0, true);
      return new SharedMemory(fd, size, ab);
    } catch (e) {
      native.close(fd);
      throw e;
    }
  }

  get isClosed(): boolean {
    return this.ab === null;
  }

  close(): void {
    if (!this.ab) return;
    native.munmap(this.ab);
    this.ab = null;
    native.close(this.fd);
  }
}
