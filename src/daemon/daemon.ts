// The daemon: the mdev core with its parents and types, the management
// socket, and orderly shutdown on SIGTERM/SIGINT.

import { chmodSync, mkdirSync, readFileSync } from 'node:fs';
import { serialTypes } from '../devices/serial/types.js';
import { vgpuTypes } from '../devices/vgpu/types.js';
import type { BufferRegistry } from '../display/buffers.js';
import type { ViewerServer } from '../display/web/viewer-server.js';
import type { Instance } from '../mdev/core.js';
import { MdevCore, type ParentConfig } from '../mdev/core.js';
import { DefinitionStore, validateConfig } from '../mdev/definitions.js';
import { MdevError } from '../mdev/errors.js';
import type { MdevAttr, MdevTypeProvider } from '../mdev/types.js';
import { newUuid, parseUuid } from '../mdev/uuid.js';
import { attrsArg, str } from './args.js';
import { ControlServer, type Handler } from './control-server.js';
import { type DisplayConsumers, Displays } from './displays.js';
import { listJson, qemuDeviceArg, runningFacts, typesJson } from './mdevctl-json.js';
import { controlSocket } from './paths.js';

export { displayOf } from './displays.js';

export interface DaemonConfig {
  parents: ParentConfig[];
  /** Instances started with the daemon (transient). */
  instances?: { uuid?: string; parent: string; type: string; attrs?: MdevAttr[] }[];
}

export { DEFAULT_PARENT } from './paths.js';

import { DEFAULT_PARENT } from './paths.js';

const MiB = 1024 * 1024;

/** One parent with room for 24 serial ports and 256 MiB of VRAM over 16 display heads (mbochs' budget). */
export function defaultConfig(): DaemonConfig {
  return { parents: [{ name: DEFAULT_PARENT, resources: { ports: 24, vram: 256 * MiB, heads: 16 } }] };
}

export function loadConfig(path: string | undefined): DaemonConfig {
  if (!path) return defaultConfig();
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`cannot read configuration ${path}: ${(e as Error).message}`);
  }
  const c = doc as Partial<DaemonConfig>;
  if (!Array.isArray(c.parents) || c.parents.length === 0) throw new Error(`${path}: "parents" must be a non-empty array`);
  for (const p of c.parents) {
    if (typeof p?.name !== 'string' || !p.name || typeof p.resources !== 'object') throw new Error(`${path}: every parent needs a name and resources`);
  }
  return { parents: c.parents, instances: c.instances ?? [] };
}

export interface DaemonOptions {
  runDir: string;
  stateDir: string;
  config: DaemonConfig;
  log?: (m: string) => void;
  /** Web viewer address; null disables it. Default 127.0.0.1:6080 (next free port if taken). */
  http?: { host: string; port: number } | null;
}

export class Daemon {
  readonly core: MdevCore;
  readonly definitions: DefinitionStore;
  readonly displays: Displays;
  private control: ControlServer | null = null;
  private readonly log: (m: string) => void;
  private stopping: Promise<void> | null = null;

  constructor(
    readonly options: DaemonOptions,
    types: MdevTypeProvider[] = [...vgpuTypes, ...serialTypes],
  ) {
    this.log = options.log ?? ((m) => process.stderr.write(`${new Date().toISOString()} mediated: ${m}\n`));
    this.core = new MdevCore({
      runDir: options.runDir,
      log: this.log,
      onStarted: (inst) => this.displays.attach(inst),
      onStopping: (inst) => this.displays.detach(inst),
    });
    this.displays = new Displays(this.core, this.log);
    for (const t of types) this.core.registerType(t);
    for (const p of options.config.parents) this.core.addParent(p);
    this.definitions = new DefinitionStore(options.stateDir, this.log);
  }

  /** Viewers of running display instances (VNC server, token, input hook). */
  get consumers(): Map<string, DisplayConsumers> {
    return this.displays.consumers;
  }

  get viewer(): ViewerServer | null {
    return this.displays.viewer;
  }

  get buffers(): BufferRegistry {
    return this.displays.buffers;
  }

  /** What `list --dumpjson` shows about an instance's viewers. */
  displayFacts(uuid: string): Record<string, unknown> {
    return this.displays.facts(uuid);
  }

  get controlPath(): string {
    return controlSocket(this.options.runDir);
  }

  async start(): Promise<void> {
    mkdirSync(this.options.runDir, { recursive: true, mode: 0o700 });
    // An existing run directory may have been created looser; the control socket lives here.
    chmodSync(this.options.runDir, 0o700);
    mkdirSync(this.options.stateDir, { recursive: true, mode: 0o700 });
    // The socket is claimed first (a live daemon on it makes us fail before touching anything),
    // but requests wait until definitions are loaded and auto-starts are done.
    let ready = () => {};
    const started = new Promise<void>((resolve) => {
      ready = resolve;
    });
    const gated = new Map<string, Handler>();
    for (const [op, fn] of this.handlers()) {
      gated.set(op, async (args, link) => {
        await started;
        return fn(args, link);
      });
    }
    this.control = new ControlServer(this.controlPath, gated, this.log);
    this.control.listen();
    try {
      await this.startUp();
    } finally {
      ready();
    }
  }

  private async startUp(): Promise<void> {
    const http = this.options.http === undefined ? { host: '127.0.0.1', port: 6080 } : this.options.http;
    if (http) await this.displays.startViewer(http, this.options.runDir);
    const defs = this.definitions.load();
    for (const d of defs) {
      try {
        this.core.reserve(d.uuid, d.parent, d.mdev_type, d.attrs);
      } catch (e) {
        this.log(`definition ${d.uuid} cannot reserve its resources: ${(e as Error).message}`);
      }
    }
    for (const d of defs) {
      if (d.start !== 'auto') continue;
      try {
        await this.core.start(d.uuid, d.parent, d.mdev_type, d.attrs);
      } catch (e) {
        this.log(`auto-start of ${d.uuid} failed: ${(e as Error).message}`);
      }
    }
    for (const i of this.options.config.instances ?? []) {
      await this.core.start(i.uuid ?? newUuid(), i.parent, i.type, i.attrs ?? []);
    }
    this.log(`ready: control socket ${this.controlPath}`);
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.control?.close();
      await this.core.shutdown();
      await this.displays.close();
    })();
    return this.stopping;
  }

  private handlers(): Map<string, Handler> {
    const core = this.core;
    const h = new Map<string, Handler>();
    h.set('ping', () => ({ pid: process.pid, version: 1 }));
    h.set('types', (args) => {
      const parent = str(args, 'parent', false);
      return typesJson(parent ? [core.parent(parent)] : core.parents);
    });
    h.set('list', (args) => {
      const uuid = str(args, 'uuid', false);
      if (uuid) parseUuid(uuid); // a malformed UUID is an error even when nothing runs
      const parent = str(args, 'parent', false);
      const match = (u: string, p: string) => (!uuid || u === parseUuid(uuid)) && (!parent || p === parent);
      if (args.defined) {
        return listJson(
          this.definitions.all
            .filter((d) => match(d.uuid, d.parent))
            .map((d) => ({
              parent: d.parent,
              uuid: d.uuid,
              config: { mdev_type: d.mdev_type, start: d.start, attrs: d.attrs },
              extra: { active: !!core.instance(d.uuid) },
            })),
        );
      }
      const entries = core.instances
        .filter((i) => match(i.uuid, i.parent.name))
        .map((i) => {
          const def = this.definitions.get(i.uuid);
          return {
            parent: i.parent.name,
            uuid: i.uuid,
            config: { mdev_type: i.type.id, start: def?.start ?? ('manual' as const), attrs: i.attrs },
            extra: { defined: !!def, ...runningFacts(i), ...this.displays.facts(i.uuid) },
          };
        });
      return listJson(entries);
    });
    h.set('start', async (args) => {
      const uuidArg = str(args, 'uuid', false);
      const parentArg = str(args, 'parent', false);
      const typeArg = str(args, 'type', false);
      let inst: Instance;
      if (uuidArg && !parentArg && !typeArg) {
        // Start a defined instance.
        const d = this.definitions.get(uuidArg);
        if (!d) throw new MdevError('ENOENT', `${uuidArg} is not defined; give -p PARENT and -t TYPE for a transient instance`);
        inst = await core.start(d.uuid, d.parent, d.mdev_type, d.attrs);
      } else {
        if (!parentArg || !typeArg) throw new MdevError('EINVAL', 'a transient instance needs both parent and type');
        const uuid = uuidArg || newUuid();
        const def = uuidArg ? this.definitions.get(uuidArg) : undefined;
        if (def && (def.parent !== parentArg || def.mdev_type !== typeArg)) {
          throw new MdevError('EEXIST', `${uuidArg} is defined as ${def.mdev_type} on ${def.parent}`);
        }
        inst = await core.start(uuid, parentArg, typeArg, attrsArg(args));
      }
      return { uuid: inst.uuid, socket: inst.socketPath };
    });
    h.set('stop', async (args) => {
      const uuid = parseUuid(str(args, 'uuid'));
      await core.stop(uuid);
      this.buffers.releaseInstance(uuid);
      return { stopped: true };
    });
    h.set('define', (args) => {
      const uuidArg = str(args, 'uuid', false);
      let parent = str(args, 'parent', false);
      let cfg: { mdev_type: string; start: 'auto' | 'manual'; attrs: ReturnType<typeof attrsArg> };
      if (args.config !== undefined) {
        cfg = validateConfig(args.config, 'jsonfile');
        if (args.auto === true) cfg.start = 'auto';
      } else if (str(args, 'type', false)) {
        cfg = { mdev_type: str(args, 'type'), start: args.auto === true ? 'auto' : 'manual', attrs: attrsArg(args) };
      } else if (uuidArg && core.instance(uuidArg)) {
        // Define a running instance as it is (mdevctl define -u UUID).
        const i = core.instance(uuidArg) as Instance;
        parent ||= i.parent.name;
        cfg = { mdev_type: i.type.id, start: args.auto === true ? 'auto' : 'manual', attrs: i.attrs };
      } else throw new MdevError('EINVAL', 'define needs -t TYPE, --jsonfile, or the UUID of a running instance');
      if (!parent) throw new MdevError('EINVAL', 'define needs -p PARENT');
      const uuid = uuidArg ? parseUuid(uuidArg) : newUuid();
      if (this.definitions.get(uuid)) throw new MdevError('EEXIST', `${uuid} is already defined`);
      core.reserve(uuid, parent, cfg.mdev_type, cfg.attrs);
      try {
        this.definitions.save({ uuid, parent, ...cfg });
      } catch (e) {
        core.release(uuid);
        throw e;
      }
      return { uuid };
    });
    h.set('undefine', (args) => {
      const d = this.definitions.remove(str(args, 'uuid'));
      core.release(d.uuid);
      return { uuid: d.uuid };
    });
    h.set('modify', (args) => {
      const d = this.definitions.get(str(args, 'uuid'));
      if (!d) throw new MdevError('ENOENT', `${args.uuid} is not defined`);
      const next = { ...d, attrs: [...d.attrs] };
      if (args.config !== undefined) Object.assign(next, validateConfig(args.config, 'jsonfile'));
      const parent = str(args, 'parent', false);
      if (parent) next.parent = parent;
      const type = str(args, 'type', false);
      if (type) next.mdev_type = type;
      if (args.auto === true) next.start = 'auto';
      if (args.manual === true) next.start = 'manual';
      const add = str(args, 'addattr', false);
      if (add) {
        const value = args.value;
        if (typeof value !== 'string') throw new MdevError('EINVAL', '--addattr needs --value');
        const at = typeof args.index === 'number' ? args.index : next.attrs.length;
        if (!Number.isInteger(at) || at < 0 || at > next.attrs.length) throw new MdevError('EINVAL', `attribute index ${at} out of range`);
        next.attrs.splice(at, 0, { [add]: value });
      }
      if (args.delattr === true) {
        const at = typeof args.index === 'number' ? args.index : next.attrs.length - 1;
        if (!Number.isInteger(at) || at < 0 || at >= next.attrs.length) throw new MdevError('EINVAL', `attribute index ${at} out of range`);
        next.attrs.splice(at, 1);
      }
      core.reserve(next.uuid, next.parent, next.mdev_type, next.attrs);
      try {
        this.definitions.save(next);
      } catch (e) {
        // Not saved: the reservation goes back to what the definition still says.
        core.reserve(d.uuid, d.parent, d.mdev_type, d.attrs);
        throw e;
      }
      return { uuid: next.uuid };
    });
    this.displays.registerHandlers(h);
    h.set('qemu-args', (args) => {
      const inst = core.instance(str(args, 'uuid'));
      if (!inst) throw new MdevError('ENODEV', `no running instance ${args.uuid}`);
      return { device: qemuDeviceArg(inst), args: ['-device', qemuDeviceArg(inst)] };
    });
    return h;
  }
}
