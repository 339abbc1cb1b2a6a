// Message-based DMA: ranges mapped without an fd are reached through our own
// DMA_READ/DMA_WRITE requests, which the client serves from its memory. Both
// byte layouts (QEMU's u32 count, the specification's u64), chunking at
// max_data_xfer_size, ordering against region replies, and failure paths.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { iova } from '../../src/device/addresses.js';
import * as native from '../../src/native/index.js';
import { Command, DMA_FLAG_READ, DMA_FLAG_WRITE, Errno, FLAG_ERROR, HEADER_SIZE, MsgType } from '../../src/vfio-user/constants.js';
import type { DmaLayout } from '../../src/vfio-user/session.js';
import { BufferMemory, type Harness, le, pattern, RawPeer, Reg, startServer, u32, u64, until } from './fixture.js';

const RW = DMA_FLAG_READ | DMA_FLAG_WRITE;
const BASE = 0x200000;
const SIZE = 4 << 20;

for (const layout of ['qemu', 'spec'] as DmaLayout[]) {
  describe(`message DMA, ${layout} layout`, () => {
    let h: Harness;
    before(async () => {
      h = await startServer({ dmaLayout: layout });
    });
    after(() => h.close());

    it('the device reads and writes guest memory mapped without an fd', async () => {
      const ram = new BufferMemory(BASE, SIZE);
      ram.bytes.set(pattern(SIZE, 11));
      const c = await h.connect({ memory: ram, dmaLayout: layout });
      await c.dmaMap(BASE, SIZE, RW); // no fd: QEMU's anonymous RAM
      const mem = h.device.memory;
      const out = new Uint8Array(3000);
      await mem.read(iova(BASE + 123), out);
      assert.deepEqual(out, ram.bytes.subarray(123, 3123));
      assert.deepEqual(ram.reads, [{ address: BASE + 123, length: 3000 }]);
      const data = pattern(777, 5);
      await mem.write(iova(BASE + 4000), data);
      assert.deepEqual(ram.bytes.subarray(4000, 4777), data);
      assert.deepEqual(ram.writes, [{ address: BASE + 4000, length: 777 }]);
      // Small and odd sizes, first and last byte of the range.
      const one = new Uint8Array(1);
      await mem.read(iova(BASE + SIZE - 1), one);
      assert.equal(one[0], ram.bytes[SIZE - 1]);
      await mem.write(iova(BASE), Uint8Array.of(0xab));
      assert.equal(ram.bytes[0], 0xab);
      c.close();
      await h.idle();
    });

    it('transfers larger than max_data_xfer_size are chunked', async () => {
      const ram = new BufferMemory(BASE, SIZE);
      ram.bytes.set(pattern(SIZE, 12));
      const c = await h.connect({ memory: ram, dmaLayout: layout, maxDataXferSize: 4096 });
      assert.equal(h.server.session?.maxDataXferSize, 4096);
      await c.dmaMap(BASE, SIZE, RW);
      const mem = h.device.memory;
      const out = new Uint8Array(10000);
      await mem.read(iova(BASE + 10), out);
      assert.deepEqual(out, ram.bytes.subarray(10, 10010));
      assert.deepEqual(
        ram.reads.map((r) => [r.address - BASE, r.length]),
        [
          [10, 4096],
          [4106, 4096],
          [8202, 1808],
        ],
      );
      const data = pattern(9000, 13);
      await mem.write(iova(BASE + 65536), data);
      assert.deepEqual(ram.bytes.subarray(65536, 65536 + 9000), data);
      assert.deepEqual(
        ram.writes.map((r) => r.length),
        [4096, 4096, 808],
      );
      c.close();
      await h.idle();
    });

    it('a 2.5 MiB transfer goes in 1 MiB messages by default', async () => {
      const ram = new BufferMemory(BASE, SIZE);
      ram.bytes.set(pattern(SIZE, 14));
      const c = await h.connect({ memory: ram, dmaLayout: layout });
      await c.dmaMap(BASE, SIZE, RW);
      const out = new Uint8Array(2.5 * (1 << 20));
      await h.device.memory.read(iova(BASE), out);
      assert.deepEqual(out, ram.bytes.subarray(0, out.length));
      assert.deepEqual(
        ram.reads.map((r) => r.length),
        [1 << 20, 1 << 20, 1 << 19],
      );
      const data = pattern(out.length, 15);
      await h.device.memory.write(iova(BASE + 4096), data);
      assert.deepEqual(ram.bytes.subarray(4096, 4096 + data.length), data);
      c.close();
      await h.idle();
    });

    it('a transfer across an fd-backed range and a message range uses both paths', async () => {
      const ram = new BufferMemory(BASE + 0x10000, 0x10000);
      ram.bytes.set(pattern(0x10000, 16));
      const fd = native.memfd('mixed', 0x10000);
      const ab = native.mmap(fd, 0x10000);
      new Uint8Array(ab).set(pattern(0x10000, 17));
      const c = await h.connect({ memory: ram, dmaLayout: layout });
      await c.dmaMap(BASE, 0x10000, RW, fd);
      await c.dmaMap(BASE + 0x10000, 0x10000, RW);
      const out = new Uint8Array(0x200);
      await h.device.memory.read(iova(BASE + 0xff00), out);
      assert.deepEqual(out.subarray(0, 0x100), new Uint8Array(ab).subarray(0xff00));
      assert.deepEqual(out.subarray(0x100), ram.bytes.subarray(0, 0x100));
      assert.equal(ram.reads.length, 1, 'only the message half went over the socket');
      native.munmap(ab);
      native.close(fd);
      c.close();
      await h.idle();
    });

    it('errors from the client reach the device: EFAULT outside its memory, ENOSYS without memory', async () => {
      const ram = new BufferMemory(BASE, 0x1000); // smaller than what is mapped
      const c = await h.connect({ memory: ram, dmaLayout: layout });
      await c.dmaMap(BASE, 0x10000, RW);
      await assert.rejects(h.device.memory.read(iova(BASE + 0x2000), new Uint8Array(4)), { errno: Errno.EFAULT });
      await assert.rejects(h.device.memory.write(iova(BASE + 0x2000), new Uint8Array(4)), { errno: Errno.EFAULT });
      c.close();
      await h.idle();
      const d = await h.connect({ dmaLayout: layout }); // serves no memory
      await d.dmaMap(BASE, 0x10000, RW);
      await assert.rejects(h.device.memory.read(iova(BASE), new Uint8Array(4)), { errno: Errno.ENOSYS });
      // The connection is still fine.
      assert.equal(u32(await d.regionRead(0, Reg.ID, 4), 0), 0xc0ffee01);
      d.close();
      await h.idle();
    });
  });
}

describe('message DMA on the wire', () => {
  let h: Harness;
  let peers: RawPeer[] = [];
  before(async () => {
    h = await startServer({ dmaLayout: 'qemu', dmaTimeoutMs: 1000 });
  });
  after(() => h.close());
  afterEach(async () => {
    for (const p of peers) if (!p.isClosed) p.close();
    peers = [];
    await h.idle();
  });

  async function rawClient(): Promise<RawPeer> {
    const peer = RawPeer.connect(h.path);
    peers.push(peer);
    await peer.negotiate();
    const m = await peer.call(Command.DMA_MAP, le([32, 4], [RW, 4], [0, 8], [BASE, 8], [0x10000, 8]));
    assert.equal(m.header.size, HEADER_SIZE, 'DMA_MAP reply is a bare header');
    return peer;
  }

  it("QEMU layout: DMA_READ is {u64 address, u32 count} in a 32-byte message; its reply's data sits at payload offset 12", async () => {
    const peer = await rawClient();
    const out = new Uint8Array(8);
    const reading = h.device.memory.read(iova(BASE + 0x40), out);
    const req = await peer.next();
    assert.equal(req.header.cmd, Command.DMA_READ);
    assert.equal(req.header.flags, MsgType.COMMAND);
    assert.equal(req.header.size, HEADER_SIZE + 16);
    assert.equal(u64(req.payload, 0), BASE + 0x40);
    assert.equal(u32(req.payload, 8), 8);
    // QEMU's reply: 32 + count bytes, data at message offset 28, 4 zero bytes at the end.
    const reply = new Uint8Array(16 + 8);
    reply.set(req.payload.subarray(0, 12));
    reply.set([1, 2, 3, 4, 5, 6, 7, 8], 12);
    peer.send(Command.DMA_READ, reply, { id: req.header.id, flags: MsgType.REPLY });
    await reading;
    assert.deepEqual([...out], [1, 2, 3, 4, 5, 6, 7, 8]);
    peer.close();
    await h.idle();
  });

  it('QEMU layout: DMA_WRITE data at message offset 28; a bare-header reply completes it', async () => {
    const peer = await rawClient();
    const writing = h.device.memory.write(iova(BASE + 0x80), Uint8Array.of(9, 8, 7, 6, 5));
    const req = await peer.next();
    assert.equal(req.header.cmd, Command.DMA_WRITE);
    assert.equal(u64(req.payload, 0), BASE + 0x80);
    assert.equal(u32(req.payload, 8), 5);
    assert.deepEqual([...req.payload.subarray(12, 17)], [9, 8, 7, 6, 5]);
    peer.send(Command.DMA_WRITE, new Uint8Array(0), { id: req.header.id, flags: MsgType.REPLY });
    await writing;
    peer.close();
    await h.idle();
  });

  it('a region write that starts DMA is answered before the DMA request goes out', async () => {
    const peer = await rawClient();
    const w = (reg: number, v: number) => new Uint8Array([...le([reg, 8], [0, 4], [4, 4]), ...le([v, 4])]);
    await peer.call(Command.REGION_WRITE, w(Reg.DMA_ADDR_LO, BASE + 0x100));
    await peer.call(Command.REGION_WRITE, w(Reg.DMA_LEN, 4));
    const kick = peer.send(Command.REGION_WRITE, w(Reg.DMA_KICK, 1));
    const first = await peer.next();
    assert.equal(first.header.id, kick, 'the REGION_WRITE reply comes first');
    assert.equal(first.header.flags, MsgType.REPLY);
    const dma = await peer.next();
    assert.equal(dma.header.cmd, Command.DMA_READ);
    assert.equal(u64(dma.payload, 0), BASE + 0x100);
    const reply = new Uint8Array(16 + 4);
    reply.set(dma.payload.subarray(0, 12));
    reply.set([0xde, 0xad, 0xbe, 0xef], 12);
    peer.send(Command.DMA_READ, reply, { id: dma.header.id, flags: MsgType.REPLY });
    const readReg = async (reg: number) => u32((await peer.call(Command.REGION_READ, le([reg, 8], [0, 4], [4, 4]))).payload, 16);
    await until(() => h.device.bar0[Reg.DMA_DONE] === 1, 2000, 'DMA done');
    assert.equal(await readReg(Reg.DMA_STATUS), 0);
    assert.equal(await readReg(Reg.SCRATCH), 0xefbeadde);
    peer.close();
    await h.idle();
    h.device.bar0.fill(0, Reg.DMA_DONE, Reg.DMA_DONE + 4);
  });

  it('the server keeps serving requests while its own DMA request is outstanding', async () => {
    const peer = await rawClient();
    const reading = h.device.memory.read(iova(BASE), new Uint8Array(4));
    const req = await peer.next();
    assert.equal(req.header.cmd, Command.DMA_READ);
    // Before answering, the client keeps using the device (QEMU's vCPU holds the BQL meanwhile).
    const r = await peer.call(Command.REGION_READ, le([Reg.ID, 8], [0, 4], [4, 4]));
    assert.equal(u32(r.payload, 16), 0xc0ffee01);
    const reply = new Uint8Array(16 + 4);
    reply.set(req.payload.subarray(0, 12));
    peer.send(Command.DMA_READ, reply, { id: req.header.id, flags: MsgType.REPLY });
    await reading;
    peer.close();
    await h.idle();
  });

  it('error replies, short replies, timeouts and disconnects reject the device access', async () => {
    const peer = await rawClient();
    const mem = h.device.memory;
    // Error reply with an errno.
    let p = mem.read(iova(BASE), new Uint8Array(4));
    let req = await peer.next();
    peer.send(Command.DMA_READ, new Uint8Array(0), { id: req.header.id, flags: MsgType.REPLY | FLAG_ERROR, error: Errno.EPERM });
    await assert.rejects(p, { errno: Errno.EPERM });
    // A reply carrying fewer bytes than asked.
    p = mem.read(iova(BASE), new Uint8Array(64));
    req = await peer.next();
    peer.send(Command.DMA_READ, new Uint8Array(12 + 10), { id: req.header.id, flags: MsgType.REPLY });
    await assert.rejects(p, { errno: Errno.EPROTO });
    // A reply with the wrong command for the id is not ours: ignored, then the timeout hits.
    p = mem.read(iova(BASE), new Uint8Array(4));
    req = await peer.next();
    peer.send(Command.DMA_WRITE, new Uint8Array(0), { id: req.header.id, flags: MsgType.REPLY });
    await assert.rejects(p, { errno: Errno.ETIMEDOUT });
    // A late reply after the timeout is ignored too; the connection lives on.
    peer.send(Command.DMA_READ, new Uint8Array(16 + 4), { id: req.header.id, flags: MsgType.REPLY });
    assert.equal(u32((await peer.call(Command.REGION_READ, le([Reg.ID, 8], [0, 4], [4, 4]))).payload, 16), 0xc0ffee01);
    // The client goes away with a request outstanding.
    p = mem.read(iova(BASE), new Uint8Array(4));
    await peer.next();
    peer.close();
    await assert.rejects(p, (e: { errno?: number }) => e.errno === Errno.ECONNRESET || e.errno === Errno.ENODEV);
    await h.idle();
  });

  it('a range unmapped while a message transfer is in flight fails with EFAULT instead of touching its closed fd', async () => {
    const ram = new BufferMemory(BASE, 0x10000);
    const fd = native.memfd('inflight', 0x10000);
    const peer = await rawClient(); // [BASE, +64 KiB) without fd
    await peer.call(Command.DMA_MAP, le([32, 4], [RW, 4], [0, 8], [BASE + 0x10000, 8], [0x10000, 8]), { fds: [fd] });
    native.close(fd);
    const base = native.fdCount();
    // One read spanning the message range and the fd range.
    const p = h.device.memory.read(iova(BASE + 0xf000), new Uint8Array(0x2000));
    const req = await peer.next();
    assert.equal(req.header.cmd, Command.DMA_READ);
    // QEMU unmaps the fd range before answering (it may: messages are independent).
    const un = await peer.call(Command.DMA_UNMAP, le([24, 4], [0, 4], [BASE + 0x10000, 8], [0x10000, 8]));
    assert.equal(un.header.flags, MsgType.REPLY);
    assert.equal(native.fdCount(), base - 1, 'the range fd is closed by the unmap');
    // Something else may now own that fd number; the transfer must not map it.
    const reuse = native.memfd('reuse', 0x10000);
    const reply = new Uint8Array(16 + 0x1000);
    reply.set(req.payload.subarray(0, 12));
    reply.set(ram.bytes.subarray(0xf000), 12);
    peer.send(Command.DMA_READ, reply, { id: req.header.id, flags: MsgType.REPLY });
    await assert.rejects(p, { errno: Errno.EFAULT });
    native.close(reuse);
    peer.close();
    await h.idle();
  });
});

describe('message DMA and unmap', () => {
  it('a message range unmapped while an earlier piece is in flight is not asked for (EFAULT)', async () => {
    const h = await startServer({ dmaLayout: 'qemu' });
    try {
      const peer = RawPeer.connect(h.path);
      await peer.negotiate();
      await peer.call(Command.DMA_MAP, le([32, 4], [RW, 4], [0, 8], [BASE, 8], [0x1000, 8]));
      await peer.call(Command.DMA_MAP, le([32, 4], [RW, 4], [0, 8], [BASE + 0x1000, 8], [0x1000, 8]));
      const p = h.device.memory.write(iova(BASE + 0xff0), new Uint8Array(0x20));
      const first = await peer.next();
      assert.equal(u64(first.payload, 0), BASE + 0xff0);
      await peer.call(Command.DMA_UNMAP, le([24, 4], [0, 4], [BASE + 0x1000, 8], [0x1000, 8]));
      peer.send(Command.DMA_WRITE, new Uint8Array(0), { id: first.header.id, flags: MsgType.REPLY });
      await assert.rejects(p, { errno: Errno.EFAULT });
      await assert.rejects(peer.next(100), /timed out/, 'no DMA_WRITE for the unmapped range');
      peer.close();
      await h.idle();
    } finally {
      await h.close();
    }
  });
});

describe('message DMA on the wire, spec layout', () => {
  it('DMA_READ/DMA_WRITE carry a u64 count and data at payload offset 16', async () => {
    const h = await startServer({ dmaLayout: 'spec' });
    try {
      const peer = RawPeer.connect(h.path);
      await peer.negotiate();
      await peer.call(Command.DMA_MAP, le([32, 4], [RW, 4], [0, 8], [BASE, 8], [0x10000, 8]));
      const out = new Uint8Array(4);
      const reading = h.device.memory.read(iova(BASE + 8), out);
      const req = await peer.next();
      assert.equal(req.header.size, HEADER_SIZE + 16);
      assert.equal(u64(req.payload, 0), BASE + 8);
      assert.equal(u64(req.payload, 8), 4);
      const reply = new Uint8Array(16 + 4);
      reply.set(req.payload.subarray(0, 16));
      reply.set([4, 3, 2, 1], 16);
      peer.send(Command.DMA_READ, reply, { id: req.header.id, flags: MsgType.REPLY });
      await reading;
      assert.deepEqual([...out], [4, 3, 2, 1]);
      const writing = h.device.memory.write(iova(BASE + 16), Uint8Array.of(7, 7, 7));
      const w = await peer.next();
      assert.equal(w.header.cmd, Command.DMA_WRITE);
      assert.equal(w.header.size, HEADER_SIZE + 16 + 3);
      assert.equal(u64(w.payload, 8), 3);
      assert.deepEqual([...w.payload.subarray(16)], [7, 7, 7]);
      // libvfio-user's reply form {u64 address, u64 count} is accepted like a bare header.
      peer.send(Command.DMA_WRITE, w.payload.subarray(0, 16), { id: w.header.id, flags: MsgType.REPLY });
      await writing;
      peer.close();
      await h.idle();
    } finally {
      await h.close();
    }
  });
});

describe('layout agreement', () => {
  it('session and client must agree: a mismatch shifts the data by 4 bytes (why the layout is configurable)', async () => {
    const h = await startServer({ dmaLayout: 'qemu' });
    try {
      const ram = new BufferMemory(BASE, 0x1000);
      const c = await h.connect({ memory: ram, dmaLayout: 'spec' });
      await c.dmaMap(BASE, 0x1000, RW);
      await h.device.memory.write(iova(BASE), Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
      assert.notDeepEqual([...ram.bytes.subarray(0, 8)], [1, 2, 3, 4, 5, 6, 7, 8]);
      assert.deepEqual([...ram.bytes.subarray(0, 4)], [5, 6, 7, 8]);
      c.close();
      await h.idle();
    } finally {
      await h.close();
    }
  });
});

describe('the client library serving DMA', () => {
  it('answers a DMA request for an address beyond 2^53 with EFAULT instead of a rounded address', async () => {
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { Connection } = await import('../../src/vfio-user/connection.js');
    const { writeHeader } = await import('../../src/vfio-user/codec.js');
    const { VfioUserClient } = await import('../../src/vfio-user/client.js');
    const path = join(tmpdir(), `mediated-raw-server-${process.pid}.sock`);
    const lfd = native.listen(path);
    const ram = new BufferMemory(0, 4096);
    const connecting = VfioUserClient.connect(path, { memory: ram });
    let fd = -1;
    await until(() => (fd = native.accept(lfd)) >= 0, 3000, 'the client to connect');
    const replies: { id: number; flags: number; error: number }[] = [];
    const send = (id: number, cmd: number, flags: number, payload: Uint8Array) => {
      const m = new Uint8Array(HEADER_SIZE + payload.length);
      writeHeader(new DataView(m.buffer), 0, id, cmd, m.length, flags);
      m.set(payload, HEADER_SIZE);
      conn.send(m, m.length);
    };
    // A raw server: answers VERSION, then asks for 4 bytes at 0xffffffff_00000000.
    const conn = new Connection(
      fd,
      {
        onMessage: (h) => {
          if (h.cmd === Command.VERSION) {
            const json = Buffer.from('{"capabilities":{"max_msg_fds":1,"max_data_xfer_size":1048576}}\0');
            const p = new Uint8Array(4 + json.length);
            p.set(json, 4);
            send(h.id, Command.VERSION, MsgType.REPLY, p);
          } else replies.push({ id: h.id, flags: h.flags, error: h.error });
        },
        onOversized: () => {},
        onClose: () => {},
      },
      { maxMessageSize: 1 << 20 },
    );
    const client = await connecting;
    try {
      send(7, Command.DMA_READ, MsgType.COMMAND, le([0, 4], [0xffffffff, 4], [4, 4], [0, 4]));
      await until(() => replies.length > 0, 3000, 'the DMA reply');
      assert.equal(replies[0]?.id, 7);
      assert.ok((replies[0]?.flags ?? 0) & FLAG_ERROR, 'an error reply');
      assert.equal(replies[0]?.error, Errno.EFAULT);
      assert.equal(ram.reads.length, 0, 'memory was never touched');
    } finally {
      client.close();
      conn.close(null);
      native.close(lfd);
      (await import('node:fs')).rmSync(path, { force: true });
    }
  });
});
