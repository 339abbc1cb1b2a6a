// Persistent instance definitions, one file per instance in mdevctl's layout
// (<state>/definitions/<parent>/<uuid>, content {"mdev_type","start","attrs"}).
// Writes are atomic: a temporary file is written and fsynced, then renamed over
// the old one and the directory fsynced, so a kill -9 at any moment leaves the
// old or the new definition, never a torn one.
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { MdevError } from './errors.js';
import type { MdevAttr } from './types.js';
import { parseUuid } from './uuid.js';

export interface Definition {
  uuid: string;
  parent: string;
  mdev_type: string;
  start: 'auto' | 'manual';
  attrs: MdevAttr[];
}

export function validateConfig(doc: unknown, where: string): Omit<Definition, 'uuid' | 'parent'> {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new MdevError('EINVAL', `${where}: not a JSON object`);
  const d = doc as Record<string, unknown>;
  if (typeof d.mdev_type !== 'string' || !d.mdev_type) throw new MdevError('EINVAL', `${where}: "mdev_type" must be a non-empty string`);
  const start = d.start ?? 'manual';
  if (start !== 'auto' && start !== 'manual') throw new MdevError('EINVAL', `${where}: "start" must be "auto" or "manual"`);
  const attrs = d.attrs ?? [];
  if (
    !Array.isArray(attrs) ||
    !attrs.every((a) => a && typeof a === 'object' && !Array.isArray(a) && Object.keys(a).length === 1 && typeof Object.values(a)[0] === 'string')
  ) {
    throw new MdevError('EINVAL', `${where}: "attrs" must be an array of single-key {"name": "value"} objects`);
  }
  return { mdev_type: d.mdev_type, start, attrs: attrs as MdevAttr[] };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export class DefinitionStore {
  private readonly root: string;
  private readonly defs = new Map<string, Definition>();

  constructor(
    stateDir: string,
    private readonly log: (m: string) => void = () => {},
  ) {
    this.root = join(stateDir, 'definitions');
  }

  /** Reads every definition; unreadable files are reported and left in place untouched. */
  load(): Definition[] {
    mkdirSync(this.root, { recursive: true, mode: 0o700 });
    this.defs.clear();
    for (const parent of readdirSync(this.root)) {
      const dir = join(this.root, parent);
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        if (name.startsWith('.')) {
          // Temporaries of an interrupted write: remove those whose writer is gone.
          const pid = Number(/^\.[^.]+\.(\d+)\.tmp$/.exec(name)?.[1]);
          if (pid && !processAlive(pid)) rmSync(join(dir, name), { force: true });
          continue;
        }
        const path = join(dir, name);
        try {
          const uuid = parseUuid(name);
          const cfg = validateConfig(JSON.parse(readFileSync(path, 'utf8')), path);
          if (this.defs.has(uuid)) throw new MdevError('EEXIST', `${path}: UUID also defined under ${this.defs.get(uuid)?.parent}`);
          this.defs.set(uuid, { uuid, parent, ...cfg });
        } catch (e) {
          this.log(`ignoring definition ${path}: ${(e as Error).message}`);
        }
      }
    }
    return this.all;
  }

  get all(): Definition[] {
    return [...this.defs.values()];
  }

  get(uuid: string): Definition | undefined {
    return this.defs.get(parseUuid(uuid));
  }

  /** Creates or replaces a definition on disk, atomically. */
  save(def: Definition): void {
    const dir = join(this.root, def.parent);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const final = join(dir, def.uuid);
    const tmp = join(dir, `.${def.uuid}.${process.pid}.tmp`);
    const body = `${JSON.stringify({ mdev_type: def.mdev_type, start: def.start, attrs: def.attrs }, null, 2)}\n`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, body);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, final);
    fsyncDir(dir);
    const old = this.defs.get(def.uuid);
    if (old && old.parent !== def.parent) this.removeFile(old);
    this.defs.set(def.uuid, { ...def });
  }

  remove(uuid: string): Definition {
    const def = this.get(uuid);
    if (!def) throw new MdevError('ENOENT', `no definition for ${uuid}`);
    this.removeFile(def);
    this.defs.delete(def.uuid);
    return def;
  }

  private removeFile(def: Definition): void {
    const dir = join(this.root, def.parent);
    rmSync(join(dir, def.uuid), { force: true });
    fsyncDir(dir);
  }
}
