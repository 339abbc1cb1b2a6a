// A real QEMU (vfio-user-pci) boots an unmodified Linux guest with our serial
// cards attached: the stock 8250_pci driver binds them, text flows both ways
// between the guest's ttyS and the host sockets, and interrupts are delivered
// (INTx for the Red Hat identity, MSI for the HPE identity).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ControlClient } from '../../src/daemon/control-client.js';
import { Daemon, defaultConfig } from '../../src/daemon/daemon.js';
import type { SerialCard } from '../../src/devices/serial/serial-card.js';
import { PciIrq } from '../../src/vfio-user/constants.js';
import { bootGuest, type Guest } from '../harness/qemu.js';

const GUEST_SCRIPT = `
ports=""
for t in /sys/class/tty/ttyS*; do
  case "$(readlink $t)" in *pci0000*) ports="$ports \${t##*/}";; esac
done
echo "T: ports$ports"
for p in $ports; do
  stty -F /dev/$p raw -echo 115200
  sleep 1000 < /dev/$p &
  head -n 1 /dev/$p > /tmp/$p.in &
done
sleep 0.3
# Ports of one card share its line, which /proc/interrupts names after the first port.
irqline() { grep "^ *$(cat /sys/class/tty/$1/irq):" /proc/interrupts; }
for p in $ports; do irqline $p | sed "s/^/T: irq-before $p /"; done
for p in $ports; do echo "G:$p:hello-from-the-guest" > /dev/$p; done
n=0
while [ $n -lt 300 ]; do
  done_all=1
  for p in $ports; do [ -s /tmp/$p.in ] || done_all=0; done
  [ $done_all = 1 ] && break
  sleep 0.1; n=$((n+1))
done
for p in $ports; do echo "T: got $p $(cat /tmp/$p.in)"; done
for p in $ports; do irqline $p | sed "s/^/T: irq-after $p /"; done
`;

function irqCount(line: string): number {
  // "T: irq-after ttyS1  11:  12  3  IO-APIC ..." → sum the per-CPU counts after the "NN:" field.
  const fields = line.trim().split(/\s+/).slice(4);
  let sum = 0;
  for (const f of fields) {
    if (!/^\d+$/.test(f)) break;
    sum += Number(f);
  }
  return sum;
}

let dir: string;
let daemon: Daemon;
let client: ControlClient;
let guest: Guest | null = null;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mediated-serial-'));
  daemon = new Daemon({ runDir: join(dir, 'run'), stateDir: join(dir, 'state'), config: defaultConfig(), log: () => {} });
  await daemon.start();
  client = new ControlClient(daemon.controlPath);
});

after(async () => {
  guest?.kill();
  client?.close();
  await daemon?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('stock 8250_pci drives a dual-port INTx card and a single-port MSI card; bytes flow both ways', { timeout: 180_000 }, async () => {
  const dual = await client.call<{ uuid: string; socket: string }>('start', { parent: 'mediated0', type: 'mediated-tty-2' });
  const msi = await client.call<{ uuid: string; socket: string }>('start', { parent: 'mediated0', type: 'mediated-tty-1', attrs: [{ irq: 'msi' }] });
  const listed = (await client.call('list', {})) as Record<string, Record<string, { serial: { socket: string }[] }>[]>[];
  const hostSockets: string[] = [];
  for (const d of listed[0]?.mediated0 ?? []) for (const c of Object.values(d)) for (const s of c.serial) hostSockets.push(s.socket);
  assert.equal(hostSockets.length, 3, 'three serial ports listed with host sockets');

  // Host side: answer each "G:<tty>:…" line with a token for that tty.
  const tokens = new Map<string, string>();
  const conns: Socket[] = [];
  const greeted = new Map<string, string>();
  for (const path of hostSockets) {
    const s = connect(path);
    conns.push(s);
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      const m = /G:(ttyS\d+):hello-from-the-guest\n/.exec(buf);
      if (m && !greeted.has(path)) {
        const tty = m[1] as string;
        greeted.set(path, tty);
        const token = randomBytes(12).toString('hex');
        tokens.set(tty, token);
        s.write(`H:${tty}:${token}\n`);
      }
    });
  }
  try {
    guest = await bootGuest({
      workDir: join(dir, 'vm'),
      script: GUEST_SCRIPT,
      devices: [
        { socket: daemon.core.instance(dual.uuid)?.socketPath as string, id: 'tty2' },
        { socket: daemon.core.instance(msi.uuid)?.socketPath as string, id: 'tty1msi' },
      ],
      // The default of 4 UARTs would leave no line for the third PCI port.
      append: '8250.nr_uarts=8',
      timeoutMs: 150_000,
    });
    const portsLine = await guest.waitFor(/T: ports( ttyS\d+)+\n/, 90_000);
    const ports = portsLine[0].replace('T: ports', '').trim().split(' ');
    assert.equal(ports.length, 3, `guest sees three PCI serial ports: ${portsLine[0]}`);
    await guest.waitFor(/T: test-exit \d+/, 90_000);
    const out = guest.output();
    for (const p of ports) {
      const token = tokens.get(p);
      assert.ok(token, `host received the guest's greeting on ${p}`);
      assert.match(out, new RegExp(`T: got ${p} H:${p}:${token}`), `guest received the host's token on ${p}`);
      const before = out.split('\n').find((l) => l.startsWith(`T: irq-before ${p} `));
      const afterLine = out.split('\n').find((l) => l.startsWith(`T: irq-after ${p} `));
      assert.ok(
        before && afterLine,
        `${p} has an interrupt line in /proc/interrupts:\n${out
          .split('\n')
          .filter((l) => l.startsWith('T:'))
          .join('\n')}`,
      );
      assert.ok(irqCount(afterLine) > irqCount(before), `${p} interrupt count rose: ${before} → ${afterLine}`);
    }
    assert.match(out, /T: test-exit 0/);
    // One of the ports runs on MSI, the others on the INTx line.
    const msiLines = out.split('\n').filter((l) => l.startsWith('T: irq-after') && /MSI/.test(l));
    assert.equal(msiLines.length, 1, 'exactly one port uses MSI');
    const dualCard = daemon.core.instance(dual.uuid)?.device?.backend as SerialCard;
    const msiCard = daemon.core.instance(msi.uuid)?.device?.backend as SerialCard;
    assert.ok(dualCard.irqs.signalCount(PciIrq.INTX) > 0, 'INTx eventfd signalled');
    assert.ok(msiCard.irqs.signalCount(PciIrq.MSI) > 0, 'MSI eventfd signalled');
    assert.equal(msiCard.irqs.signalCount(PciIrq.INTX), 0, 'the MSI card never used INTx');
  } finally {
    for (const c of conns) c.destroy();
    guest?.kill();
    await guest?.exited;
    guest = null;
  }
});
