// The 16550A model as Linux's 8250 driver probes and drives it
// (drivers/tty/serial/8250/8250_port.c: autoconfig, autoconfig_16550a,
// serial8250_startup), plus receive flow control towards the host.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Uart16550 } from '../../src/devices/serial/uart16550.js';

const RBR = 0;
const THR = 0;
const IER = 1;
const IIR = 2;
const FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

const IIR_NO_INT = 0x01;
const IIR_ID = 0x0f;
const IIR_THRI = 0x02;
const IIR_RDI = 0x04;
const IIR_CTI = 0x0c;
const IIR_MSI = 0x00;

function uart() {
  const sent: number[] = [];
  let ready = 0;
  const irqs: boolean[] = [];
  const u = new Uart16550({
    transmit: (b) => sent.push(...b),
    ready: () => ready++,
  });
  u.onIrq = (level) => irqs.push(level);
  return {
    u,
    sent,
    irqs,
    get ready() {
      return ready;
    },
  };
}

describe('16550A probing by the 8250 driver', () => {
  it('autoconfig: IER holds exactly the 4 low bits; the scratch register works', () => {
    const { u } = uart();
    u.write(IER, 0);
    assert.equal(u.read(IER) & 0x0f, 0);
    u.write(IER, 0x0f);
    assert.equal(u.read(IER) & 0x0f, 0x0f);
    u.write(IER, 0xff); // UART_IER_UUE (bit 6) must not stick: not an XScale
    assert.equal(u.read(IER), 0x0f);
    u.write(IER, 0);
    u.write(SCR, 0xa5);
    assert.equal(u.read(SCR), 0xa5);
    u.write(SCR, 0x5a);
    assert.equal(u.read(SCR), 0x5a);
  });

  it('autoconfig loopback test: MCR = LOOP|OUT2|RTS reads MSR & 0xf0 = 0x90', () => {
    const { u } = uart();
    u.write(MCR, 0x10 | 0x0a);
    assert.equal(u.read(MSR) & 0xf0, 0x90);
    u.write(MCR, 0);
  });

  it('FCR enable → IIR bits 6-7 = 0xC0 (16550A), and no 64-byte FIFO bit with or without DLAB (not a 16750)', () => {
    const { u } = uart();
    assert.equal(u.read(IIR) & 0xc0, 0, 'FIFOs off at reset');
    u.write(FCR, 0x01);
    assert.equal(u.read(IIR) >> 6, 3, 'scratch = serial_in(IIR) >> 6 == 3 → 16550A');
    // autoconfig_16550a: status1 without DLAB, status2 with DLAB (UART_LCR_CONF_MODE_A).
    u.write(LCR, 0);
    u.write(FCR, 0x01 | 0x20);
    const status1 = u.read(IIR) & (0x20 | 0xc0);
    u.write(FCR, 0x01);
    u.write(LCR, 0x80);
    u.write(FCR, 0x01 | 0x20);
    const status2 = u.read(IIR) & (0x20 | 0xc0);
    u.write(FCR, 0x01);
    u.write(LCR, 0);
    assert.equal(status1, 0xc0);
    assert.equal(status2, 0xc0, 'bit 5 never set: not detected as a TI16750');
    // The EFR probes (LCR 0xBF / 0x80, offset 2) must not read 0.
    u.write(LCR, 0xbf);
    assert.notEqual(u.read(2), 0);
    u.write(LCR, 0x80);
    assert.notEqual(u.read(2), 0);
    u.write(LCR, 0);
    assert.equal(u.read(IIR) & IIR_ID, IIR_NO_INT);
  });

  it('the THRE re-assert test of serial8250_startup passes (no UART_BUG_THRE)', () => {
    const { u } = uart();
    u.write(FCR, 0x07);
    u.write(LCR, 0x03);
    assert.ok(u.read(LSR) & 0x20, 'wait_for_xmitr(UART_LSR_THRE)');
    u.write(IER, 0x02); // UART_IER_THRI
    const iir1 = u.read(IIR);
    u.write(IER, 0);
    u.write(IER, 0x02);
    const iir = u.read(IIR);
    u.write(IER, 0);
    assert.equal(iir1 & IIR_ID, IIR_THRI);
    assert.equal(iir & IIR_ID, IIR_THRI, 'a real 16550 re-asserts THRE when THRI is enabled again');
    // Reading IIR acknowledged it: without a new write or re-enable, no interrupt.
    u.write(IER, 0x02);
    assert.equal(u.read(IIR) & IIR_ID, IIR_THRI);
    assert.equal(u.read(IIR) & IIR_ID, IIR_NO_INT);
  });

  it('divisor latch: DLAB maps offsets 0/1 to DLL/DLM without touching THR/IER', () => {
    const { u, sent } = uart();
    u.write(IER, 0x05);
    u.write(LCR, 0x83);
    u.write(0, 0x01); // 115200 baud
    u.write(1, 0x00);
    assert.equal(u.read(0), 0x01);
    assert.equal(u.read(1), 0x00);
    u.write(LCR, 0x03);
    assert.equal(u.read(IER), 0x05);
    assert.deepEqual(sent, [], 'nothing transmitted');
    assert.deepEqual(u.settings, { divisor: 1, baud: 115200, lcr: 0x03, fifo: false });
  });
});

describe('transmit', () => {
  it('bytes go to the host at once; LSR shows THRE|TEMT; THRI fires after each byte', () => {
    const { u, sent, irqs } = uart();
    u.write(IER, 0x02);
    assert.equal(u.read(IIR) & IIR_ID, IIR_THRI);
    for (const b of Buffer.from('hi\n')) {
      u.write(THR, b);
      assert.equal(u.read(LSR) & 0x60, 0x60);
      assert.ok(u.irq, 'THRE interrupt after the byte left');
      assert.equal(u.read(IIR) & IIR_ID, IIR_THRI);
      assert.ok(!u.irq, 'acknowledged by reading IIR');
    }
    assert.equal(Buffer.from(sent).toString(), 'hi\n');
    assert.equal(u.bytesTransmitted, 3);
    assert.ok(irqs.includes(true) && irqs.includes(false));
  });

  it('FCR clear-XMIT raises THRE too', () => {
    const { u } = uart();
    u.write(IER, 0x02);
    assert.equal(u.read(IIR) & IIR_ID, IIR_THRI);
    u.write(FCR, 0x05);
    assert.equal(u.read(IIR) & IIR_ID, IIR_THRI);
  });
});

describe('receive', () => {
  it('LSR DR follows the FIFO; RBR reads bytes in order; 0 when empty', () => {
    const { u } = uart();
    u.write(FCR, 0x01);
    assert.equal(u.read(LSR) & 0x01, 0);
    assert.ok(u.receive(Buffer.from('abc')));
    assert.equal(u.read(LSR) & 0x01, 1);
    assert.equal(String.fromCharCode(u.read(RBR), u.read(RBR)), 'ab');
    assert.equal(u.read(LSR) & 0x01, 1);
    assert.equal(u.read(RBR), 'c'.charCodeAt(0));
    assert.equal(u.read(LSR) & 0x01, 0);
    assert.equal(u.read(RBR), 0);
    assert.equal(u.bytesReceived, 3);
  });

  it('RX FIFO trigger levels: below the level → CTI (timeout), at or above → RDI', () => {
    for (const [fcr, level] of [
      [0x01, 1],
      [0x41, 4],
      [0x81, 8],
      [0xc1, 14],
    ] as const) {
      const { u } = uart();
      u.write(FCR, fcr);
      u.write(IER, 0x01); // RDI
      assert.equal(u.read(IIR) & IIR_ID, IIR_NO_INT);
      if (level > 1) {
        u.receive(new Uint8Array(level - 1));
        assert.equal(u.read(IIR) & IIR_ID, IIR_CTI, `FCR 0x${fcr.toString(16)}: ${level - 1} bytes`);
        u.receive(new Uint8Array(1));
      } else u.receive(new Uint8Array(1));
      assert.equal(u.read(IIR) & IIR_ID, IIR_RDI, `FCR 0x${fcr.toString(16)}: ${level} bytes`);
      assert.ok(u.irq);
      // Draining below the level turns RDI back into CTI, empty clears it.
      for (let i = 0; i < level; i++) u.read(RBR);
      assert.equal(u.read(IIR) & IIR_ID, IIR_NO_INT);
      assert.ok(!u.irq);
    }
  });

  it('without FIFOs one byte is a full receiver: RDI, and the next byte waits in the host queue', () => {
    const { u } = uart();
    u.write(IER, 0x01);
    u.receive(Buffer.from('xy'));
    assert.equal(u.read(IIR), IIR_RDI, 'no FIFO bits in IIR');
    assert.equal(u.backlog, 2);
    assert.equal(u.read(RBR), 'x'.charCodeAt(0));
    assert.equal(u.read(RBR), 'y'.charCodeAt(0));
  });

  it('a long burst is never overrun: the FIFO refills from the host queue as the guest reads', () => {
    const { u } = uart();
    u.write(FCR, 0xc1);
    const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => i & 0xff));
    u.receive(data);
    const got: number[] = [];
    while (u.read(LSR) & 0x01) got.push(u.read(RBR));
    assert.deepEqual(got, [...data]);
    assert.equal(u.read(LSR) & 0x02, 0, 'no overrun');
  });

  it('interrupt priorities: RDI/CTI > THRI > MSI', () => {
    const { u } = uart();
    u.write(FCR, 0x01);
    u.write(IER, 0x0f);
    u.write(MCR, 0x10); // loopback: MSR changes
    assert.equal(u.read(IIR) & IIR_ID, IIR_THRI, 'THRE pending after enabling THRI');
    assert.equal(u.read(IIR) & IIR_ID, IIR_MSI, 'then the modem status change from the loopback switch');
    u.read(MSR); // clears the deltas
    assert.equal(u.read(IIR) & IIR_ID, IIR_NO_INT);
    u.write(THR, 0x41); // loops back into RX
    assert.equal(u.read(IIR) & IIR_ID, IIR_RDI, 'RX beats THRE');
    u.read(RBR);
    assert.equal(u.read(IIR) & IIR_ID, IIR_THRI);
  });

  it('FCR clear-RCVR drops what is in the FIFO, then refills from the host queue', () => {
    const { u } = uart();
    u.write(FCR, 0x01);
    u.receive(new Uint8Array(40).map((_, i) => i));
    u.write(FCR, 0x03);
    assert.equal(u.read(RBR), 16, 'the first 16 bytes were in the FIFO and are gone');
  });
});

describe('loopback and modem lines', () => {
  it('MCR bit 4 routes TX to RX (nothing reaches the host) and MSR mirrors MCR', () => {
    const { u, sent } = uart();
    u.write(FCR, 0x01);
    u.write(MCR, 0x10);
    u.write(THR, 0x55);
    u.write(THR, 0xaa);
    assert.deepEqual(sent, []);
    assert.equal(u.read(LSR) & 0x01, 1);
    assert.equal(u.read(RBR), 0x55);
    assert.equal(u.read(RBR), 0xaa);
    // DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD
    const cases: [number, number][] = [
      [0x01, 0x20],
      [0x02, 0x10],
      [0x04, 0x40],
      [0x08, 0x80],
      [0x0f, 0xf0],
      [0x00, 0x00],
    ];
    for (const [mcr, msr] of cases) {
      u.write(MCR, 0x10 | mcr);
      assert.equal(u.read(MSR) & 0xf0, msr, `MCR 0x${mcr.toString(16)}`);
    }
    // Leaving loopback: transmit reaches the host again; lines show the host side (carrier on).
    u.write(MCR, 0x03);
    u.write(THR, 0x31);
    assert.deepEqual(sent, [0x31]);
    assert.equal(u.read(MSR) & 0xb0, 0xb0, 'CTS, DSR, DCD from a connected host');
  });

  it('MSR delta bits report changes once; carrier loss drops DCD/DSR/CTS', () => {
    const { u } = uart();
    u.read(MSR);
    u.setCarrier(false);
    const m = u.read(MSR);
    assert.equal(m & 0xf0, 0);
    assert.equal(m & 0x0b, 0x0b, 'DCTS, DDSR, DDCD');
    assert.equal(u.read(MSR) & 0x0f, 0, 'deltas cleared by the read');
    u.write(IER, 0x08);
    u.setCarrier(true);
    assert.equal(u.read(IIR) & IIR_ID, IIR_MSI);
    assert.ok(u.irq);
    u.read(MSR);
    assert.ok(!u.irq);
  });
});

describe('host flow control', () => {
  it('receive returns false above the high-water mark; ready fires once after the guest drains below half', () => {
    const t = uart();
    const { u } = t;
    u.write(FCR, 0x01);
    assert.equal(u.receive(new Uint8Array(1000)), true);
    assert.equal(u.receive(new Uint8Array(Uart16550.HIGH_WATER)), false, 'pause');
    assert.equal(t.ready, 0);
    let reads = 0;
    while (t.ready === 0) {
      u.read(RBR);
      reads++;
      assert.ok(reads < 2 * Uart16550.HIGH_WATER, 'ready never fired');
    }
    assert.equal(t.ready, 1);
    assert.ok(u.backlog < Uart16550.HIGH_WATER / 2 + 16);
    while (u.read(LSR) & 0x01) u.read(RBR);
    assert.equal(t.ready, 1, 'only once');
    assert.equal(u.backlog, 0);
    assert.equal(u.receive(new Uint8Array(10)), true);
  });

  it('ready also fires when the queue crosses the low-water mark through a FIFO clear', () => {
    const t = uart();
    const { u } = t;
    u.write(FCR, 0x01);
    assert.equal(u.receive(new Uint8Array(70000)), false);
    const half = Uart16550.HIGH_WATER / 2;
    // Drain until the host queue is just above half, then let an FCR clear carry it below.
    while (u.backlog - 16 > half + 8) u.read(RBR);
    assert.equal(t.ready, 0);
    u.write(FCR, 0x03); // the 8250 driver clears FIFOs on startup/shutdown
    while (u.read(LSR) & 0x01 && t.ready === 0) u.read(RBR);
    assert.equal(t.ready, 1, 'the host must be told to resume, or it stays paused forever');
  });

  it('a device reset keeps queued host bytes deliverable (DR set, data readable)', () => {
    const { u } = uart();
    u.write(FCR, 0x01);
    u.receive(Buffer.from('0123456789abcdefXYZ'));
    u.reset();
    assert.equal(u.read(LSR) & 0x01, 1, 'queued host bytes are still waiting');
    const got: number[] = [];
    while (u.read(LSR) & 0x01) got.push(u.read(RBR));
    assert.ok(got.length > 0);
    assert.equal(Buffer.from(got).toString().endsWith('XYZ'), true);
  });
});
