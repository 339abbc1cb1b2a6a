// The daemon: the mdev core with its parents and types, the management
// socket, and orderly shutdown on SIGTERM/SIGINT.
import { mkdirSync, readFileSync } from 'node:fs';
import { MdevCore, type ParentConfig } from '../mdev/core.js';
import { MdevError } from '../mdev/errors.js';
import type { MdevAttr, MdevTypeProvider } from '../mdev/types.js';
import { newUuid, parseUuid } from '../mdev/uuid.js';
import { serialTypes } from '../devices/serial/types.js';
import { ControlServer, type Handler } from './control-server.js';
import { listJson, qemuDeviceArg, runningFacts, typesJson } from './mdevctl-json.js';
import { controlSocket } from './paths.js';

export interface DaemonConfig {
  parents: ParentConfig[];
  /** Instances started with the daemon (transient). */
  instances?: { uuid?: string; parent: string; type: string; attrs?: MdevAttr[] }[];
}

export const DEFAULT_PARENT = 'mediated0';

export function defaultConfig(): DaemonConfig {
  return { parents: [{ name: DEFAULT_PARENT, resources: { ports: 24 } }] };
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
}

function str(args: Record<string, unknown>, key: string, required = true): string {
  const v = args[key];
  if (v === undefined || v === null || v === '') {
    if (required) throw new MdevError('EINVAL', `missing argument "${key}"`);
    return '';
  }
  if (typeof v !== 'string') throw new MdevError('EINVAL', `argument "${key}" must be a string`);
  return v;
}

function attrsArg(args: Record<string, unknown>): MdevAttr[] {
  const a = args.attrs ?? [];
  if (!Array.isArray(a) || !a.every((x) => x && typeof x === 'object' && Object.values(x).every((v) => typeof v === 'string'))) {
    throw new MdevError('EINVAL', 'attrs must be an array of {"name": "value"} objects');
  }
  return a as MdevAttr[];
}

export class Daemon {
  readonly core: MdevCore;
  private control: ControlServer | null = null;
  private readonly log: (m: string) => void;
  private stopping: Promise<void> | null = null;

  constructor(
    readonly options: DaemonOptions,
    types: MdevTypeProvider[] = serialTypes,
  ) {
    this.log = options.log ?? ((m) => process.stderr.write(`${new Date().toISOString()} mediated: ${m}\n`));
    this.core = new MdevCore({ runDir: options.runDir, log: this.log });
    for (const t of types) this.core.registerType(t);
    for (const p of options.config.parents) this.core.addParent(p);
  }

  get controlPath(): string {
    return controlSocket(this.options.runDir);
  }

  async start(): Promise<void> {
    mkdirSync(this.options.runDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.options.stateDir, { recursive: true, mode: 0o700 });
    this.control = new ControlServer(this.controlPath, this.handlers(), this.log);
    this.control.listen();
    for (const i of this.options.config.instances ?? []) {
      await this.core.start(i.uuid ?? newUuid(), i.parent, i.type, i.attrs ?? []);
    }
    this.log(`ready: control socket ${this.controlPath}`);
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.control?.close();
      await this.core.shutdown();
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
      const parent = str(args, 'parent', false);
      const entries = core.instances
        .filter((i) => (!uuid || i.uuid === parseUuid(uuid)) && (!parent || i.parent.name === parent))
        .map((i) => ({
          parent: i.parent.name,
          uuid: i.uuid,
          config: { mdev_type: i.type.id, start: 'manual' as const, attrs: i.attrs },
          extra: runningFacts(core, i),
        }));
      return listJson(entries);
    });
    h.set('start', async (args) => {
      const uuid = str(args, 'uuid', false) || newUuid();
      const inst = await core.start(uuid, str(args, 'parent'), str(args, 'type'), attrsArg(args));
      return { uuid: inst.uuid, socket: inst.socketPath };
    });
    h.set('stop', async (args) => {
      await core.stop(str(args, 'uuid'));
      return { stopped: true };
    });
    h.set('qemu-args', (args) => {
      const inst = core.instance(str(args, 'uuid'));
      if (!inst) throw new MdevError('ENODEV', `no running instance ${args.uuid}`);
      return { device: qemuDeviceArg(inst), args: ['-device', qemuDeviceArg(inst)] };
    });
    return h;
  }
}
