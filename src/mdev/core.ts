// The mdev core: parents pool resources, types draw on them, instances are
// created and removed by UUID. Each running instance is served on its own
// vfio-user socket. Errors follow the kernel's mdev ABI (EEXIST, ENOSPC, …).
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { VfioUserServer } from '../vfio-user/server.js';
import type { SessionOptions } from '../vfio-user/session.js';
import { MdevError } from './errors.js';
import type { DeviceInstance, MdevAttr, MdevTypeProvider, Resources } from './types.js';
import { parseUuid } from './uuid.js';

export interface ParentConfig {
  name: string;
  /** Resource budget, e.g. { ports: 24 } or { vram: 256 MiB, heads: 4 }. */
  resources: Resources;
  /** Type ids offered by this parent; default: every registered type whose costs it can pay. */
  types?: string[];
}

export class Parent {
  readonly used: Resources = {};
  constructor(
    readonly config: ParentConfig,
    private readonly providers: () => Map<string, MdevTypeProvider>,
  ) {
    for (const k of Object.keys(config.resources)) this.used[k] = 0;
  }

  get name(): string {
    return this.config.name;
  }

  /** The types this parent offers, in registration order. */
  get types(): MdevTypeProvider[] {
    const all = [...this.providers().values()];
    return all.filter((t) => (this.config.types ? this.config.types.includes(t.id) : Object.keys(t.cost).every((k) => (this.config.resources[k] ?? 0) > 0)));
  }

  type(id: string): MdevTypeProvider | undefined {
    return this.types.find((t) => t.id === id);
  }

  /** How many more instances of `type` fit in what is left. */
  available(type: MdevTypeProvider): number {
    let n = Number.POSITIVE_INFINITY;
    for (const [k, c] of Object.entries(type.cost)) {
      if (c <= 0) continue;
      const free = (this.config.resources[k] ?? 0) - (this.used[k] ?? 0);
      n = Math.min(n, Math.floor(free / c));
    }
    return Number.isFinite(n) ? Math.max(0, n) : 0;
  }

  charge(type: MdevTypeProvider, sign: 1 | -1): void {
    for (const [k, c] of Object.entries(type.cost)) this.used[k] = (this.used[k] ?? 0) + sign * c;
  }
}

export type InstanceState = 'starting' | 'running' | 'stopping';

export class Instance {
  state: InstanceState = 'starting';
  device: DeviceInstance | null = null;
  server: VfioUserServer | null = null;
  readonly startedAt = new Date();
  constructor(
    readonly uuid: string,
    readonly parent: Parent,
    readonly type: MdevTypeProvider,
    readonly attrs: MdevAttr[],
    readonly runDir: string,
  ) {}

  get socketPath(): string {
    return join(this.runDir, 'vfio-user.sock');
  }

  /** Whether a VMM is attached right now. */
  get attached(): boolean {
    return !!this.server?.session && !this.server.session.isClosed;
  }
}

export interface MdevCoreOptions {
  runDir: string;
  log?: (message: string) => void;
  session?: SessionOptions;
  /** Upper layers attach consumers (e.g. VNC) to a started instance and detach them before it stops. */
  onStarted?: (inst: Instance) => Promise<void>;
  onStopping?: (inst: Instance) => Promise<void>;
}

export class MdevCore {
  private readonly providers = new Map<string, MdevTypeProvider>();
  private readonly parentMap = new Map<string, Parent>();
  private readonly instanceMap = new Map<string, Instance>();
  /**
   * Resources held per UUID, by a running instance or by a definition (a
   * definition reserves its share so it can always start). A UUID holds at most one charge.
   */
  private readonly charges = new Map<string, { parent: Parent; type: MdevTypeProvider }>();
  private readonly reserved = new Set<string>();
  /**
   * A definition of a running UUID that names another parent or type than the instance runs
   * as: its share is held here too and becomes the UUID's charge when the instance stops.
   */
  private readonly pending = new Map<string, { parent: Parent; type: MdevTypeProvider }>();
  private readonly log: (m: string) => void;

  constructor(private readonly options: MdevCoreOptions) {
    this.log = options.log ?? (() => {});
  }

  registerType(p: MdevTypeProvider): void {
    if (this.providers.has(p.id)) throw new Error(`type ${p.id} registered twice`);
    this.providers.set(p.id, p);
  }

  addParent(config: ParentConfig): Parent {
    if (this.parentMap.has(config.name)) throw new Error(`parent ${config.name} exists`);
    const p = new Parent(config, () => this.providers);
    this.parentMap.set(config.name, p);
    return p;
  }

  get parents(): Parent[] {
    return [...this.parentMap.values()];
  }

  parent(name: string): Parent {
    const p = this.parentMap.get(name);
    if (!p) throw new MdevError('ENODEV', `parent device ${name} does not exist`);
    return p;
  }

  get instances(): Instance[] {
    return [...this.instanceMap.values()];
  }

  instance(uuid: string): Instance | undefined {
    return this.instanceMap.get(parseUuid(uuid));
  }

  /** Checks parent, type and attributes without creating anything (for `define`). */
  validate(parentName: string, typeId: string, attrs: MdevAttr[]): { parent: Parent; type: MdevTypeProvider } {
    const parent = this.parent(parentName);
    const type = parent.type(typeId);
    if (!type) throw new MdevError('EINVAL', `parent ${parentName} has no type ${typeId} (types: ${parent.types.map((t) => t.id).join(', ')})`);
    type.validateAttrs(attrs);
    return { parent, type };
  }

  /** Creates and starts an instance: the `create` of mdev plus opening its vfio-user socket. */
  async start(uuidText: string, parentName: string, typeId: string, attrs: MdevAttr[] = []): Promise<Instance> {
    const uuid = parseUuid(uuidText);
    if (this.instanceMap.has(uuid)) throw new MdevError('EEXIST', `an instance with UUID ${uuid} already exists`);
    const { parent, type } = this.validate(parentName, typeId, attrs);
    const held = this.charges.get(uuid);
    if (held && (held.parent !== parent || held.type !== type)) {
      throw new MdevError('EEXIST', `${uuid} is reserved as ${held.type.id} on ${held.parent.name}`);
    }
    // Charge before the first await so concurrent starts cannot oversubscribe.
    if (!held) this.charge(uuid, parent, type);
    const runDir = join(this.options.runDir, uuid);
    const inst = new Instance(uuid, parent, type, attrs, runDir);
    this.instanceMap.set(uuid, inst);
    const log = (m: string) => this.log(`[${uuid.slice(0, 8)}] ${m}`);
    try {
      rmSync(runDir, { recursive: true, force: true });
      mkdirSync(runDir, { recursive: true, mode: 0o755 });
      inst.device = await type.create({ uuid, parent: parent.name, runDir, attrs, log });
      await inst.device.start();
      inst.server = new VfioUserServer(inst.socketPath, inst.device.backend, { ...this.options.session, log });
      inst.server.listen();
      await this.options.onStarted?.(inst);
      inst.state = 'running';
      log(`started ${type.id} on ${parent.name}, vfio-user socket ${inst.socketPath}`);
      return inst;
    } catch (e) {
      await this.teardown(inst);
      if (e instanceof MdevError) throw e;
      throw new MdevError('EIO', `starting ${type.id} failed: ${(e as Error).message}`);
    }
  }

  /** Removes a running instance (mdev `remove`); an attached VMM loses the device. */
  async stop(uuidText: string): Promise<void> {
    const uuid = parseUuid(uuidText);
    const inst = this.instanceMap.get(uuid);
    if (!inst) throw new MdevError('ENODEV', `no running instance ${uuid}`);
    if (inst.state !== 'running') throw new MdevError('EAGAIN', `instance ${uuid} is ${inst.state}`);
    inst.state = 'stopping';
    if (inst.attached) this.log(`[${uuid.slice(0, 8)}] stopping while a VMM is attached: it loses the device`);
    await this.teardown(inst);
    this.log(`[${uuid.slice(0, 8)}] stopped`);
  }

  private async teardown(inst: Instance): Promise<void> {
    try {
      await this.options.onStopping?.(inst).catch((e) => this.log(`[${inst.uuid.slice(0, 8)}] detaching consumers: ${(e as Error).message}`));
      await inst.server?.close();
      await inst.device?.stop();
    } finally {
      this.instanceMap.delete(inst.uuid);
      const next = this.pending.get(inst.uuid);
      if (!this.reserved.has(inst.uuid) || next) this.uncharge(inst.uuid);
      if (next) {
        // The definition changed while the instance ran: its own share becomes the charge.
        this.pending.delete(inst.uuid);
        this.charges.set(inst.uuid, next);
      }
      rmSync(inst.runDir, { recursive: true, force: true });
    }
  }

  private charge(uuid: string, parent: Parent, type: MdevTypeProvider): void {
    if (parent.available(type) < 1) {
      throw new MdevError('ENOSPC', `parent ${parent.name} has no room left for ${type.id} (available_instances is 0)`);
    }
    parent.charge(type, 1);
    this.charges.set(uuid, { parent, type });
  }

  private uncharge(uuid: string): void {
    const c = this.charges.get(uuid);
    if (!c) return;
    c.parent.charge(c.type, -1);
    this.charges.delete(uuid);
  }

  /** A definition takes its share of the parent now, so available_instances reflects it. */
  reserve(uuidText: string, parentName: string, typeId: string, attrs: MdevAttr[]): void {
    const uuid = parseUuid(uuidText);
    const { parent, type } = this.validate(parentName, typeId, attrs);
    const held = this.charges.get(uuid);
    if (held && this.instanceMap.has(uuid)) {
      // Running: the instance keeps its charge; the new definition applies from its next start.
      // If that definition names another parent or type, it reserves its own share now.
      const before = this.pending.get(uuid);
      if (before) {
        before.parent.charge(before.type, -1);
        this.pending.delete(uuid);
      }
      if (held.parent !== parent || held.type !== type) {
        if (parent.available(type) < 1) {
          if (before) {
            before.parent.charge(before.type, 1);
            this.pending.set(uuid, before);
          }
          throw new MdevError('ENOSPC', `parent ${parent.name} has no room left for ${type.id} (available_instances is 0)`);
        }
        parent.charge(type, 1);
        this.pending.set(uuid, { parent, type });
      }
      this.reserved.add(uuid);
      return;
    }
    if (held) this.uncharge(uuid);
    try {
      this.charge(uuid, parent, type);
    } catch (e) {
      if (held) {
        held.parent.charge(held.type, 1);
        this.charges.set(uuid, held);
      }
      throw e;
    }
    this.reserved.add(uuid);
  }

  /** The definition is gone: its reservation is returned unless the instance still runs. */
  release(uuidText: string): void {
    const uuid = parseUuid(uuidText);
    this.reserved.delete(uuid);
    const p = this.pending.get(uuid);
    if (p) {
      p.parent.charge(p.type, -1);
      this.pending.delete(uuid);
    }
    if (!this.instanceMap.has(uuid)) this.uncharge(uuid);
  }

  async shutdown(): Promise<void> {
    for (const inst of this.instances) {
      if (inst.state === 'running') {
        inst.state = 'stopping';
        await this.teardown(inst).catch((e) => this.log(`stopping ${inst.uuid}: ${(e as Error).message}`));
      }
    }
  }
}
