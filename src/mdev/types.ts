// What a device family registers with the mdev core: its types, what each
// costs from a parent's resources, and how to build an instance. The core
// never imports device code; devices register providers at daemon start.
import type { VfioUserBackend } from '../vfio-user/backend.js';

/** Resources a parent pools and types consume (serial ports, VRAM bytes, display heads, …). */
export type Resources = Record<string, number>;

/** One attribute as mdevctl stores it: a single-key object. */
export type MdevAttr = Record<string, string>;

export interface InstanceContext {
  uuid: string;
  parent: string;
  /** Directory for this instance's sockets. */
  runDir: string;
  attrs: MdevAttr[];
  log: (message: string) => void;
}

/** A running device instance as the core manages it. */
export interface DeviceInstance {
  readonly backend: VfioUserBackend;
  /** Device-specific facts for `list --dumpjson` (e.g. serial port sockets). */
  describe(): Record<string, unknown>;
  /** Starts host-side endpoints (sockets); called before the vfio-user socket opens. */
  start(): Promise<void>;
  /** Stops endpoints and frees host resources. */
  stop(): Promise<void>;
}

export interface MdevTypeProvider {
  /** Type id as mdevctl shows it, e.g. "mediated-tty-1". */
  readonly id: string;
  readonly name: string;
  readonly description: string;
  readonly deviceApi: 'vfio-pci';
  /** Resources one instance takes from its parent. */
  readonly cost: Resources;
  /** Validates attributes up front so `define` fails early; throws MdevError(EINVAL). */
  validateAttrs(attrs: MdevAttr[]): void;
  create(ctx: InstanceContext): Promise<DeviceInstance>;
}
