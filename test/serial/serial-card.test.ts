// The serial card over a real vfio-user socket: identities that 8250_pci binds,
// the I/O BAR split into 8-byte ports, host input/output, INTx and MSI.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cfg } from '../../src/device/pci-config.js';
import { SerialCard } from '../../src/devices/serial/serial-card.js';
import { Uart16550 } from '../../src/devices/serial/uart16550.js';
import * as native from '../../src/native/index.js';
import type { VfioUserClient } from '../../src/vfio-user/client.js';
import { writeHeader } from '../../src/vfio-user/codec.js';
import {
  Command,
  Errno,
  FLAG_NO_REPLY,
  IRQ_SET_ACTION_TRIGGER,
  IRQ_SET_ACTION_UNMASK,
  IRQ_SET_DATA_EVENTFD,
  IRQ_SET_DATA_NONE,
  MsgType,
  PciIrq,
  PciRegion,
  REGION_FLAG_MMAP,
} from '../../src/vfio-user/constants.js';
import { type Harness, le, startServer, u16, u32, until } from '../vfio-user/fixture.js';

const THR = 0;
const IER = 1;
const FCR = 2;
const IIR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const SCR = 7;

const outputOf = (card: SerialCard, port: number) => {
  const chunks: Buffer[] = [];
  card.ports[port]?.onOutput((b) => chunks.push(b));
  return chunks;
};

describe('two-port card (1b36:0003)', () => {
  let h: Harness<SerialCard>;
  let c: VfioUserClient;
  const reg8 = async (offset: number) => (await c.regionRead(0, offset, 1))[0] as number;
  const wr8 = (offset: number, v: number) => c.regionWrite(0, offset, Uint8Array.of(v));

  before(async () => {
    h = await startServer({}, new SerialCard({ ports: 2 }));
    c = await h.connect();
  });
  after(async () => {
    c.close();
    await h.close();
  });

  it("presents QEMU's pci-serial-2x identity with a 16-byte I/O BAR0", async () => {
    const cfg = await c.regionRead(PciRegion.CONFIG, 0, 64);
    assert.equal(u16(cfg, Cfg.VENDOR_ID), 0x1b36);
    assert.equal(u16(cfg, Cfg.DEVICE_ID), 0x0003);
    assert.equal(u32(cfg, Cfg.REVISION) >>> 8, 0x070002);
    assert.equal(u32(cfg, Cfg.BAR0), 0x1, 'I/O space indicator');
    assert.equal(cfg[Cfg.INTERRUPT_PIN], 1);
    await c.regionWrite(PciRegion.CONFIG, Cfg.BAR0, le([0xffffffff, 4]));
    assert.equal(u32(await c.regionRead(PciRegion.CONFIG, Cfg.BAR0, 4), 0), 0xfffffff1, '16 bytes');
    await c.regionWrite(PciRegion.CONFIG, Cfg.BAR0, le([0xc000, 4]));
    const info = await c.getRegionInfo(0);
    assert.equal(info.size, 16);
    assert.equal(info.flags & REGION_FLAG_MMAP, 0, 'trapped');
    assert.equal(info.fd, null);
    assert.equal((await c.getRegionInfo(1)).size, 0);
  });

  it('BAR0 splits at 8 bytes: port 0 at 0..7, port 1 at 8..15', async () => {
    const out0 = outputOf(h.device, 0);
    const out1 = outputOf(h.device, 1);
    await wr8(SCR, 0x11);
    await wr8(8 + SCR, 0x22);
    assert.equal(await reg8(SCR), 0x11);
    assert.equal(await reg8(8 + SCR), 0x22);
    for (const b of Buffer.from('zero')) await wr8(THR, b);
    for (const b of Buffer.from('one')) await wr8(8 + THR, b);
    await until(() => out0.length > 0 && out1.length > 0, 2000, 'output');
    assert.equal(Buffer.concat(out0).toString(), 'zero');
    assert.equal(Buffer.concat(out1).toString(), 'one');
    assert.equal(h.device.ports[0]?.uart.bytesTransmitted, 4);
    assert.equal(h.device.ports[1]?.uart.bytesTransmitted, 3);
    // A wide access covers consecutive registers, across the port boundary too.
    const wide = await c.regionRead(0, 4, 4); // MCR, LSR, MSR, SCR of port 0
    assert.equal((wide[1] as number) & 0x60, 0x60);
    assert.equal(wide[3], 0x11);
    await c.regionWrite(0, 7, Uint8Array.of(0x33, 0x00)); // SCR of port 0, then THR of port 1
    assert.equal(await reg8(SCR), 0x33);
    await until(() => Buffer.concat(out1).length === 4, 2000, 'the boundary byte');
    assert.deepEqual([...Buffer.concat(out1)].at(-1), 0);
    await assert.rejects(c.regionRead(0, 16, 1), { errno: Errno.EINVAL });
    await assert.rejects(c.regionRead(0, 12, 8), { errno: Errno.EINVAL });
  });

  it('bytes written in one burst reach the host as one chunk', async () => {
    const out = outputOf(h.device, 0);
    // Five posted THR writes in one socket write, as QEMU's queue flushes them.
    const msgs = [...Buffer.from('burst')].map((b) => {
      const m = new Uint8Array(16 + 16 + 1);
      writeHeader(new DataView(m.buffer), 0, 0x500 + b, Command.REGION_WRITE, m.length, MsgType.COMMAND | FLAG_NO_REPLY);
      m.set(le([THR, 8], [0, 4], [1, 4]), 16);
      m[32] = b;
      return m;
    });
    c.sendRaw(Buffer.concat(msgs));
    await reg8(LSR); // after the posted writes
    await until(() => out.length > 0, 2000, 'output');
    assert.deepEqual(
      out.map((b) => b.toString()),
      ['burst'],
    );
  });

  it('host input raises INTx on the right port; reading RBR lowers it; unmask re-arms', async () => {
    const efd = native.eventfd();
    try {
      await c.setIrqs(PciIrq.INTX, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 1, [efd]);
      await wr8(8 + FCR, 0x07);
      await wr8(8 + LCR, 0x03);
      await wr8(8 + MCR, 0x0b); // DTR | RTS | OUT2 (the 8250 driver's interrupt gate)
      await wr8(8 + IER, 0x01);
      assert.equal(native.eventfdRead(efd), -native.EAGAIN);
      assert.equal(h.device.ports[1]?.input(Buffer.from('hey')), true);
      assert.equal(native.eventfdRead(efd), 1, 'INTx fired');
      assert.equal((await reg8(8 + IIR)) & 0x0f, 0x04, 'port 1: received data (RDI)');
      assert.equal((await reg8(IIR)) & 0x0f, 0x01, 'port 0: nothing');
      const got: number[] = [];
      while ((await reg8(8 + LSR)) & 1) got.push(await reg8(8 + THR));
      assert.equal(Buffer.from(got).toString(), 'hey');
      assert.ok(!h.device.irqs.intxAsserted, 'line low once drained');
      await c.setIrqs(PciIrq.INTX, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK, 0, 1);
      h.device.ports[1]?.input(Buffer.from('!'));
      assert.equal(native.eventfdRead(efd), 1, 'fires again after unmask');
      await reg8(8 + THR);
    } finally {
      await wr8(8 + IER, 0);
      await c.setIrqs(PciIrq.INTX, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, 0, 0);
      native.close(efd);
    }
  });

  it('host backpressure passes through the card: input() false, onReady after the guest drains', async () => {
    const port = h.device.ports[0];
    assert.ok(port);
    let ready = 0;
    const off = port.onReady(() => ready++);
    await wr8(FCR, 0x07);
    assert.equal(port.input(new Uint8Array(Uart16550.HIGH_WATER + 100)), false);
    // The guest drains RBR byte by byte (pipelined reads, as a busy driver would issue them).
    const readMany = (n: number) => Promise.all(Array.from({ length: n }, () => c.regionRead(0, THR, 1)));
    for (let i = 0; ready === 0 && i < Uart16550.HIGH_WATER; i += 256) await readMany(256);
    assert.equal(ready, 1);
    assert.ok(port.uart.backlog < Uart16550.HIGH_WATER / 2 + 256);
    off();
    while (port.uart.backlog > 0) port.uart.read(THR); // the rest directly, to keep the test short
    assert.equal(ready, 1, 'once');
  });

  it('DEVICE_RESET resets both UARTs', async () => {
    await wr8(IER, 0x05);
    await wr8(8 + LCR, 0x1b);
    await c.reset();
    assert.equal(await reg8(IER), 0);
    assert.equal(await reg8(8 + LCR), 0);
    assert.equal((await reg8(8 + LSR)) & 0x60, 0x60);
  });
});

describe('one-port MSI card (HPE 1590:037e)', () => {
  it('has its port in I/O BAR1, an MSI capability, and delivers RX interrupts by MSI', async () => {
    const h = await startServer({}, new SerialCard({ ports: 1, irq: 'msi' }));
    const efd = native.eventfd();
    try {
      const c = await h.connect();
      const cfg = await c.regionRead(PciRegion.CONFIG, 0, 256);
      assert.equal(u16(cfg, Cfg.VENDOR_ID), 0x1590);
      assert.equal(u16(cfg, Cfg.DEVICE_ID), 0x037e);
      assert.equal(u32(cfg, Cfg.BAR0), 0);
      assert.equal(u32(cfg, Cfg.BAR0 + 4), 1, 'BAR1 is the I/O port');
      const cap = cfg[Cfg.CAP_PTR] as number;
      assert.equal(cfg[cap], 0x05, 'MSI capability');
      assert.equal((await c.getRegionInfo(0)).size, 0);
      assert.equal((await c.getRegionInfo(1)).size, 8);
      assert.deepEqual(await c.getIrqInfo(PciIrq.MSI), { flags: 1 | 2 | 8, count: 1 });
      await c.regionWrite(PciRegion.CONFIG, cap + 2, le([1, 2])); // MSI enable (QEMU forwards it)
      await c.setIrqs(PciIrq.MSI, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 1, [efd]);
      await c.regionWrite(1, IER, Uint8Array.of(0x01));
      h.device.ports[0]?.input(Buffer.from('m'));
      assert.equal(native.eventfdRead(efd), 1, 'MSI fired');
      assert.equal((await c.regionRead(1, THR, 1))[0], 'm'.charCodeAt(0));
      h.device.ports[0]?.input(Buffer.from('n'));
      assert.equal(native.eventfdRead(efd), 1, 'a new edge, a new message');
      await assert.rejects(c.regionRead(0, 0, 1), { errno: Errno.EINVAL }, 'no BAR0');
      c.close();
      await h.idle();
    } finally {
      native.close(efd);
      await h.close();
    }
  });

  it('refuses MSI on a two-port card (8250_pci enables MSI only for the one-port identity)', () => {
    assert.throws(() => new SerialCard({ ports: 2, irq: 'msi' }), RangeError);
  });
});
