// The server session over a real UNIX socket: negotiation, device and region
// info (argsz truncation and the region fd), trapped register access, posted
// writes, WRITE_MULTI, reset. Exact reply shapes are checked with a raw peer.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as native from '../../src/native/index.js';
import { decodeRegionCaps } from '../../src/vfio-user/codec.js';
import {
  Command,
  DEVICE_FLAG_PCI,
  DEVICE_FLAG_RESET,
  Errno,
  FLAG_ERROR,
  HEADER_SIZE,
  MsgType,
  PciRegion,
  REGION_CAP_SPARSE_MMAP,
  REGION_CAP_TYPE,
  REGION_FLAG_CAPS,
  REGION_FLAG_MMAP,
  REGION_FLAG_READ,
  REGION_FLAG_WRITE,
} from '../../src/vfio-user/constants.js';
import { ServerSession } from '../../src/vfio-user/session.js';
import {
  BAR0_SIZE,
  BAR2_AREAS,
  BAR2_SIZE,
  DEVICE_ID_VALUE,
  type Harness,
  le,
  pattern,
  RawPeer,
  REGION9_SUBTYPE,
  REGION9_TYPE,
  Reg,
  sleep,
  startServer,
  TestDevice,
  u16,
  u32,
  u64,
  until,
  versionPayload,
} from './fixture.js';

const QEMU_CAPS =
  '{"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535, "max_data_xfer_size": 1048576, "migration": {"max_bitmap_size": 268435456, "pgsize": 4096}, "write_multiple": true}}';

const access = (offset: number, region: number, count: number) => le([offset, 8], [region, 4], [count, 4]);

describe('negotiation', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
  });
  after(() => h.close());

  it("answers QEMU's VERSION with 0.0 and a short NUL-terminated JSON stating max_msg_fds and max_data_xfer_size", async () => {
    const peer = RawPeer.connect(h.path);
    const request = versionPayload(QEMU_CAPS, 0, 0);
    const r = await peer.call(Command.VERSION, request);
    assert.equal(r.header.flags, MsgType.REPLY);
    assert.equal(r.header.error, 0);
    assert.equal(r.header.size, HEADER_SIZE + r.payload.length);
    assert.equal(r.fds.length, 0);
    assert.equal(u16(r.payload, 0), 0); // major
    assert.equal(u16(r.payload, 2), 0); // minor
    const json = r.payload.subarray(4);
    assert.equal(json.at(-1), 0, 'NUL-terminated');
    assert.equal(json.indexOf(0), json.length - 1, 'exactly one NUL, at the end');
    // QEMU receives the reply into its own request's buffer: ours must be smaller.
    assert.ok(r.header.size <= HEADER_SIZE + request.length, `reply ${r.header.size} B, request ${HEADER_SIZE + request.length} B`);
    const doc = JSON.parse(Buffer.from(json.subarray(0, -1)).toString()) as { capabilities: Record<string, unknown> };
    assert.equal(doc.capabilities.max_msg_fds, 16);
    assert.equal(doc.capabilities.max_data_xfer_size, 1048576);
    assert.equal(doc.capabilities.write_multiple, undefined, 'not offered unless the server enables it');
    peer.close();
    await h.idle();
  });

  it('replies minor 0 to a client offering minor 2', async () => {
    const peer = RawPeer.connect(h.path);
    const r = await peer.call(Command.VERSION, versionPayload('{"capabilities":{"max_msg_fds":32,"max_data_xfer_size":1024}}', 0, 2));
    assert.equal(u16(r.payload, 0), 0);
    assert.equal(u16(r.payload, 2), 0);
    assert.equal(h.server.session?.maxDataXferSize, 1024, 'the smaller of both sides');
    assert.equal(h.server.session?.peerMaxMsgFds, 32);
    peer.close();
    await h.idle();
  });

  it('refuses major 1 with ENOTSUP and still negotiates 0 afterwards', async () => {
    const peer = RawPeer.connect(h.path);
    const r = await peer.call(Command.VERSION, versionPayload('{}', 1, 0));
    assert.equal(r.header.flags, MsgType.REPLY | FLAG_ERROR);
    assert.equal(r.header.error, Errno.ENOTSUP);
    assert.equal(r.payload.length, 0);
    const ok = await peer.negotiate();
    assert.equal(ok.header.flags, MsgType.REPLY);
    peer.close();
    await h.idle();
  });

  it('the typed client sees our capabilities', async () => {
    const c = await h.connect();
    assert.deepEqual(c.serverVersion, { major: 0, minor: 0 });
    assert.equal(c.serverCaps.maxMsgFds, 16);
    assert.equal(c.serverCaps.maxDataXferSize, 1 << 20);
    assert.deepEqual(c.serverCaps.unknownKeys, []);
    c.close();
    await h.idle();
  });

  it('works over a socketpair with a ServerSession, without a listening server', async () => {
    const device = new TestDevice();
    const [a, b] = native.socketpair();
    const s = new ServerSession(a, device);
    const peer = new RawPeer(b);
    await peer.negotiate();
    assert.ok(s.isNegotiated);
    const r = await peer.call(Command.REGION_READ, access(Reg.ID, 0, 4));
    assert.equal(u32(r.payload, 16), DEVICE_ID_VALUE);
    peer.close();
    assert.equal(await s.closed, null, 'orderly close');
    device.dispose();
  });
});

describe('device and region info', () => {
  let h: Harness;
  let peer: RawPeer;
  before(async () => {
    h = await startServer();
    peer = RawPeer.connect(h.path);
    await peer.negotiate(QEMU_CAPS);
  });
  after(async () => {
    peer.close();
    await h.close();
  });

  it('DEVICE_GET_INFO: exactly 16 payload bytes, RESET|PCI, ≥ 9 regions, 5 irqs', async () => {
    const r = await peer.call(Command.DEVICE_GET_INFO, le([24, 4], [0, 4], [0, 4], [0, 4]));
    assert.equal(r.payload.length, 16);
    assert.equal(r.header.size, 32);
    assert.equal(u32(r.payload, 0), 16); // argsz
    assert.equal(u32(r.payload, 4), DEVICE_FLAG_RESET | DEVICE_FLAG_PCI);
    assert.equal(u32(r.payload, 8), 10); // 9 standard + region 9
    assert.equal(u32(r.payload, 12), 5);
  });

  it('GET_REGION_INFO without caps: 32 bytes, no fd', async () => {
    const r = await peer.call(Command.DEVICE_GET_REGION_INFO, le([32, 4], [0, 4], [0, 4], [0, 4], [0, 8], [0, 8]));
    assert.equal(r.payload.length, 32);
    assert.equal(r.fds.length, 0);
    assert.equal(u32(r.payload, 0), 32);
    assert.equal(u32(r.payload, 4), REGION_FLAG_READ | REGION_FLAG_WRITE);
    assert.equal(u32(r.payload, 8), 0);
    assert.equal(u32(r.payload, 12), 0);
    assert.equal(u64(r.payload, 16), BAR0_SIZE);
    // config space, absent BAR, ROM and VGA
    const cfg = await peer.call(Command.DEVICE_GET_REGION_INFO, le([32, 4], [0, 4], [PciRegion.CONFIG, 4]));
    assert.equal(u64(cfg.payload, 16), 256);
    assert.equal(u32(cfg.payload, 4), REGION_FLAG_READ | REGION_FLAG_WRITE);
    for (const index of [1, 3, 5, PciRegion.ROM, PciRegion.VGA]) {
      const e = await peer.call(Command.DEVICE_GET_REGION_INFO, le([32, 4], [0, 4], [index, 4]));
      assert.equal(e.payload.length, 32, `region ${index}`);
      assert.equal(u64(e.payload, 16), 0, `region ${index} size`);
      assert.equal(u32(e.payload, 4), 0, `region ${index} flags`);
    }
  });

  it('GET_REGION_INFO with caps: argsz 32 → truncated reply stating the needed size, no fd; retry → caps and exactly one fd', async () => {
    const first = await peer.call(Command.DEVICE_GET_REGION_INFO, le([32, 4], [0, 4], [2, 4], [0, 4], [0, 8], [0, 8]));
    const needed = 32 + 8 + 8 + 16 * BAR2_AREAS.length;
    assert.equal(first.payload.length, 32);
    assert.equal(first.fds.length, 0, 'the fd goes only with the complete reply');
    assert.equal(u32(first.payload, 0), needed);
    assert.equal(u32(first.payload, 4), REGION_FLAG_READ | REGION_FLAG_WRITE | REGION_FLAG_MMAP | REGION_FLAG_CAPS);
    assert.equal(u32(first.payload, 12), 0, 'cap_offset 0 when caps do not fit');
    assert.equal(u64(first.payload, 16), BAR2_SIZE);

    const second = await peer.call(Command.DEVICE_GET_REGION_INFO, le([needed, 4], [0, 4], [2, 4], [0, 4], [0, 8], [0, 8]));
    assert.equal(second.payload.length, needed);
    assert.equal(second.fds.length, 1);
    assert.equal(u32(second.payload, 0), needed);
    assert.equal(u32(second.payload, 12), 32);
    assert.deepEqual(decodeRegionCaps(second.payload, 32), [{ id: REGION_CAP_SPARSE_MMAP, areas: BAR2_AREAS }]);
    const fd = second.fds[0] as number;
    assert.equal(native.fileSize(fd), BAR2_SIZE);
    native.close(fd);

    // A larger argsz than needed still gets exactly the needed bytes.
    const big = await peer.call(Command.DEVICE_GET_REGION_INFO, le([4096, 4], [0, 4], [2, 4]));
    assert.equal(big.payload.length, needed);
    assert.equal(big.fds.length, 1);
    native.close(big.fds[0] as number);
  });

  it('device-specific region 9 carries a TYPE capability', async () => {
    const first = await peer.call(Command.DEVICE_GET_REGION_INFO, le([32, 4], [0, 4], [9, 4]));
    assert.equal(u32(first.payload, 0), 48);
    assert.equal(first.payload.length, 32);
    const r = await peer.call(Command.DEVICE_GET_REGION_INFO, le([48, 4], [0, 4], [9, 4]));
    assert.equal(r.payload.length, 48);
    assert.equal(r.fds.length, 0, 'no mmap, no fd');
    assert.equal(u32(r.payload, 4), REGION_FLAG_READ | REGION_FLAG_WRITE | REGION_FLAG_CAPS);
    assert.deepEqual(decodeRegionCaps(r.payload, 32), [{ id: REGION_CAP_TYPE, type: REGION9_TYPE, subtype: REGION9_SUBTYPE }]);
  });

  it('GET_REGION_INFO argsz < 32 and index ≥ num_regions are EINVAL (QEMU forwards index == num_regions)', async () => {
    for (const p of [le([16, 4], [0, 4], [0, 4]), le([32, 4], [0, 4], [10, 4]), le([32, 4], [0, 4], [0xffffffff, 4]), le([32, 4], [0, 4])]) {
      const r = await peer.call(Command.DEVICE_GET_REGION_INFO, p);
      assert.equal(r.header.flags, MsgType.REPLY | FLAG_ERROR);
      assert.equal(r.header.error, Errno.EINVAL);
      assert.equal(r.header.size, HEADER_SIZE, 'error replies are bare headers');
    }
  });

  it('GET_IRQ_INFO per index: INTx maskable+automasked, MSI 2, MSI-X 4, ERR 1, REQ 1; index 5 EINVAL', async () => {
    const expect = [
      [0, 1 | 2 | 4, 1],
      [1, 1 | 2 | 8, 2],
      [2, 1 | 2 | 8, 4],
      [3, 1, 1],
      [4, 1, 1],
    ];
    for (const [index, flags, count] of expect) {
      const r = await peer.call(Command.DEVICE_GET_IRQ_INFO, le([16, 4], [0, 4], [index as number, 4], [0, 4]));
      assert.equal(r.payload.length, 16);
      assert.deepEqual([u32(r.payload, 0), u32(r.payload, 4), u32(r.payload, 8), u32(r.payload, 12)], [16, flags, index, count]);
    }
    const bad = await peer.call(Command.DEVICE_GET_IRQ_INFO, le([16, 4], [0, 4], [5, 4], [0, 4]));
    assert.equal(bad.header.error, Errno.EINVAL);
  });

  it('GET_REGION_IO_FDS offers no ioeventfds (count 0) and validates the index', async () => {
    const r = await peer.call(Command.DEVICE_GET_REGION_IO_FDS, le([16, 4], [0, 4], [0, 4], [0, 4]));
    assert.equal(r.payload.length, 16);
    assert.equal(u32(r.payload, 12), 0);
    assert.equal(r.fds.length, 0);
    const bad = await peer.call(Command.DEVICE_GET_REGION_IO_FDS, le([16, 4], [0, 4], [99, 4], [0, 4]));
    assert.equal(bad.header.error, Errno.EINVAL);
  });
});

describe('region fd mapping', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
  });
  after(() => h.close());

  it("mapping the region fd shows the device's memory, both ways; trapped gaps stay trapped", async () => {
    const c = await h.connect();
    const info = await c.getRegionInfo(2);
    assert.ok(info.fd !== null);
    assert.equal(info.flags & REGION_FLAG_MMAP, REGION_FLAG_MMAP);
    const shm = h.device.shm.bytes;
    shm.set(pattern(BAR2_SIZE, 7));
    const sparse = info.caps.find((x) => x.id === REGION_CAP_SPARSE_MMAP);
    assert.ok(sparse && sparse.id === REGION_CAP_SPARSE_MMAP);
    for (const area of sparse.areas) {
      // As QEMU does: each area at region.offset + area.offset, MAP_SHARED.
      const ab = native.mmap(info.fd as number, area.size, info.offset + area.offset, true);
      const view = new Uint8Array(ab);
      assert.deepEqual(view, shm.subarray(area.offset, area.offset + area.size));
      view[5] = 0x42; // client store → device memory
      assert.equal(shm[area.offset + 5], 0x42);
      shm[area.offset + 9] = 0x99; // device store → client mapping
      assert.equal(view[9], 0x99);
      // REGION_READ of a mapped area reads the same memory.
      const rd = await c.regionRead(2, area.offset, 16);
      assert.deepEqual(rd, shm.subarray(area.offset, area.offset + 16));
      await c.regionWrite(2, area.offset + 100, Uint8Array.of(1, 2, 3, 4));
      assert.deepEqual([...view.subarray(100, 104)], [1, 2, 3, 4]);
      native.munmap(ab);
    }
    // The gap [4096, 8192) is not in an area: trapped registers answer.
    const gap = await c.regionRead(2, 4096, 4);
    assert.deepEqual([...gap], [0xa1, 0xa1, 0xa1, 0xa1]);
    // An access straddling an area and the gap is trapped too (not half-mapped).
    const straddle = await c.regionRead(2, 4094, 4);
    assert.deepEqual([...straddle], [0xa0, 0xa0, 0xa1, 0xa1]);
    native.close(info.fd as number);
    c.close();
    await h.idle();
  });
});

describe('trapped register access', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
  });
  after(() => h.close());

  it('REGION_READ/WRITE reach the register file, split into aligned 1/2/4-byte accesses', async () => {
    const c = await h.connect();
    const dev = h.device;
    assert.equal(u32(await c.regionRead(0, Reg.ID, 4), 0), DEVICE_ID_VALUE);
    dev.accesses.length = 0;
    await c.regionWrite(0, Reg.SCRATCH, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
    assert.deepEqual(
      dev.accesses.map((a) => [a.offset, a.width, a.write]),
      [
        [Reg.SCRATCH, 4, true],
        [Reg.SCRATCH + 4, 4, true],
      ],
    );
    assert.deepEqual([...(await c.regionRead(0, Reg.SCRATCH, 8))], [1, 2, 3, 4, 5, 6, 7, 8]);
    dev.accesses.length = 0;
    await c.regionWrite(0, Reg.SCRATCH + 1, Uint8Array.of(0xaa, 0xbb, 0xcc, 0xdd, 0xee));
    assert.deepEqual(
      dev.accesses.map((a) => [a.offset - Reg.SCRATCH, a.width]),
      [
        [1, 1],
        [2, 2],
        [4, 2],
      ],
    );
    assert.deepEqual([...(await c.regionRead(0, Reg.SCRATCH, 8))], [1, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 7, 8]);
    // A large read crosses many registers and returns every byte.
    const big = await c.regionRead(0, 0, BAR0_SIZE);
    assert.equal(big.length, BAR0_SIZE);
    assert.equal(u32(big, 0), DEVICE_ID_VALUE);
    // The read-only ID register ignores writes.
    await c.regionWrite(0, Reg.ID, le([0, 4]));
    assert.equal(u32(await c.regionRead(0, Reg.ID, 4), 0), DEVICE_ID_VALUE);
    c.close();
    await h.idle();
  });

  it('REGION_WRITE replies with the 16-byte access header echo; REGION_READ with 16 + count bytes', async () => {
    const peer = RawPeer.connect(h.path);
    await peer.negotiate();
    const w = await peer.call(Command.REGION_WRITE, new Uint8Array([...access(Reg.SCRATCH, 0, 4), 9, 8, 7, 6]));
    assert.equal(w.payload.length, 16);
    assert.deepEqual(w.payload, access(Reg.SCRATCH, 0, 4));
    const r = await peer.call(Command.REGION_READ, access(Reg.SCRATCH, 0, 4));
    assert.equal(r.header.size, HEADER_SIZE + 16 + 4);
    assert.deepEqual(r.payload.subarray(0, 16), access(Reg.SCRATCH, 0, 4));
    assert.deepEqual([...r.payload.subarray(16)], [9, 8, 7, 6]);
    peer.close();
    await h.idle();
  });

  it('posted (NO_REPLY) writes get no reply and are applied in order before a later read is answered', async () => {
    const peer = RawPeer.connect(h.path);
    await peer.negotiate();
    for (let i = 0; i < 200; i++) peer.post(Command.REGION_WRITE, new Uint8Array([...access(Reg.SCRATCH + 16, 0, 4), ...le([i, 4])]));
    // Pipelined right behind them: the read must see the last write.
    const r = await peer.call(Command.REGION_READ, access(Reg.SCRATCH + 16, 0, 4));
    assert.equal(u32(r.payload, 16), 199);
    // A posted read, reset and GET_INFO are silent too.
    peer.post(Command.REGION_READ, access(Reg.SCRATCH, 0, 4));
    peer.post(Command.DEVICE_GET_INFO, le([16, 4]));
    const again = await peer.call(Command.REGION_READ, access(Reg.SCRATCH + 16, 0, 4));
    assert.equal(u32(again.payload, 16), 199);
    await sleep(30);
    assert.equal(peer.received.length, 0, 'nothing but the two read replies arrived');
    peer.close();
    await h.idle();
  });

  it('the typed client posts writes like QEMU', async () => {
    const c = await h.connect();
    for (let i = 0; i < 100; i++) c.regionWritePosted(0, Reg.SCRATCH + 4 * (i % 8), le([i, 4]));
    const r = await c.regionRead(0, Reg.SCRATCH, 32);
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 7].map((k) => u32(r, 4 * k)),
      [96, 97, 98, 99, 92, 93, 94, 95],
    );
    c.close();
    await h.idle();
  });
});

describe('REGION_WRITE_MULTI', () => {
  let h: Harness;
  before(async () => {
    h = await startServer({ writeMultiple: true });
  });
  after(() => h.close());

  function multi(entries: [number, number, number, Uint8Array][]): Uint8Array {
    const p = new Uint8Array(8 + 24 * entries.length);
    p.set(le([entries.length, 8]));
    entries.forEach(([offset, region, count, data], i) => {
      p.set(le([offset, 8], [region, 4], [count, 4]), 8 + 24 * i);
      p.set(data, 8 + 24 * i + 16);
    });
    return p;
  }

  it('is offered only when the server enables it and the client asks', async () => {
    const c = await h.connect({ capabilities: { write_multiple: true } });
    assert.equal(c.serverCaps.writeMultiple, true);
    c.close();
    await h.idle();
    const d = await h.connect();
    assert.equal(d.serverCaps.writeMultiple, false);
    d.close();
    await h.idle();
  });

  it('applies every entry in order, including 8-byte writes of any bit pattern', async () => {
    const c = await h.connect({ capabilities: { write_multiple: true } });
    const ones = new Uint8Array(8).fill(0xff);
    const r = await c.request(
      Command.REGION_WRITE_MULTI,
      multi([
        [Reg.SCRATCH, 0, 4, le([0x11223344, 4], [0, 4])],
        [Reg.SCRATCH + 8, 0, 8, ones],
        [Reg.SCRATCH, 0, 1, le([0x55, 8])],
        [Reg.SCRATCH + 16, 0, 8, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 0x80)],
      ]),
    );
    assert.equal(u64(r.payload, 0), 4);
    const got = await c.regionRead(0, Reg.SCRATCH, 24);
    assert.deepEqual([...got], [0x55, 0x33, 0x22, 0x11, 0, 0, 0, 0, ...ones, 1, 2, 3, 4, 5, 6, 7, 0x80]);
    c.close();
    await h.idle();
  });

  it('rejects wr_cnt mismatches and entries wider than 8 bytes', async () => {
    const c = await h.connect({ capabilities: { write_multiple: true } });
    const good = multi([[Reg.SCRATCH, 0, 4, new Uint8Array(8)]]);
    const short = good.subarray(0, good.length - 1);
    const wide = multi([[Reg.SCRATCH, 0, 9, new Uint8Array(8)]]);
    const zero = multi([[Reg.SCRATCH, 0, 0, new Uint8Array(8)]]);
    const none = le([0, 8]);
    for (const p of [short, wide, zero, none]) {
      await assert.rejects(c.request(Command.REGION_WRITE_MULTI, p), { errno: Errno.EINVAL });
    }
    assert.deepEqual([...(await c.regionRead(0, Reg.ID, 4))], [...le([DEVICE_ID_VALUE, 4])]);
    c.close();
    await h.idle();
  });
});

describe('DEVICE_RESET', () => {
  let h: Harness;
  before(async () => {
    h = await startServer();
  });
  after(() => h.close());

  it('replies with a bare header and restores config space and device state', async () => {
    const peer = RawPeer.connect(h.path);
    await peer.negotiate();
    const cfg = (offset: number, data: Uint8Array) =>
      peer.call(Command.REGION_WRITE, new Uint8Array([...access(offset, PciRegion.CONFIG, data.length), ...data]));
    const readCfg = async (offset: number) => u32((await peer.call(Command.REGION_READ, access(offset, PciRegion.CONFIG, 4))).payload, 16);
    const power = await peer.call(Command.REGION_READ, access(0, PciRegion.CONFIG, 256));
    await cfg(0x04, le([0x0406, 2]));
    await cfg(0x10, le([0xfebf0000, 4]));
    await cfg(0x3c, Uint8Array.of(11));
    await peer.call(Command.REGION_WRITE, new Uint8Array([...access(Reg.SCRATCH, 0, 4), 1, 2, 3, 4]));
    assert.equal((await readCfg(0x04)) & 0xffff, 0x0406);
    assert.equal(await readCfg(0x10), 0xfebf0000);
    const resetsBefore = h.device.resets;

    const r = await peer.call(Command.DEVICE_RESET, new Uint8Array(0));
    assert.equal(r.header.size, HEADER_SIZE, 'header only (QEMU accepts 16 bytes)');
    assert.equal(r.header.flags, MsgType.REPLY);
    assert.equal(h.device.resets, resetsBefore + 1);
    const after = await peer.call(Command.REGION_READ, access(0, PciRegion.CONFIG, 256));
    assert.deepEqual(after.payload.subarray(16), power.payload.subarray(16));
    const scratch = await peer.call(Command.REGION_READ, access(Reg.SCRATCH, 0, 4));
    assert.equal(u32(scratch.payload, 16), 0);
    // A reset with a payload is malformed.
    const bad = await peer.call(Command.DEVICE_RESET, new Uint8Array(4));
    assert.equal(bad.header.error, Errno.EINVAL);
    peer.close();
    await h.idle();
  });

  it('keeps installed eventfds and DMA mappings across a reset (QEMU re-enables itself)', async () => {
    const c = await h.connect();
    const efd = native.eventfd();
    await c.setIrqs(0, 4 | 32, 0, 1, [efd]);
    const mfd = native.memfd('reset-ram', 4096);
    await c.dmaMap(0x10000, 4096, 3, mfd);
    await c.reset();
    assert.equal(h.device.memory.mappings.length, 1);
    assert.equal(h.device.irqs.mode, 'intx');
    await c.regionWrite(0, Reg.IRQ, le([1, 4]));
    assert.equal(native.eventfdRead(efd), 1);
    await c.regionWrite(0, Reg.IRQ, le([0, 4]));
    native.close(efd);
    native.close(mfd);
    c.close();
    await h.idle();
    assert.equal(h.device.memory.mappings.length, 0, 'dropped on disconnect');
    assert.equal(h.device.irqs.mode, 'none');
  });
});

describe('client disconnect', () => {
  it('detaches the backend: DMA fds and eventfds are closed, device state kept for the next client', async () => {
    const h = await startServer();
    try {
      const base = native.fdCount();
      const c = await h.connect();
      const efds = [native.eventfd(), native.eventfd()];
      await c.setIrqs(1, 4 | 32, 0, 2, efds);
      const mfd = native.memfd('disc', 8192);
      await c.dmaMap(0, 8192, 3, mfd);
      await c.regionWrite(0, Reg.SCRATCH, le([0xabcd, 4]));
      for (const fd of [...efds, mfd]) native.close(fd);
      assert.equal(native.fdCount(), base + 2 + 3, 'both socket ends + the server copies of 3 fds');
      c.close();
      await h.idle();
      await until(() => native.fdCount() === base, 1000, 'fds released');
      const d = await h.connect();
      assert.equal(u32(await d.regionRead(0, Reg.SCRATCH, 4), 0), 0xabcd);
      d.close();
      await h.idle();
    } finally {
      await h.close();
    }
  });

  it('refuses a second client while one is attached', async () => {
    const h = await startServer();
    try {
      const c = await h.connect();
      const peer = RawPeer.connect(h.path);
      assert.equal(await peer.closed(), null, 'closed by the server at once');
      assert.ok(h.logs.some((l) => l.includes('refusing a second client')));
      assert.equal(u32(await c.regionRead(0, Reg.ID, 4), 0), DEVICE_ID_VALUE);
      c.close();
      await h.idle();
    } finally {
      await h.close();
    }
  });
});
