// The serial card's mdev types, the counterparts of the kernel's mtty-1/mtty-2.
// Parents pool "ports" (like mtty's global budget of 24).
import { join } from 'node:path';
import { MdevError } from '../../mdev/errors.js';
import type { DeviceInstance, InstanceContext, MdevAttr, MdevTypeProvider } from '../../mdev/types.js';
import { SerialCard, type SerialIrqMode } from './serial-card.js';
import { SerialSocketEndpoint } from './socket-endpoint.js';

function irqMode(attrs: MdevAttr[], ports: number): SerialIrqMode {
  let mode: SerialIrqMode = 'intx';
  for (const a of attrs) {
    for (const [k, v] of Object.entries(a)) {
      if (k !== 'irq') throw new MdevError('EINVAL', `unknown attribute "${k}" (serial cards take "irq": "intx" or "msi")`);
      if (v !== 'intx' && v !== 'msi') throw new MdevError('EINVAL', `attribute irq must be "intx" or "msi", not "${v}"`);
      mode = v;
    }
  }
  if (mode === 'msi' && ports !== 1) {
    throw new MdevError('EINVAL', 'irq=msi needs mediated-tty-1: Linux 8250_pci enables MSI only for single-port cards');
  }
  return mode;
}

function serialType(ports: 1 | 2): MdevTypeProvider {
  return {
    id: `mediated-tty-${ports}`,
    name: ports === 1 ? 'Single port serial' : 'Dual port serial',
    description: `${ports === 1 ? 'one' : 'two'} 16550A UART${ports === 1 ? '' : 's'}, host side on UNIX sockets, INTx or MSI (attr irq=msi)`,
    deviceApi: 'vfio-pci',
    cost: { ports },
    validateAttrs: (attrs) => void irqMode(attrs, ports),
    async create(ctx: InstanceContext): Promise<DeviceInstance> {
      const card = new SerialCard({ ports, irq: irqMode(ctx.attrs, ports) });
      card.log = ctx.log;
      const endpoints = card.ports.map((p) => new SerialSocketEndpoint(p, join(ctx.runDir, `ttyS${p.index}.sock`), ctx.log));
      return {
        backend: card,
        describe: () => ({
          irq: card.irqMode,
          serial: endpoints.map((e) => ({
            port: e.port.index,
            socket: e.path,
            clients: e.clientCount,
            to_guest_bytes: e.port.uart.bytesReceived,
            from_guest_bytes: e.port.uart.bytesTransmitted,
          })),
        }),
        async start() {
          for (const e of endpoints) await e.start();
        },
        async stop() {
          for (const e of endpoints) await e.stop();
          card.dispose();
        },
      };
    },
  };
}

export const serialTypes: MdevTypeProvider[] = [serialType(1), serialType(2)];
