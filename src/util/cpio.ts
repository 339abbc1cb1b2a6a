// Minimal writer for "newc" (SVR4, no CRC) cpio archives, the format the Linux kernel unpacks
// into its initramfs. Test guests and the demo append such an archive (uncompressed) to a base initrd.

export interface CpioFile {
  /** Path inside the archive; a leading '/' is optional. */
  path: string;
  data: Buffer | string;
  /** Permission bits (e.g. 0o755) or a full st_mode; regular file (0o100000) when no type bits. */
  mode?: number;
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

function normalize(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.includes('..')) throw new Error(`cpio: invalid path ${JSON.stringify(path)}`);
  return parts.join('/');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function entry(ino: number, name: string, mode: number, data: Buffer): Buffer {
  const nameBuf = Buffer.from(`${name}\0`, 'utf8');
  const fields = [
    ino,
    mode,
    0, // uid
    0, // gid
    (mode & S_IFMT) === S_IFDIR ? 2 : 1, // nlink
    0, // mtime
    data.length,
    0, // devmajor
    0, // devminor
    0, // rdevmajor
    0, // rdevminor
    nameBuf.length,
    0, // check
  ];
  const header = Buffer.from(`070701${fields.map((f) => (f >>> 0).toString(16).padStart(8, '0')).join('')}`, 'ascii');
  return Buffer.concat([header, nameBuf, Buffer.alloc(pad4(header.length + nameBuf.length)), data, Buffer.alloc(pad4(data.length))]);
}

/**
 * Builds a newc cpio archive holding `files`, preceded by entries for their parent directories
 * (mode 0755) and followed by the TRAILER!!! entry. Every entry starts on a 4-byte boundary.
 */
export function makeCpio(files: CpioFile[]): Buffer {
  const chunks: Buffer[] = [];
  const dirs = new Set<string>();
  let ino = 1;
  for (const f of files) {
    const name = normalize(f.path);
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (dirs.has(dir)) continue;
      dirs.add(dir);
      chunks.push(entry(ino++, dir, S_IFDIR | 0o755, Buffer.alloc(0)));
    }
    let mode = f.mode ?? 0o644;
    if ((mode & S_IFMT) === 0) mode |= S_IFREG;
    if ((mode & S_IFMT) === S_IFDIR) dirs.add(name);
    const data = typeof f.data === 'string' ? Buffer.from(f.data, 'utf8') : f.data;
    chunks.push(entry(ino++, name, mode, data));
  }
  chunks.push(entry(0, 'TRAILER!!!', 0, Buffer.alloc(0)));
  return Buffer.concat(chunks);
}
