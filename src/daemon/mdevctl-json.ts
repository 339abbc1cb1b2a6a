// JSON in mdevctl's shapes, so scripts and libvirt-style tooling read ours as theirs.
import type { Instance, Parent } from '../mdev/core.js';
import type { MdevAttr } from '../mdev/types.js';

export interface MdevConfig {
  mdev_type: string;
  start: 'auto' | 'manual';
  attrs: MdevAttr[];
}

/** `types --dumpjson`: [ { parent: [ { type: {available_instances, device_api, name, description} } ] } ] */
export function typesJson(parents: Parent[]): unknown {
  const out: Record<string, unknown[]> = {};
  for (const p of parents) {
    out[p.name] = p.types.map((t) => ({
      [t.id]: {
        available_instances: p.available(t),
        device_api: t.deviceApi,
        name: t.name,
        description: t.description,
      },
    }));
  }
  return [out];
}

/** `list --dumpjson`: [ { parent: [ { uuid: {mdev_type, start, attrs, …running facts} } ] } ] */
export function listJson(entries: { parent: string; uuid: string; config: MdevConfig; extra: Record<string, unknown> }[]): unknown {
  const out: Record<string, unknown[]> = {};
  for (const e of entries) {
    (out[e.parent] ??= []).push({ [e.uuid]: { ...e.config, ...e.extra } });
  }
  return entries.length ? [out] : [];
}

export function qemuDeviceArg(inst: Instance): string {
  return JSON.stringify({
    driver: 'vfio-user-pci',
    id: `mdev-${inst.uuid.slice(0, 8)}`,
    rombar: 0,
    socket: { type: 'unix', path: inst.socketPath },
  });
}

export function runningFacts(inst: Instance): Record<string, unknown> {
  return {
    state: inst.state,
    vfio_user_socket: inst.socketPath,
    attached: inst.attached,
    ...(inst.device?.describe() ?? {}),
  };
}
