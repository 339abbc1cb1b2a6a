// `mediated demo`: boots the tiny test guest (from scripts/test-env.sh) in QEMU
// with a vGPU of the running daemon, so a newcomer sees a picture in VNC or
// the browser. The guest draws a test pattern and then animates a bar.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeCpio } from '../util/cpio.js';

interface Manifest {
  qemu: string;
  guests: Record<string, { vmlinuz: string; initrd: string }>;
}

export function testEnvManifest(): string {
  const cache = process.env.MEDIATED_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'mediated');
  return join(cache, 'env.json');
}

const GUEST_SCRIPT = `
n=0; while [ ! -e /dev/fb0 ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done
echo 32 > /sys/class/graphics/fb0/bits_per_pixel
S=$(cut -d, -f1 /sys/class/graphics/fb0/virtual_size); H=$(cut -d, -f2 /sys/class/graphics/fb0/virtual_size)
dd if=/pattern.raw of=/dev/fb0 bs=$(stat -c %s /pattern.raw) count=1 2>/dev/null
echo "demo: the guest drew its test pattern ($S x $H); a bar now moves down the screen"
y=0
while true; do
  dd if=/bar.raw of=/dev/fb0 bs=$((S * 4 * 16)) seek=$((y / 16)) count=1 conv=notrunc 2>/dev/null
  sleep 0.1
  dd if=/pattern.raw of=/dev/fb0 bs=$((S * 4 * 16)) skip=$((y / 16)) seek=$((y / 16)) count=1 conv=notrunc 2>/dev/null
  y=$(( (y + 16) % (H - 16) ))
done
`;

function pattern(w: number, h: number): Buffer {
  const b = Buffer.alloc(w * h * 4);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 4;
      b[i] = (x * 255) / w;
      b[i + 1] = (y * 255) / h;
      b[i + 2] = ((x >> 5) ^ (y >> 5)) & 1 ? 255 : 0;
    }
  return b;
}

export async function runDemo(socket: string, width = 1280, height = 800): Promise<number> {
  const manifestPath = testEnvManifest();
  if (!existsSync(manifestPath)) {
    process.stderr.write('mediated demo: the guest is not built yet; run `npm run test-env` (or bash scripts/test-env.sh) once\n');
    return 1;
  }
  const m = JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
  const g = m.guests['6.12'] ?? Object.values(m.guests)[0];
  if (!g) throw new Error(`${manifestPath} lists no guest`);
  const dir = mkdtempSync(join(tmpdir(), 'mediated-demo-'));
  const base = readFileSync(g.initrd);
  const bar = Buffer.alloc(width * 4 * 16, 0xff);
  const extra = makeCpio([
    { path: '/test.sh', data: GUEST_SCRIPT, mode: 0o755 },
    { path: '/pattern.raw', data: pattern(width, height) },
    { path: '/bar.raw', data: bar },
  ]);
  const initrd = join(dir, 'initrd.img');
  writeFileSync(initrd, Buffer.concat([base, Buffer.alloc((4 - (base.length % 4)) % 4), extra]));
  // biome-ignore format: option/value pairs
  const args = [
    '-accel', 'tcg', '-machine', 'pc', '-m', '256M',
    '-object', 'memory-backend-memfd,id=mem0,size=256M,share=on', '-machine', 'memory-backend=mem0',
    '-nodefaults', '-vga', 'none', '-display', 'none', '-serial', 'stdio', '-no-reboot',
    '-kernel', g.vmlinuz, '-initrd', initrd,
    '-append', 'console=ttyS0 quiet panic=-1 fbcon=map:1',
    '-device', JSON.stringify({ driver: 'vfio-user-pci', id: 'gpu0', rombar: 0, socket: { type: 'unix', path: socket } }),
  ];
  process.stderr.write(`mediated demo: starting ${m.qemu} (Ctrl-C to stop)\n`);
  const child = spawn(m.qemu, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  const stop = () => child.kill('SIGTERM');
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  return await new Promise((resolve) => child.on('close', (code) => resolve(code ?? 1)));
}
