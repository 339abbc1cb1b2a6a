#!/usr/bin/env node
// `mediated`: the daemon and an mdevctl-shaped command line to manage it.
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { formatName, type PlaneInfo } from '../display/plane.js';
import { screenshot } from './consumer.js';
import { ControlClient, ControlError } from './control-client.js';
import { runDemo } from './demo.js';
import { controlSocket, DEFAULT_PARENT, defaultRunDir, defaultStateDir } from './paths.js';

const USAGE = `usage: mediated <command> [options]

Commands (mdevctl's names and flags):
  daemon [--run-dir D] [--state-dir D] [--config F] [--http HOST:PORT|off] [--demo]
                                                                run the daemon in the foreground
                                                                (--demo: also start one vGPU)
  types [-p PARENT] [--dumpjson]                                types per parent, available_instances
  list [-d|--defined] [-u UUID] [-p PARENT] [--dumpjson] [-v]  running (or defined) instances
  define [-u UUID] -p PARENT (-t TYPE | --jsonfile F) [-a|--auto] [--attr NAME=VALUE]...
                                                                persist a definition (prints a new UUID)
  undefine -u UUID                                              remove a definition
  modify -u UUID [-p P] [-t TYPE] [-a|--auto|-m|--manual] [--addattr N --value V [-i IDX]]
         [--delattr [-i IDX]] [--jsonfile F]                    change a definition
  start -u UUID                                                 start a defined instance
  start [-u UUID] -p PARENT (-t TYPE | --jsonfile F) [--attr NAME=VALUE]...
                                                                start a transient instance (prints its UUID)
  stop -u UUID                                                  stop an instance
  qemu-args -u UUID                                             the QEMU -device argument for an instance
  plane -u UUID [--dumpjson]                                    what the guest shows now (plane query)
  screenshot -u UUID -o FILE.png                                write the guest's screen as PNG
  demo [-u UUID]                                                boot the tiny test guest on a vGPU (starts one if needed)
  viewer-url                                                    the browser viewer's list page

Every command finds the daemon through --run-dir or MEDIATED_RUN_DIR.`;

const OPTIONS = {
  'run-dir': { type: 'string' },
  'state-dir': { type: 'string' },
  http: { type: 'string' },
  config: { type: 'string' },
  demo: { type: 'boolean' },
  uuid: { type: 'string', short: 'u' },
  parent: { type: 'string', short: 'p' },
  type: { type: 'string', short: 't' },
  attr: { type: 'string', multiple: true },
  defined: { type: 'boolean', short: 'd' },
  auto: { type: 'boolean', short: 'a' },
  manual: { type: 'boolean', short: 'm' },
  jsonfile: { type: 'string' },
  addattr: { type: 'string' },
  value: { type: 'string' },
  delattr: { type: 'boolean' },
  index: { type: 'string', short: 'i' },
  output: { type: 'string', short: 'o' },
  dumpjson: { type: 'boolean' },
  verbose: { type: 'boolean', short: 'v' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

function fail(message: string, code = 1): never {
  process.stderr.write(`mediated: ${message}\n`);
  process.exit(code);
}

function attrs(v: Values): Record<string, string>[] {
  return (v.attr ?? []).map((a) => {
    const i = a.indexOf('=');
    if (i <= 0) fail(`--attr takes NAME=VALUE, got "${a}"`, 2);
    return { [a.slice(0, i)]: a.slice(i + 1) };
  });
}

async function runDaemon(v: Values): Promise<void> {
  // Loaded only here: client verbs stay quick because they never load the daemon's code.
  const { Daemon, loadConfig } = await import('./daemon.js');
  const config = loadConfig(v.config);
  if (v.demo) {
    config.instances = [...(config.instances ?? []), { parent: config.parents[0]?.name ?? DEFAULT_PARENT, type: 'mediated-bochs-medium' }];
  }
  let http: { host: string; port: number } | null | undefined;
  if (v.http === 'off') http = null;
  else if (v.http) {
    const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(v.http);
    if (!m) fail(`--http takes HOST:PORT or off, got "${v.http}"`, 2);
    http = { host: (m[1] ?? m[2]) as string, port: Number(m[3]) };
  }
  const daemon = new Daemon({ runDir: defaultRunDir(v['run-dir']), stateDir: defaultStateDir(v['state-dir']), config, http });
  const shutdown = (sig: string) => {
    process.stderr.write(`mediated: ${sig}, shutting down\n`);
    void daemon.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  await daemon.start();
  if (daemon.viewer) process.stdout.write(`browser viewer: ${daemon.viewer.url()}\n`);
  for (const inst of daemon.core.instances) {
    const facts = daemon.displayFacts(inst.uuid);
    if (facts.vnc) process.stdout.write(`VNC for ${inst.uuid}: ${facts.vnc}\n`);
    if (facts.viewer) process.stdout.write(`viewer for ${inst.uuid}: ${facts.viewer}\n`);
    process.stdout.write(`instance ${inst.uuid} (${inst.type.id} on ${inst.parent.name})\n`);
    process.stdout.write(
      `  attach it to a VM (guest RAM must be a shared memfd; keep your usual disk/boot options):\n` +
        `    qemu-system-x86_64 -m 1G -object memory-backend-memfd,id=mem0,size=1G,share=on -machine memory-backend=mem0 -vga none \\\n` +
        `      -device '${JSON.stringify({ driver: 'vfio-user-pci', id: `mdev-${inst.uuid.slice(0, 8)}`, rombar: 0, socket: { type: 'unix', path: inst.socketPath } })}'\n` +
        `  or boot the tiny test guest on it: mediated demo -u ${inst.uuid}${v['run-dir'] ? ` --run-dir ${v['run-dir']}` : ''}\n`,
    );
  }
}

function jsonFile(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path === '-' ? 0 : path, 'utf8'));
  } catch (e) {
    fail(`cannot read ${path}: ${(e as Error).message}`, 2);
  }
}

function printTypes(doc: unknown): void {
  for (const [parent, types] of Object.entries((doc as Record<string, unknown[]>[])[0] ?? {})) {
    process.stdout.write(`${parent}\n`);
    for (const t of types as Record<string, Record<string, unknown>>[]) {
      for (const [id, info] of Object.entries(t)) {
        process.stdout.write(`  ${id}\n    Available instances: ${info.available_instances}\n    Device API: ${info.device_api}\n`);
        if (info.name) process.stdout.write(`    Name: ${info.name}\n`);
        if (info.description) process.stdout.write(`    Description: ${info.description}\n`);
      }
    }
  }
}

/** `list --defined --dumpjson` prints exactly mdevctl's config objects (the daemon adds "active" for the text form). */
function configsOnly(doc: unknown): unknown {
  return (doc as Record<string, Record<string, Record<string, unknown>>[]>[]).map((byParent) =>
    Object.fromEntries(
      Object.entries(byParent).map(([parent, devs]) => [
        parent,
        devs.map((d) => Object.fromEntries(Object.entries(d).map(([uuid, c]) => [uuid, { mdev_type: c.mdev_type, start: c.start, attrs: c.attrs }]))),
      ]),
    ),
  );
}

function printList(doc: unknown, verbose: boolean): void {
  for (const [parent, devs] of Object.entries((doc as Record<string, unknown[]>[])[0] ?? {})) {
    for (const d of devs as Record<string, Record<string, unknown>>[]) {
      for (const [uuid, c] of Object.entries(d)) {
        const mark = c.active === true ? ' (active)' : c.defined === true ? ' (defined)' : '';
        process.stdout.write(`${uuid} ${parent} ${c.mdev_type} ${c.start}${mark}\n`);
        if (!verbose) continue;
        process.stdout.write(`  vfio-user socket: ${c.vfio_user_socket}${c.attached ? ' (attached)' : ''}\n`);
        for (const [i, a] of ((c.attrs as unknown[]) ?? []).entries()) process.stdout.write(`  Attrs:\n    @{${i}}: ${JSON.stringify(a)}\n`);
        for (const s of (c.serial as { port: number; socket: string }[]) ?? []) process.stdout.write(`  serial port ${s.port}: ${s.socket}\n`);
      }
    }
  }
}

export async function main(argv: string[]): Promise<void> {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  } catch (e) {
    fail(`${(e as Error).message}\n${USAGE}`, 2);
  }
  const { values: v, positionals } = parsed;
  const verb = positionals[0];
  if (v.help || !verb || verb === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (verb === 'daemon') return runDaemon(v);
  const known = ['types', 'list', 'start', 'stop', 'qemu-args', 'define', 'undefine', 'modify', 'plane', 'screenshot', 'demo', 'viewer-url'];
  if (!known.includes(verb)) fail(`unknown command "${verb}"\n${USAGE}`, 2);
  let client: ControlClient;
  try {
    client = new ControlClient(controlSocket(defaultRunDir(v['run-dir'])));
  } catch (e) {
    fail((e as Error).message);
  }
  try {
    switch (verb) {
      case 'types': {
        const doc = await client.call('types', { parent: v.parent });
        if (v.dumpjson) process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
        else printTypes(doc);
        break;
      }
      case 'list': {
        const doc = await client.call('list', { uuid: v.uuid, parent: v.parent, defined: !!v.defined });
        if (v.dumpjson) process.stdout.write(`${JSON.stringify(v.defined ? configsOnly(doc) : doc, null, 2)}\n`);
        else printList(doc, !!v.verbose);
        break;
      }
      case 'start': {
        const fromFile = v.jsonfile ? jsonFile(v.jsonfile) : null;
        if (!v.uuid && (!v.parent || !(v.type || fromFile))) fail('start needs -u UUID of a definition, or -p PARENT and -t TYPE', 2);
        const r = await client.call<{ uuid: string }>('start', {
          uuid: v.uuid,
          parent: v.parent,
          type: v.type ?? (fromFile as { mdev_type?: string } | null)?.mdev_type,
          attrs: fromFile ? ((fromFile as { attrs?: unknown }).attrs ?? []) : attrs(v),
        });
        if (!v.uuid) process.stdout.write(`${r.uuid}\n`);
        break;
      }
      case 'define': {
        const r = await client.call<{ uuid: string }>('define', {
          uuid: v.uuid,
          parent: v.parent,
          type: v.type,
          auto: !!v.auto,
          attrs: attrs(v),
          ...(v.jsonfile ? { config: jsonFile(v.jsonfile) } : {}),
        });
        if (!v.uuid) process.stdout.write(`${r.uuid}\n`);
        break;
      }
      case 'undefine':
        if (!v.uuid) fail('undefine needs -u UUID', 2);
        await client.call('undefine', { uuid: v.uuid });
        break;
      case 'modify': {
        if (!v.uuid) fail('modify needs -u UUID', 2);
        if (v.auto && v.manual) fail('--auto and --manual exclude each other', 2);
        const index = v.index === undefined ? undefined : Number(v.index);
        if (index !== undefined && !Number.isInteger(index)) fail(`-i takes an integer, got "${v.index}"`, 2);
        await client.call('modify', {
          uuid: v.uuid,
          parent: v.parent,
          type: v.type,
          auto: !!v.auto,
          manual: !!v.manual,
          addattr: v.addattr,
          value: v.value,
          delattr: !!v.delattr,
          index,
          ...(v.jsonfile ? { config: jsonFile(v.jsonfile) } : {}),
        });
        break;
      }
      case 'plane': {
        if (!v.uuid) fail('plane needs -u UUID', 2);
        const p = await client.call<PlaneInfo>('plane-query', { uuid: v.uuid });
        if (v.dumpjson) process.stdout.write(`${JSON.stringify(p, null, 2)}\n`);
        else if (!p.drm_format) process.stdout.write('no plane: the guest shows nothing\n');
        else process.stdout.write(`${p.width}x${p.height} ${formatName(p.drm_format)} stride ${p.stride} offset ${p.offset} id ${p.dmabuf_id}\n`);
        break;
      }
      case 'viewer-url': {
        const r = await client.call<{ url: string | null }>('viewer-url');
        process.stdout.write(`${r.url ?? 'the browser viewer is off'}\n`);
        break;
      }
      case 'demo': {
        let uuid = v.uuid;
        if (!uuid) {
          const r = await client.call<{ uuid: string }>('start', { parent: v.parent ?? DEFAULT_PARENT, type: v.type ?? 'mediated-bochs-medium' });
          uuid = r.uuid;
          process.stdout.write(`started vGPU ${uuid}\n`);
        }
        const doc = (await client.call('list', { uuid })) as Record<string, Record<string, Record<string, unknown>>[]>[];
        const facts = Object.values(Object.values(doc[0] ?? {})[0]?.[0] ?? {})[0] ?? {};
        if (facts.vnc) process.stdout.write(`VNC: ${facts.vnc}\n`);
        if (facts.viewer) process.stdout.write(`browser: ${facts.viewer}\n`);
        client.close();
        process.exitCode = await runDemo(facts.vfio_user_socket as string);
        return;
      }
      case 'screenshot': {
        if (!v.uuid || !v.output) fail('screenshot needs -u UUID and -o FILE.png', 2);
        const png = await screenshot(client, v.uuid);
        writeFileSync(v.output, png);
        break;
      }
      case 'stop':
        if (!v.uuid) fail('stop needs -u UUID', 2);
        await client.call('stop', { uuid: v.uuid });
        break;
      case 'qemu-args': {
        if (!v.uuid) fail('qemu-args needs -u UUID', 2);
        const r = await client.call<{ device: string }>('qemu-args', { uuid: v.uuid });
        process.stdout.write(`-device '${r.device}'\n`);
        break;
      }
    }
  } catch (e) {
    if (e instanceof ControlError) fail(`${e.message} (${e.code})`);
    throw e;
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).catch((e) => fail((e as Error).stack ?? String(e)));
