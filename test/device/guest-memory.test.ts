// Guest memory through DMA_MAP/DMA_UNMAP over the socket: fd-backed ranges read
// and written zero-copy, pins revoked before the unmap reply (the unpin rule),
// UNMAP ALL, read-only ranges, validation errors and fd ownership.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, afterEach, before, describe, it } from 'node:test';
import { iova } from '../../src/device/addresses.js';
import { GuestMemory } from '../../src/device/guest-memory.js';
import * as native from '../../src/native/index.js';
import type { VfioUserClient } from '../../src/vfio-user/client.js';
import { DMA_FLAG_READ, DMA_FLAG_WRITE, DMA_UNMAP_FLAG_ALL, DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, Errno } from '../../src/vfio-user/constants.js';
import { type Harness, pattern, startServer, TestDevice } from '../vfio-user/fixture.js';

const RW = DMA_FLAG_READ | DMA_FLAG_WRITE;
const MiB = 1 << 20;
/** Mappings of memfds (guest RAM windows, BARs): V8's own heap mappings vary with GC timing. */
const mapCount = () =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('/memfd:')).length;

/** A memfd standing in for QEMU's memory-backend-memfd, with our own mapping of it. */
function guestRam(size: number): { fd: number; bytes: Uint8Array; close(): void } {
  const fd = native.memfd('guest-ram', size);
  const ab = native.mmap(fd, size, 0, true);
  return {
    fd,
    bytes: new Uint8Array(ab),
    close() {
      native.munmap(ab);
      native.close(fd);
    },
  };
}

describe('DMA_MAP / DMA_UNMAP with fds', () => {
  let h: Harness;
  let c: VfioUserClient;
  let ram: ReturnType<typeof guestRam>;
  let mem: GuestMemory;

  before(async () => {
    h = await startServer({}, new TestDevice({ guestMemory: { pinLimit: 64 * 1024 } }));
    c = await h.connect();
    ram = guestRam(4 * MiB);
    mem = h.device.memory;
  });
  after(async () => {
    c.close();
    await h.close();
    ram.close();
  });
  afterEach(async () => {
    if (mem.mappings.length) await c.dmaUnmap(0, 0, DMA_UNMAP_FLAG_ALL);
  });

  it('maps a memfd range; the device reads and writes guest RAM through it', async () => {
    ram.bytes.set(pattern(MiB, 3), MiB);
    // QEMU's layout: IOVA 0x100000 at fd offset 0x100000, like its RAM above 1 MiB.
    await c.dmaMap(0x100000, 2 * MiB, RW, ram.fd, MiB);
    assert.equal(mem.mappings.length, 1);
    const segs = mem.translate(iova(0x100000 + 100), 10, false);
    assert.deepEqual(
      segs.map((s) => [s.range.address, s.offset, s.length]),
      [[0x100000, 100, 10]],
    );
    const out = new Uint8Array(4096);
    await mem.read(iova(0x100000 + 4000), out);
    assert.deepEqual(out, ram.bytes.subarray(MiB + 4000, MiB + 8096));
    const data = pattern(5000, 9);
    await mem.write(iova(0x200000 - 100), data);
    assert.deepEqual(ram.bytes.subarray(MiB + 0x100000 - 100, MiB + 0x100000 + 4900), data, 'visible in the client mapping');
    // Outside the mapping: EFAULT.
    await assert.rejects(mem.read(iova(0x300000), new Uint8Array(1)), { errno: Errno.EFAULT });
    await assert.rejects(mem.read(iova(0x2ff000), new Uint8Array(0x2000)), { errno: Errno.EFAULT }, 'running off the end');
  });

  it('a transfer spanning two adjacent mappings is split at the boundary', async () => {
    await c.dmaMap(0x0, 0x10000, RW, ram.fd, 0x300000);
    await c.dmaMap(0x10000, 0x10000, RW, ram.fd, 0x100000);
    const segs = mem.translate(iova(0xff00), 0x200, true);
    assert.deepEqual(
      segs.map((s) => [s.range.address, s.offset, s.length]),
      [
        [0x0, 0xff00, 0x100],
        [0x10000, 0, 0x100],
      ],
    );
    const data = pattern(0x200, 4);
    await mem.write(iova(0xff00), data);
    assert.deepEqual(ram.bytes.subarray(0x30ff00, 0x310000), data.subarray(0, 0x100));
    assert.deepEqual(ram.bytes.subarray(0x100000, 0x100100), data.subarray(0x100));
  });

  it('DMA_UNMAP revokes pins before the reply reaches the client, and their views are detached', async () => {
    await c.dmaMap(0x400000, 0x10000, RW, ram.fd, 0);
    const events: string[] = [];
    const pin = mem.pin(iova(0x400000 + 0x1000), 0x2000, true, () => events.push('revoke'));
    assert.equal(mem.pinned, 0x2000);
    assert.equal(pin.views.length, 1);
    const view = pin.views[0] as Uint8Array;
    view[0] = 0x77;
    assert.equal(ram.bytes[0x1000], 0x77, 'a pin is a direct view of guest RAM');
    const unmapped = c.dmaUnmap(0x400000, 0x10000).then(() => events.push('reply'));
    assert.deepEqual(events, [], 'nothing happens before the server reads the request');
    await unmapped;
    assert.deepEqual(events, ['revoke', 'reply']);
    assert.equal(view.byteLength, 0, 'view detached (munmapped)');
    assert.equal(pin.released, true);
    assert.equal(mem.pinned, 0);
    assert.equal(mem.mappings.length, 0);
    assert.throws(() => mem.translate(iova(0x400000), 1, false), { errno: Errno.EFAULT });
    pin.release(); // a late release is harmless
    assert.equal(mem.pinned, 0);
  });

  it('a pin whose onRevoke releases it (the natural device reaction) is uncharged exactly once', async () => {
    await c.dmaMap(0x400000, 0x10000, RW, ram.fd, 0);
    let revoked = 0;
    const pin = mem.pin(iova(0x400000), 0x3000, true, () => {
      revoked++;
      pin.release();
    });
    assert.equal(mem.pinned, 0x3000);
    await c.dmaUnmap(0x400000, 0x10000);
    assert.equal(revoked, 1);
    assert.equal(mem.pinned, 0, 'the pin limit must not leak on revoke');
    // Over and over: the limit (64 KiB here) is never exhausted by revoked pins.
    for (let i = 0; i < 40; i++) {
      await c.dmaMap(0x400000, 0x10000, RW, ram.fd, 0);
      const p = mem.pin(iova(0x400000), 0x4000, true, () => p.release());
      await c.dmaUnmap(0x400000, 0x10000);
    }
    assert.equal(mem.pinned, 0);
  });

  it('a pin spanning two mappings is revoked once, when the first of them goes', async () => {
    await c.dmaMap(0x500000, 0x1000, RW, ram.fd, 0);
    await c.dmaMap(0x501000, 0x1000, RW, ram.fd, 0x1000);
    let revoked = 0;
    const pin = mem.pin(iova(0x500800), 0x1000, true, () => revoked++);
    assert.equal(pin.views.length, 2);
    await c.dmaUnmap(0x501000, 0x1000);
    assert.equal(revoked, 1);
    assert.equal(mem.pinned, 0);
    await c.dmaUnmap(0x500000, 0x1000);
    assert.equal(revoked, 1, 'not revoked a second time');
    assert.equal(mem.pinned, 0);
  });

  it('pins: released pins stop counting; the pin limit is enforced (ENOMEM); read-only ranges refuse writable pins', async () => {
    await c.dmaMap(0x0, 0x100000, RW, ram.fd, 0);
    await c.dmaMap(0x100000, 0x10000, DMA_FLAG_READ, ram.fd, 0x100000);
    const a = mem.pin(iova(0), 0x8000, true);
    assert.equal(mem.pinned, 0x8000);
    a.release();
    assert.equal(mem.pinned, 0);
    const b = mem.pin(iova(0), 100, false);
    assert.equal(mem.pinned, 4096, 'charged in whole pages');
    assert.throws(() => mem.pin(iova(0x1000), 64 * 1024, false), { errno: Errno.ENOMEM });
    b.release();
    assert.throws(() => mem.pin(iova(0x100000), 4096, true), { errno: Errno.EPERM });
    const ro = mem.pin(iova(0x100000), 4096, false);
    ro.release();
  });

  it('UNMAP with the ALL flag drops every range and closes every fd', async () => {
    const base = native.fdCount();
    await c.dmaMap(0x0, 0x1000, RW, ram.fd, 0);
    await c.dmaMap(0x10000, 0x1000, RW, ram.fd, 0);
    await c.dmaMap(0x20000, 0x1000, DMA_FLAG_READ); // no fd
    assert.equal(native.fdCount(), base + 2);
    const probe = new Uint8Array(16);
    await mem.read(iova(0x10000), probe); // creates a mapping to unmap too
    await c.dmaUnmap(0, 0, DMA_UNMAP_FLAG_ALL);
    assert.equal(mem.mappings.length, 0);
    assert.equal(native.fdCount(), base);
    // ALL with a range is EINVAL.
    await c.dmaMap(0x0, 0x1000, RW, ram.fd, 0);
    await assert.rejects(c.dmaUnmap(0, 0x1000, DMA_UNMAP_FLAG_ALL), { errno: Errno.EINVAL });
    assert.equal(mem.mappings.length, 1);
  });

  it('DMA_UNMAP echoes the 24-byte request', async () => {
    await c.dmaMap(0x30000, 0x2000, RW, ram.fd, 0);
    const p = new Uint8Array(24);
    const v = new DataView(p.buffer);
    v.setUint32(0, 24, true);
    v.setBigUint64(8, 0x30000n, true);
    v.setBigUint64(16, 0x2000n, true);
    const r = await c.request(3, p);
    assert.deepEqual(r.payload, p);
  });

  it('read-only ranges refuse device writes (EPERM) and serve reads', async () => {
    ram.bytes.set(pattern(4096, 5), 0x200000);
    await c.dmaMap(0xc0000, 0x20000, DMA_FLAG_READ, ram.fd, 0x200000);
    await assert.rejects(mem.write(iova(0xc0000), Uint8Array.of(1)), { errno: Errno.EPERM });
    const out = new Uint8Array(4096);
    await mem.read(iova(0xc0000), out);
    assert.deepEqual(out, ram.bytes.subarray(0x200000, 0x201000));
    // Write-only ranges refuse reads.
    await c.dmaMap(0xe0000, 0x1000, DMA_FLAG_WRITE, ram.fd, 0);
    await assert.rejects(mem.read(iova(0xe0000), new Uint8Array(1)), { errno: Errno.EPERM });
    await mem.write(iova(0xe0000), Uint8Array.of(0x31));
    assert.equal(ram.bytes[0], 0x31);
  });

  it('DMA_MAP errors: overlap EEXIST, unaligned EINVAL, fd range past EOF EINVAL, bad flags; the fd is closed each time', async () => {
    await c.dmaMap(0x100000, 0x100000, RW, ram.fd, 0);
    const base = native.fdCount();
    const cases: [number, number, number, number, number][] = [
      // address, size, flags, offset, errno
      [0x100000, 0x1000, RW, 0, Errno.EEXIST], // same start
      [0x0ff000, 0x2000, RW, 0, Errno.EEXIST], // overlaps the front
      [0x1ff000, 0x2000, RW, 0, Errno.EEXIST], // overlaps the end
      [0x0, 0x1000000, RW, 0, Errno.EEXIST], // covers it
      [0x1000 + 1, 0x1000, RW, 0, Errno.EINVAL], // address unaligned
      [0x0, 0x800, RW, 0, Errno.EINVAL], // size unaligned
      [0x0, 0, RW, 0, Errno.EINVAL], // empty
      [0x0, 0x1000, RW, 0x800, Errno.EINVAL], // fd offset unaligned
      [0x0, 0x1000, RW, 4 * MiB, Errno.EINVAL], // starts at EOF
      [0x400000, 8 * MiB, RW, 0, Errno.EINVAL], // longer than the file
      [0x0, 0x1000, 0, 0, Errno.EINVAL], // neither READ nor WRITE
      [0x0, 0x1000, RW | 4, 0, Errno.EINVAL], // unknown flag
      [2 ** 52, 0x1000, RW, 0, Errno.EINVAL], // beyond the address width
    ];
    for (const [address, size, flags, offset, errno] of cases) {
      await assert.rejects(c.dmaMap(address, size, flags, ram.fd, offset), { errno }, `map 0x${address.toString(16)} +0x${size.toString(16)}`);
    }
    assert.equal(native.fdCount(), base, 'every rejected fd was closed');
    // An fd that is not a file (an eventfd has size 0) is refused too.
    const efd = native.eventfd();
    await assert.rejects(c.dmaMap(0x0, 0x1000, RW, efd), { errno: Errno.EINVAL });
    native.close(efd);
    assert.equal(native.fdCount(), base);
    // Argsz other than 32 is malformed.
    const p = new Uint8Array(32);
    new DataView(p.buffer).setUint32(0, 40, true);
    await assert.rejects(c.request(2, p), { errno: Errno.EINVAL });
    assert.equal(mem.mappings.length, 1);
  });

  it('DMA_UNMAP errors: unknown range ENOENT, bisecting EINVAL, unaligned EINVAL, dirty bitmap ENOTSUP', async () => {
    await c.dmaMap(0x100000, 0x100000, RW, ram.fd, 0);
    await assert.rejects(c.dmaUnmap(0x300000, 0x1000), { errno: Errno.ENOENT });
    await assert.rejects(c.dmaUnmap(0x100000, 0x1000), { errno: Errno.EINVAL }, 'head of a mapping');
    await assert.rejects(c.dmaUnmap(0x180000, 0x100000), { errno: Errno.EINVAL }, 'tail and beyond');
    await assert.rejects(c.dmaUnmap(0x100800, 0x1000), { errno: Errno.EINVAL });
    await assert.rejects(c.dmaUnmap(0x100000, 0), { errno: Errno.EINVAL });
    await assert.rejects(c.dmaUnmap(0x100000, 0x100000, DMA_UNMAP_FLAG_GET_DIRTY_BITMAP), { errno: Errno.ENOTSUP });
    await assert.rejects(c.dmaUnmap(0x100000, 0x100000, 8), { errno: Errno.EINVAL });
    assert.equal(mem.mappings.length, 1);
    // A range covering several whole mappings removes them all.
    await c.dmaMap(0x200000, 0x1000, RW, ram.fd, 0);
    await c.dmaUnmap(0x0, 0x400000);
    assert.equal(mem.mappings.length, 0);
  });

  it('map/unmap churn like SeaBIOS leaves no fds and no mappings behind', async () => {
    const fds = native.fdCount();
    const maps = mapCount();
    for (let i = 0; i < 200; i++) {
      await c.dmaMap(0x0, 0xc0000, RW, ram.fd, 0);
      await c.dmaMap(0xc0000, 0x20000, DMA_FLAG_READ, ram.fd, 0xc0000);
      await c.dmaMap(0x100000, 0x300000, RW, ram.fd, 0x100000);
      await mem.write(iova(0x100000 + i * 8), Uint8Array.of(i, 1, 2, 3));
      const p = mem.pin(iova(0x1000), 4096, true);
      if (i % 2) p.release();
      await c.dmaUnmap(0x0, 0xc0000);
      await c.dmaUnmap(0xc0000, 0x20000);
      await c.dmaUnmap(0x100000, 0x300000);
    }
    assert.equal(native.fdCount(), fds);
    assert.equal(mapCount(), maps, 'every window and pin view was unmapped');
    assert.equal(mem.pinned, 0);
  });
});

describe('GuestMemory unit', () => {
  it('refuses more than maxMappings ranges (ENOSPC) and keeps ranges sorted', () => {
    const m = new GuestMemory({ maxMappings: 3 });
    m.map({ flags: RW, offset: 0, address: 0x3000, size: 0x1000, fd: null });
    m.map({ flags: RW, offset: 0, address: 0x1000, size: 0x1000, fd: null });
    m.map({ flags: RW, offset: 0, address: 0x2000, size: 0x1000, fd: null });
    assert.deepEqual(
      m.mappings.map((r) => r.address),
      [0x1000, 0x2000, 0x3000],
    );
    assert.throws(() => m.map({ flags: RW, offset: 0, address: 0x8000, size: 0x1000, fd: null }), { errno: Errno.ENOSPC });
    assert.throws(() => m.translate(iova(0), 1, false), { errno: Errno.EFAULT });
    assert.equal(m.translate(iova(0x1fff), 2, false).length, 2);
  });

  it('message-based ranges cannot be pinned and need a client', async () => {
    const m = new GuestMemory();
    m.map({ flags: RW, offset: 0, address: 0, size: 0x1000, fd: null });
    assert.throws(() => m.pin(iova(0), 16, false), { errno: Errno.EFAULT });
    await assert.rejects(m.read(iova(0), new Uint8Array(4)), { errno: Errno.ENODEV });
  });
});
