// vGPU mdev types, shaped like the kernel's mbochs types: small, medium and
// large VRAM slices of a parent's budget, one display head each.
import { MdevError } from '../../mdev/errors.js';
import type { DeviceInstance, InstanceContext, MdevAttr, MdevTypeProvider } from '../../mdev/types.js';
import { BochsVgpu } from './bochs-vgpu.js';

const MiB = 1024 * 1024;

interface VgpuTypeSpec {
  sysfsName: string;
  vramMiB: number;
  preferred: [number, number];
  max: [number, number];
}

const SPECS: VgpuTypeSpec[] = [
  // 6.12-era drivers keep modes within half the VRAM (double buffering): the defaults respect that.
  { sysfsName: 'bochs-small', vramMiB: 4, preferred: [800, 600], max: [1024, 768] },
  { sysfsName: 'bochs-medium', vramMiB: 16, preferred: [1280, 800], max: [1920, 1200] },
  { sysfsName: 'bochs-large', vramMiB: 64, preferred: [1920, 1080], max: [3840, 2160] },
];

export interface VgpuAttrs {
  resolution: [number, number];
  /** VNC: "off", "on" (loopback, first free port from 5900) or "HOST:PORT". */
  vnc: { host: string; port: number } | null;
  vncPassword: string | null;
  /** Viewers who authenticate with this one get a view-only session. */
  vncViewPassword: string | null;
}

/** Parses the display attributes (also used by the daemon when it attaches VNC). */
export function parseVnc(v: string): { host: string; port: number } | null {
  if (v === 'off') return null;
  if (v === 'on') return { host: '127.0.0.1', port: 0 };
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:\s]+)):(\d{1,5})$/.exec(v) ?? /^()()(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new MdevError('EINVAL', `vnc must be "on", "off", "PORT" or "HOST:PORT", not "${v}"`);
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

function parseAttrs(attrs: MdevAttr[], spec: VgpuTypeSpec): VgpuAttrs {
  let resolution = spec.preferred;
  let vnc: VgpuAttrs['vnc'] = { host: '127.0.0.1', port: 0 };
  let vncPassword: string | null = null;
  let vncViewPassword: string | null = null;
  for (const a of attrs) {
    for (const [k, v] of Object.entries(a)) {
      if (k === 'vnc') {
        vnc = parseVnc(v);
        continue;
      }
      if (k === 'vnc_view_password') {
        if (!v || v.length > 64) throw new MdevError('EINVAL', 'vnc_view_password must be 1..64 characters');
        vncViewPassword = v;
        continue;
      }
      if (k === 'vnc_password') {
        if (!v || v.length > 64) throw new MdevError('EINVAL', 'vnc_password must be 1..64 characters (VNC uses the first 8)');
        vncPassword = v;
        continue;
      }
      if (k !== 'resolution')
        throw new MdevError('EINVAL', `unknown attribute "${k}" (vGPUs take "resolution", "vnc", "vnc_password" and "vnc_view_password")`);
      const m = /^(\d{2,5})x(\d{2,5})$/.exec(v);
      if (!m) throw new MdevError('EINVAL', `resolution must look like 1280x800, not "${v}"`);
      const w = Number(m[1]);
      const h = Number(m[2]);
      if (w < 64 || h < 64 || w > spec.max[0] || h > spec.max[1]) {
        throw new MdevError('EINVAL', `resolution ${v} is outside 64x64..${spec.max[0]}x${spec.max[1]} for ${spec.sysfsName}`);
      }
      if (w * h * 4 > spec.vramMiB * MiB) throw new MdevError('EINVAL', `resolution ${v} does not fit ${spec.vramMiB} MiB of VRAM`);
      resolution = [w, h];
    }
  }
  if (vncViewPassword && !vncPassword) throw new MdevError('EINVAL', 'vnc_view_password needs vnc_password as well');
  return { resolution, vnc, vncPassword, vncViewPassword };
}

export function vgpuAttrs(typeId: string, attrs: MdevAttr[]): VgpuAttrs | null {
  const spec = SPECS.find((s) => `mediated-${s.sysfsName}` === typeId);
  return spec ? parseAttrs(attrs, spec) : null;
}

/** Extra behaviour the daemon hooks into a running vGPU (display consumers). */
export interface VgpuInstance extends DeviceInstance {
  readonly vgpu: BochsVgpu;
}

function vgpuType(spec: VgpuTypeSpec): MdevTypeProvider {
  return {
    id: `mediated-${spec.sysfsName}`,
    name: `Bochs-compatible vGPU, ${spec.vramMiB} MiB`,
    description: `virtual display, ${spec.vramMiB} MB video memory, 1 head, ${spec.max[0]}x${spec.max[1]} maximum resolution`,
    deviceApi: 'vfio-pci',
    cost: { vram: spec.vramMiB * MiB, heads: 1 },
    validateAttrs: (attrs) => void parseAttrs(attrs, spec),
    async create(ctx: InstanceContext): Promise<VgpuInstance> {
      const { resolution } = parseAttrs(ctx.attrs, spec);
      const vgpu = new BochsVgpu({
        vramBytes: spec.vramMiB * MiB,
        width: resolution[0],
        height: resolution[1],
        maxWidth: spec.max[0],
        maxHeight: spec.max[1],
        serial: Number.parseInt(ctx.uuid.slice(0, 8), 16),
      });
      vgpu.log = ctx.log;
      return {
        backend: vgpu,
        vgpu,
        describe: () => {
          const p = vgpu.queryPlane(1);
          return {
            vram_bytes: vgpu.vram.size,
            resolution: `${vgpu.options.width}x${vgpu.options.height}`,
            plane: p.drm_format ? { format: p.drm_format, width: p.width, height: p.height, stride: p.stride, offset: p.offset, id: p.dmabuf_id } : null,
          };
        },
        async start() {},
        async stop() {
          vgpu.dispose();
        },
      };
    },
  };
}

export const vgpuTypes: MdevTypeProvider[] = SPECS.map(vgpuType);
