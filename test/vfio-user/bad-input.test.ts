// Malformed and hostile input over a real socket. Every case must leave the
// server alive: either the same connection answers a later well-formed request,
// or (where the protocol demands a close) a new client connects and works.
// Received fds must never leak: the process's fd count is checked around each case.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import * as native from '../../src/native/index.js';
import type { VfioUserClient } from '../../src/vfio-user/client.js';
import { writeHeader } from '../../src/vfio-user/codec.js';
import {
  Command,
  Errno,
  FEATURE_GET,
  FEATURE_PROBE,
  FEATURE_SET,
  FLAG_ERROR,
  FLAG_NO_REPLY,
  HEADER_SIZE,
  IRQ_SET_ACTION_MASK,
  IRQ_SET_ACTION_TRIGGER,
  IRQ_SET_ACTION_UNMASK,
  IRQ_SET_DATA_BOOL,
  IRQ_SET_DATA_EVENTFD,
  IRQ_SET_DATA_NONE,
  MsgType,
  PciIrq,
  PciRegion,
} from '../../src/vfio-user/constants.js';
import { MESSAGES } from '../../src/vfio-user/messages.js';
import { DEVICE_ID_VALUE, type Harness, le, RawPeer, Reg, sleep, startServer, u32, until, versionPayload } from './fixture.js';

const access = (offset: number, region: number, count: number) => le([offset, 8], [region, 4], [count, 4]);

function header(id: number, cmd: number, size: number, flags = 0, error = 0): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  writeHeader(new DataView(b.buffer), 0, id, cmd, size, flags, error);
  return b;
}

/** The server still answers: a config read of the vendor ID and a BAR0 register. */
async function alive(c: VfioUserClient | RawPeer): Promise<void> {
  if ('regionRead' in c) {
    assert.equal(u32(await c.regionRead(0, Reg.ID, 4), 0), DEVICE_ID_VALUE);
    return;
  }
  const r = await c.call(Command.REGION_READ, access(Reg.ID, 0, 4));
  assert.equal(u32(r.payload, 16), DEVICE_ID_VALUE);
}

describe('bad input', () => {
  let h: Harness;
  const peers: RawPeer[] = [];
  const raw = () => {
    const p = RawPeer.connect(h.path);
    peers.push(p);
    return p;
  };
  before(async () => {
    h = await startServer();
  });
  after(() => h.close());
  afterEach(async () => {
    for (const p of peers.splice(0)) if (!p.isClosed) p.close();
    await h.idle();
  });

  /** Sends one command and expects a bare error header with `errno`. */
  async function expectError(peer: RawPeer, cmd: number, payload: Uint8Array, errno: number, fds: number[] | null = null): Promise<void> {
    const r = await peer.call(cmd, payload, { fds });
    assert.equal(r.header.flags, MsgType.REPLY | FLAG_ERROR, `cmd ${cmd}: error flags`);
    assert.equal(r.header.error, errno, `cmd ${cmd}: errno`);
    assert.equal(r.header.size, HEADER_SIZE, `cmd ${cmd}: bare header`);
    assert.equal(r.fds.length, 0);
  }

  // -------------------------------------------------------------- framing

  it('a client that vanishes mid-header is dropped; a new client works', async () => {
    const p = raw();
    await p.negotiate();
    p.sendBytes(header(1, Command.REGION_READ, 32).subarray(0, 9));
    await sleep(10);
    p.close();
    await h.idle();
    assert.ok(
      h.logs.some((l) => l.includes('in the middle of a message')),
      'the partial message is reported',
    );
    const c = await h.connect();
    await alive(c);
    c.close();
  });

  it('a client that vanishes mid-body (after a header announcing more) is dropped; a new client works', async () => {
    const p = raw();
    await p.negotiate();
    p.sendBytes(new Uint8Array([...header(1, Command.REGION_WRITE, 16 + 16 + 4096), ...access(0, 0, 4096), 1, 2, 3]));
    await sleep(10);
    p.close();
    await h.idle();
    const c = await h.connect();
    await alive(c);
    c.close();
  });

  it('a header declaring a size below 16 closes the connection; a new client works', async () => {
    const p = raw();
    await p.negotiate();
    p.sendBytes(header(7, Command.DEVICE_GET_INFO, 8));
    assert.match(String(await p.closed()), /smaller than the header|null/);
    await h.idle();
    assert.ok(h.logs.some((l) => l.includes('smaller than the header')));
    const c = await h.connect();
    await alive(c);
    c.close();
  });

  it('unknown type bits close the connection; a new client works', async () => {
    for (const flags of [2, 0xf, 0x12]) {
      const p = raw();
      await p.negotiate();
      p.send(Command.DEVICE_GET_INFO, le([16, 4]), { flags });
      await p.closed();
      assert.equal(p.received.length, 0, 'no reply to it');
      await h.idle();
    }
    assert.ok(h.logs.some((l) => l.includes('neither command nor reply')));
    const c = await h.connect();
    await alive(c);
    c.close();
  });

  it('an oversized message gets E2BIG, its body is skipped and the stream stays in sync', async () => {
    const c = await h.connect();
    const base = native.fdCount();
    const big = new Uint8Array(16 + (1 << 20) + 8192);
    big.set(access(Reg.SCRATCH, 0, big.length - 16));
    await assert.rejects(c.request(Command.REGION_WRITE, big), { errno: Errno.E2BIG });
    await alive(c);
    // Posted: no reply at all, and still in sync.
    c.post(Command.REGION_WRITE, big);
    await alive(c);
    // With fds attached: they are closed with the skipped body.
    const efd = native.eventfd();
    await assert.rejects(c.request(Command.DEVICE_SET_IRQS, big, [efd]), { errno: Errno.E2BIG });
    native.close(efd);
    await alive(c);
    assert.equal(native.fdCount(), base);
    c.close();
  });

  it('messages split into single bytes, and several messages in one write, are framed correctly', async () => {
    const p = raw();
    await p.negotiate();
    const msg = new Uint8Array([...header(0x4242, Command.REGION_READ, 32), ...access(Reg.ID, 0, 4)]);
    for (const b of msg) {
      p.sendBytes(Uint8Array.of(b));
      await new Promise((r) => setImmediate(r));
    }
    const r = await p.next();
    assert.equal(r.header.id, 0x4242);
    assert.equal(u32(r.payload, 16), DEVICE_ID_VALUE);
    const three = new Uint8Array(96);
    for (let i = 0; i < 3; i++) three.set([...header(0x100 + i, Command.REGION_READ, 32), ...access(Reg.ID, 0, 4)], 32 * i);
    p.sendBytes(three);
    for (let i = 0; i < 3; i++) assert.equal((await p.next()).header.id, 0x100 + i);
  });

  // -------------------------------------------------------------- commands

  it('commands before VERSION are EINVAL; VERSION still works afterwards', async () => {
    const p = raw();
    await expectError(p, Command.DEVICE_GET_INFO, le([16, 4]), Errno.EINVAL);
    await expectError(p, Command.REGION_READ, access(0, PciRegion.CONFIG, 4), Errno.EINVAL);
    await expectError(p, Command.DEVICE_RESET, new Uint8Array(0), Errno.EINVAL);
    await p.negotiate();
    await alive(p);
  });

  it('malformed VERSION requests are EINVAL and leave negotiation possible', async () => {
    const p = raw();
    await expectError(p, Command.VERSION, new Uint8Array(3), Errno.EINVAL); // short
    await expectError(p, Command.VERSION, versionPayload('{"capabilities":{"max_msg_fds":"x"}}'), Errno.EINVAL);
    await expectError(p, Command.VERSION, versionPayload('{not json'), Errno.EINVAL);
    await expectError(p, Command.VERSION, versionPayload('[1,2]'), Errno.EINVAL);
    await expectError(p, Command.VERSION, versionPayload('{"capabilities":{}}', 0, 0, false), Errno.EINVAL); // no NUL
    await expectError(p, Command.VERSION, versionPayload('{"capabilities":{"pgsizes":512}}'), Errno.EINVAL); // no 4 KiB pages
    await expectError(p, Command.VERSION, versionPayload(`{"x":"${'y'.repeat(5000)}"}`), Errno.EINVAL);
    await p.negotiate();
    await alive(p);
  });

  it('a second VERSION is EINVAL and changes nothing', async () => {
    const c = await h.connect();
    const p = versionPayload('{"capabilities":{"max_data_xfer_size":4096}}');
    await assert.rejects(c.request(Command.VERSION, p), { errno: Errno.EINVAL });
    assert.equal(h.server.session?.maxDataXferSize, 1 << 20);
    await alive(c);
    c.close();
  });

  it('unknown and retired commands are ENOSYS; server-to-client commands are EINVAL', async () => {
    const p = raw();
    await p.negotiate();
    for (const cmd of [0, 14, 19, 99, 0xffff]) await expectError(p, cmd, new Uint8Array(8), Errno.ENOSYS);
    await expectError(p, Command.DMA_READ, le([0, 8], [4, 8]), Errno.EINVAL);
    await expectError(p, Command.DMA_WRITE, le([0, 8], [4, 8], [0, 4]), Errno.EINVAL);
    // Posted unknown commands get no reply either.
    p.post(99, new Uint8Array(0));
    await alive(p);
    assert.equal(p.received.length, 0);
  });

  it('every command with a payload shorter than its fixed part is EINVAL', async () => {
    const p = raw();
    await p.negotiate();
    for (const m of MESSAGES) {
      if (m.from !== 'client' || m.request.size === 0) continue;
      await expectError(p, m.cmd, new Uint8Array(m.request.size - 1), Errno.EINVAL);
    }
    await alive(p);
  });

  it('64-bit fields beyond 2^53 are EINVAL, not rounded', async () => {
    const p = raw();
    await p.negotiate();
    const huge = 2 ** 60;
    await expectError(p, Command.REGION_READ, access(huge, 0, 4), Errno.EINVAL);
    await expectError(p, Command.DMA_MAP, le([32, 4], [3, 4], [0, 8], [huge, 8], [4096, 8]), Errno.EINVAL);
    await expectError(p, Command.DMA_UNMAP, le([24, 4], [0, 4], [0, 8], [huge, 8]), Errno.EINVAL);
    await alive(p);
  });

  it('REGION_READ/WRITE: out-of-range offsets and sizes, count 0 or huge, bad regions → EINVAL, never a crash', async () => {
    const p = raw();
    await p.negotiate();
    const bad: [number, number, number][] = [
      [4096, 0, 4], // at the end of BAR0
      [4094, 0, 4], // crossing the end
      [0, 0, 4097], // longer than BAR0
      [2 ** 53 - 2, 0, 4], // offset + count beyond 2^53
      [0, 0, 0], // count 0
      [0, 0, 0xffffffff], // count huge
      [0, 0, (1 << 20) + 1], // count above max_data_xfer_size
      [0, 1, 4], // absent BAR1
      [0, PciRegion.ROM, 4],
      [0, PciRegion.VGA, 4],
      [0, 10, 4], // index == num_regions (QEMU forwards it)
      [0, 0xffffffff, 4],
      [0xfffc, PciRegion.CONFIG, 8], // beyond 4 KiB of config space
      [0, 9, 257], // region 9 is 256 bytes
    ];
    for (const [offset, region, count] of bad) await expectError(p, Command.REGION_READ, access(offset, region, count), Errno.EINVAL);
    // Payload lengths that disagree with the count.
    await expectError(p, Command.REGION_READ, new Uint8Array([...access(0, 0, 4), 0, 0, 0, 0]), Errno.EINVAL);
    await expectError(p, Command.REGION_WRITE, new Uint8Array([...access(Reg.SCRATCH, 0, 8), 1, 2, 3, 4]), Errno.EINVAL);
    await expectError(p, Command.REGION_WRITE, new Uint8Array([...access(Reg.SCRATCH, 0, 2), 1, 2, 3, 4]), Errno.EINVAL);
    await expectError(p, Command.REGION_WRITE, access(Reg.SCRATCH, 0, 0), Errno.EINVAL);
    for (const [offset, region, count] of bad.filter(([, , n]) => n > 0 && n < 8192)) {
      await expectError(p, Command.REGION_WRITE, new Uint8Array([...access(offset, region, count), ...new Uint8Array(count)]), Errno.EINVAL);
    }
    await alive(p);
  });

  it('fds attached to a command that takes none are refused and closed', async () => {
    const p = raw();
    await p.negotiate();
    const base = native.fdCount();
    const efd = native.eventfd();
    const mfd = native.memfd('stray', 4096);
    await expectError(p, Command.DEVICE_GET_INFO, le([16, 4]), Errno.EINVAL, [efd]);
    await expectError(p, Command.REGION_READ, access(Reg.ID, 0, 4), Errno.EINVAL, [efd, mfd]);
    await expectError(p, Command.DEVICE_GET_REGION_INFO, le([32, 4], [0, 4], [2, 4]), Errno.EINVAL, [mfd]);
    await expectError(p, Command.DMA_UNMAP, le([24, 4], [0, 4], [0, 8], [4096, 8]), Errno.EINVAL, [mfd]);
    await expectError(p, Command.DEVICE_RESET, new Uint8Array(0), Errno.EINVAL, [efd]);
    // DMA_MAP takes at most one.
    await expectError(p, Command.DMA_MAP, le([32, 4], [3, 4], [0, 8], [0, 8], [4096, 8]), Errno.EINVAL, [mfd, mfd]);
    // SET_IRQS fds without DATA_EVENTFD, and more than max_msg_fds (16).
    await expectError(p, Command.DEVICE_SET_IRQS, le([20, 4], [IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, 4], [1, 4], [0, 4], [1, 4]), Errno.EINVAL, [efd]);
    const many = Array.from({ length: 17 }, () => efd);
    await expectError(p, Command.DEVICE_SET_IRQS, le([20, 4], [IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 4], [2, 4], [0, 4], [17, 4]), Errno.EINVAL, many);
    // fds on a reply to nothing: closed too.
    p.send(Command.DMA_READ, new Uint8Array(16), { id: 0x999, flags: MsgType.REPLY, fds: [efd] });
    await alive(p);
    native.close(efd);
    native.close(mfd);
    assert.equal(native.fdCount(), base, 'no received fd kept');
  });

  it('more fds than a read can carry (ancillary data truncated) closes the connection without leaking; a new client works', async () => {
    const p = raw();
    await p.negotiate();
    const base = native.fdCount();
    const efd = native.eventfd();
    p.send(Command.DEVICE_SET_IRQS, le([20, 4], [IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 4], [2, 4], [0, 4], [40, 4]), {
      fds: Array.from({ length: native.MAX_FDS + 8 }, () => efd),
    });
    await p.closed();
    await h.idle();
    native.close(efd);
    assert.equal(native.fdCount(), base - 2, 'only the two socket ends went away');
    const c = await h.connect();
    await alive(c);
    c.close();
  });

  it('SET_IRQS validation: bad index, start+count overflow, fd count mismatch, ERR with MASK, bad flags', async () => {
    const p = raw();
    await p.negotiate();
    const base = native.fdCount();
    const e1 = native.eventfd();
    const set = (flags: number, index: number, start: number, count: number, extra: Uint8Array = new Uint8Array(0)) =>
      new Uint8Array([...le([20 + extra.length, 4], [flags, 4], [index, 4], [start, 4], [count, 4]), ...extra]);
    const EV = IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER;
    await expectError(p, Command.DEVICE_SET_IRQS, set(EV, 5, 0, 1), Errno.EINVAL, [e1]);
    await expectError(p, Command.DEVICE_SET_IRQS, set(EV, 0xffffffff, 0, 1), Errno.EINVAL, [e1]);
    await expectError(p, Command.DEVICE_SET_IRQS, set(EV, PciIrq.MSI, 0xffffffff, 2), Errno.EINVAL, [e1, e1]); // start+count wraps in u32
    await expectError(p, Command.DEVICE_SET_IRQS, set(EV, PciIrq.MSI, 1, 0xffffffff), Errno.EINVAL);
    await expectError(p, Command.DEVICE_SET_IRQS, set(EV, PciIrq.MSI, 1, 2), Errno.EINVAL, [e1, e1]); // 1+2 > 2 vectors
    await expectError(p, Command.DEVICE_SET_IRQS, set(EV, PciIrq.MSI, 0, 2), Errno.EINVAL, [e1]); // 1 fd for 2 vectors
    await expectError(p, Command.DEVICE_SET_IRQS, set(EV, PciIrq.MSI, 0, 1), Errno.EINVAL, [e1, e1]); // 2 fds for 1
    await expectError(p, Command.DEVICE_SET_IRQS, set(IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK, PciIrq.ERR, 0, 1), Errno.EINVAL);
    await expectError(p, Command.DEVICE_SET_IRQS, set(IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK, PciIrq.REQ, 0, 1), Errno.EINVAL);
    await expectError(p, Command.DEVICE_SET_IRQS, set(EV, PciIrq.ERR, 0, 2), Errno.EINVAL, [e1, e1]); // ERR has one vector
    await expectError(p, Command.DEVICE_SET_IRQS, set(IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_MASK, PciIrq.MSI, 0, 1), Errno.EINVAL, [e1]);
    await expectError(p, Command.DEVICE_SET_IRQS, set(IRQ_SET_DATA_NONE | IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_TRIGGER, 1, 0, 1), Errno.EINVAL);
    await expectError(p, Command.DEVICE_SET_IRQS, set(IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK | IRQ_SET_ACTION_UNMASK, 1, 0, 1), Errno.EINVAL);
    await expectError(p, Command.DEVICE_SET_IRQS, set(IRQ_SET_DATA_NONE, 1, 0, 1), Errno.EINVAL); // no action
    await expectError(p, Command.DEVICE_SET_IRQS, set(0x40 | IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, 1, 0, 1), Errno.EINVAL);
    await expectError(p, Command.DEVICE_SET_IRQS, set(IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_TRIGGER, 1, 0, 2, Uint8Array.of(1)), Errno.EINVAL); // 1 bool for 2
    await expectError(p, Command.DEVICE_SET_IRQS, set(EV, PciIrq.MSI, 0, 0), Errno.EINVAL);
    const short = set(EV, 1, 0, 1);
    new DataView(short.buffer).setUint32(0, 16, true); // argsz < 20
    await expectError(p, Command.DEVICE_SET_IRQS, short, Errno.EINVAL);
    native.close(e1);
    assert.equal(native.fdCount(), base, 'every refused eventfd was closed');
    assert.equal(h.device.irqs.mode, 'none');
    await alive(p);
  });

  it('REGION_WRITE_MULTI without negotiated write_multiple is EINVAL and writes nothing', async () => {
    const p = raw();
    await p.negotiate('{"capabilities":{"write_multiple":true}}'); // offered, but this server does not enable it
    const m = new Uint8Array(8 + 24);
    m.set(le([1, 8]));
    m.set(le([Reg.SCRATCH, 8], [0, 4], [4, 4], [0x55667788, 4]), 8);
    await expectError(p, Command.REGION_WRITE_MULTI, m, Errno.EINVAL);
    const r = await p.call(Command.REGION_READ, access(Reg.SCRATCH, 0, 4));
    assert.notEqual(u32(r.payload, 16), 0x55667788);
  });

  it('DEVICE_FEATURE: unsupported features are ENOTSUP, malformed flags and payloads EINVAL', async () => {
    const p = raw();
    await p.negotiate();
    await expectError(p, Command.DEVICE_FEATURE, le([16, 4], [FEATURE_PROBE | 1, 4]), Errno.ENOTSUP);
    await expectError(p, Command.DEVICE_FEATURE, le([16, 4], [FEATURE_GET | 1, 4]), Errno.ENOTSUP);
    await expectError(p, Command.DEVICE_FEATURE, le([16, 4], [FEATURE_SET | 2, 4], [2, 4], [0, 4]), Errno.ENOTSUP);
    await expectError(p, Command.DEVICE_FEATURE, le([16, 4], [FEATURE_GET | FEATURE_SET | 1, 4]), Errno.EINVAL);
    await expectError(p, Command.DEVICE_FEATURE, le([16, 4], [1, 4]), Errno.EINVAL); // neither GET, SET nor PROBE
    await expectError(p, Command.DEVICE_FEATURE, le([16, 4], [(1 << 20) | FEATURE_GET | 1, 4]), Errno.EINVAL);
    // DMA_LOGGING_START (6): truncated header and truncated ranges, then a valid but unsupported one.
    await expectError(p, Command.DEVICE_FEATURE, le([16, 4], [FEATURE_SET | 6, 4], [4096, 8]), Errno.EINVAL);
    await expectError(p, Command.DEVICE_FEATURE, le([40, 4], [FEATURE_SET | 6, 4], [4096, 8], [2, 4], [0, 4], [0, 8], [4096, 8]), Errno.EINVAL);
    await expectError(p, Command.DEVICE_FEATURE, le([40, 4], [FEATURE_SET | 6, 4], [4096, 8], [1, 4], [0, 4], [0, 8], [4096, 8]), Errno.ENOTSUP);
    await alive(p);
  });

  it('MIG_DATA_READ/WRITE are validated and refused outside a migration state', async () => {
    const p = raw();
    await p.negotiate();
    await expectError(p, Command.MIG_DATA_READ, le([4, 4], [4096, 4]), Errno.EINVAL); // argsz < 8
    await expectError(p, Command.MIG_DATA_READ, le([8 + 4096, 4], [4096, 4]), Errno.EINVAL); // not migrating
    await expectError(p, Command.MIG_DATA_WRITE, new Uint8Array([...le([12, 4], [8, 4]), 1, 2, 3, 4]), Errno.EINVAL); // size ≠ data
    await expectError(p, Command.MIG_DATA_WRITE, new Uint8Array([...le([12, 4], [4, 4]), 1, 2, 3, 4]), Errno.EINVAL); // not resuming
    await alive(p);
  });

  it('a device handler that throws a plain Error becomes EIO (logged with its stack), not a crash', async () => {
    const p = raw();
    await p.negotiate();
    await expectError(p, Command.REGION_WRITE, new Uint8Array([...access(Reg.BUG, 0, 4), 1, 0, 0, 0]), Errno.EIO);
    assert.ok(h.logs.some((l) => l.includes('device bug')));
    p.post(Command.REGION_WRITE, new Uint8Array([...access(Reg.BUG, 0, 4), 1, 0, 0, 0])); // posted: no reply
    await alive(p);
    assert.equal(p.received.length, 0);
  });

  it('info requests with a too small argsz are EINVAL', async () => {
    const p = raw();
    await p.negotiate();
    await expectError(p, Command.DEVICE_GET_INFO, le([8, 4]), Errno.EINVAL);
    await expectError(p, Command.DEVICE_GET_IRQ_INFO, le([8, 4], [0, 4], [0, 4]), Errno.EINVAL);
    await expectError(p, Command.DEVICE_GET_REGION_IO_FDS, le([8, 4], [0, 4], [0, 4], [0, 4]), Errno.EINVAL);
    await expectError(p, Command.DMA_UNMAP, le([16, 4], [0, 4], [0, 8], [4096, 8]), Errno.EINVAL);
    await alive(p);
  });

  it('replies with unknown ids, or matching ids of the wrong command, are ignored', async () => {
    const p = raw();
    await p.negotiate();
    p.send(Command.DMA_READ, new Uint8Array(20), { id: 0x7777, flags: MsgType.REPLY });
    p.send(Command.DMA_WRITE, new Uint8Array(0), { id: 0x7778, flags: MsgType.REPLY | FLAG_ERROR, error: Errno.EFAULT });
    p.send(Command.REGION_READ, new Uint8Array(0), { id: 1, flags: MsgType.REPLY });
    p.send(Command.DEVICE_GET_INFO, new Uint8Array(0), { id: 2, flags: MsgType.REPLY | FLAG_NO_REPLY });
    await alive(p);
    assert.equal(p.received.length, 0, 'replies are never answered');
    assert.ok(h.logs.some((l) => l.includes('unexpected reply id 30583')));
  });

  it('survives 3,000 random well-framed messages, answering each one that wants a reply', async () => {
    const p = raw();
    await p.negotiate();
    let x = 0x1234567;
    const rnd = (n: number) => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) % n;
    };
    const cmds = [2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 15, 16, 17, 18, 1, 11, 12, 14, 42];
    for (let i = 0; i < 3000; i++) {
      const cmd = cmds[rnd(cmds.length)] as number;
      const len = rnd(4) === 0 ? rnd(64) : ([4, 8, 12, 16, 20, 24, 32][rnd(7)] as number);
      const payload = new Uint8Array(len);
      for (let k = 0; k < len; k++) payload[k] = rnd(8) === 0 ? 0xff : rnd(3) === 0 ? rnd(256) : 0;
      if (cmd === Command.REGION_READ && len >= 16) payload[12] = rnd(64); // keep reads small
      if (cmd === Command.DEVICE_RESET) payload.fill(0);
      const id = p.send(cmd, payload, { id: i & 0xffff });
      const r = await p.next();
      assert.equal(r.header.id, id, `message ${i} (cmd ${cmd}) answered in order`);
      assert.equal(r.header.cmd, cmd);
      assert.equal(r.header.flags & 0xf, MsgType.REPLY);
      for (const fd of r.fds) native.close(fd);
    }
    assert.equal(h.server.session?.isClosed, false);
    await alive(p);
  });
});

describe('bad input in a fresh process state', () => {
  it('a server with a small max_data_xfer_size refuses larger accesses with EINVAL and larger messages with E2BIG', async () => {
    const h = await startServer({ maxDataXferSize: 4096 });
    try {
      const c = await h.connect();
      assert.equal(c.serverCaps.maxDataXferSize, 4096);
      await assert.rejects(c.regionRead(PciRegion.CONFIG, 0, 4097), { errno: Errno.EINVAL });
      const big = new Uint8Array(16 + 4096 + 4096 + 1);
      big.set(access(0, 0, big.length - 16));
      await assert.rejects(c.request(Command.REGION_WRITE, big), { errno: Errno.E2BIG });
      await alive(c);
      c.close();
      await h.idle();
    } finally {
      await h.close();
    }
  });

  it('the server survives many clients connecting and dropping at every stage', async () => {
    const h = await startServer();
    try {
      const stages = [
        () => {},
        (p: RawPeer) => p.sendBytes(header(1, Command.VERSION, 100).subarray(0, 5)),
        (p: RawPeer) => p.sendBytes(header(1, Command.VERSION, 100)),
        (p: RawPeer) => p.send(Command.VERSION, versionPayload('{}')),
      ];
      for (let i = 0; i < 40; i++) {
        const p = RawPeer.connect(h.path);
        (stages[i % stages.length] as (p: RawPeer) => void)(p);
        if (i % 2) await sleep(1);
        p.close();
        await h.idle();
      }
      await until(() => h.server.session === null);
      const c = await h.connect();
      await alive(c);
      c.close();
      await h.idle();
    } finally {
      await h.close();
    }
  });
});
