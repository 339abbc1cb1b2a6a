// End to end: the real daemon process driven by the real CLI. types, start/stop,
// qemu-args, mdev error codes, available_instances accounting with definitions,
// define/undefine/modify in mdevctl's flags and JSON, and a hostile control socket.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CONTROL_CMD, encodeControl, KIND_REQUEST } from '../../src/daemon/control-protocol.js';
import {
  available,
  type CliResult,
  cliEnvFor,
  cliFor,
  DaemonProcess,
  type Dirs,
  expectError,
  isSocket,
  listed,
  ok,
  okJson,
  PARENT,
  removeDirs,
  sleep,
  TYPES,
  tempDirs,
  typesOf,
  UUID_RE,
} from './helpers.js';

type Run = (...args: string[]) => Promise<CliResult>;

/** One daemon per describe block, on its own directories, always killed afterwards. */
function withDaemon(tag: string): { dirs: Dirs; run: Run; env: Run; daemon: () => DaemonProcess } {
  const dirs = tempDirs(tag);
  let d: DaemonProcess | null = null;
  before(async () => {
    d = await DaemonProcess.start(dirs);
  });
  after(async () => {
    await d?.dispose();
    removeDirs(dirs);
  });
  return {
    dirs,
    run: cliFor(dirs),
    env: cliEnvFor(dirs),
    daemon: () => d as DaemonProcess,
  };
}

const FRESH = { 'mediated-bochs-small': 16, 'mediated-bochs-medium': 16, 'mediated-bochs-large': 4, 'mediated-tty-1': 24, 'mediated-tty-2': 12 };

describe('types', () => {
  const { run, env } = withDaemon('types');

  it('--dumpjson has mdevctl shape with the five types', async () => {
    const doc = await okJson<unknown>(run('types', '--dumpjson'));
    assert.ok(Array.isArray(doc) && doc.length === 1, 'one-element array');
    const top = doc[0] as Record<string, unknown>;
    assert.deepEqual(Object.keys(top), [PARENT]);
    const types = top[PARENT] as Record<string, Record<string, unknown>>[];
    assert.ok(Array.isArray(types));
    assert.deepEqual(
      types.map((t) => Object.keys(t)),
      TYPES.map((t) => [t]),
      'an array of single-key objects, one per type',
    );
    for (const t of types) {
      const [id, info] = Object.entries(t)[0] as [string, Record<string, unknown>];
      assert.deepEqual(Object.keys(info).sort(), ['available_instances', 'description', 'device_api', 'name'], id);
      assert.equal(info.device_api, 'vfio-pci');
      assert.ok(Number.isInteger(info.available_instances) && (info.available_instances as number) >= 0);
      assert.equal(typeof info.name, 'string');
      assert.ok((info.name as string).length > 0);
      assert.equal(typeof info.description, 'string');
      assert.ok((info.description as string).length > 0);
    }
    // 256 MiB over 16 heads; 24 ports.
    assert.deepEqual(await available(run), FRESH);
    const t = await typesOf(run);
    assert.match(t['mediated-bochs-small']?.description ?? '', /4 MB/);
    assert.match(t['mediated-bochs-medium']?.description ?? '', /16 MB/);
    assert.match(t['mediated-bochs-large']?.description ?? '', /64 MB/);
  });

  it('text output lists every type with its availability (via MEDIATED_RUN_DIR too)', async () => {
    for (const r of [run, env]) {
      const text = await ok(r('types'));
      assert.match(text, new RegExp(`^${PARENT}$`, 'm'));
      for (const id of TYPES) assert.match(text, new RegExp(`^\\s+${id}$`, 'm'));
      assert.match(text, /Available instances: 16/);
      assert.match(text, /Device API: vfio-pci/);
    }
    const p = await ok(run('types', '-p', PARENT));
    for (const id of TYPES) assert.ok(p.includes(id));
    expectError(await run('types', '-p', 'nosuchparent'), 'ENODEV');
  });

  it('without a daemon the CLI fails cleanly', async () => {
    const r = await cliFor({ root: '', run: '/nonexistent/mediated-run', state: '' })('types');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cannot reach the mediated daemon/);
  });
});

describe('lifecycle', () => {
  const { dirs, run, env } = withDaemon('life');

  it('start, list, qemu-args, stop a vGPU', async () => {
    const out = await ok(run('start', '-p', PARENT, '-t', 'mediated-bochs-medium'));
    const uuid = out.trim();
    assert.match(uuid, UUID_RE);

    // Through MEDIATED_RUN_DIR as well as --run-dir.
    for (const r of [run, env]) {
      const doc = await okJson<Record<string, Record<string, Record<string, unknown>>[]>[]>(r('list', '--dumpjson'));
      assert.equal(doc.length, 1);
      assert.deepEqual(Object.keys(doc[0] as object), [PARENT]);
      const devs = (doc[0] as Record<string, Record<string, Record<string, unknown>>[]>)[PARENT] as Record<string, Record<string, unknown>>[];
      assert.equal(devs.length, 1);
      const inst = (devs[0] as Record<string, Record<string, unknown>>)[uuid] as Record<string, unknown>;
      assert.ok(inst, 'listed under its UUID');
      assert.equal(inst.mdev_type, 'mediated-bochs-medium');
      assert.equal(inst.start, 'manual');
      assert.deepEqual(inst.attrs, []);
      assert.equal(inst.plane, null);
      assert.equal(typeof inst.vfio_user_socket, 'string');
      assert.ok(isSocket(inst.vfio_user_socket as string), `${inst.vfio_user_socket} is a socket`);
      assert.ok((inst.vfio_user_socket as string).startsWith(dirs.run));
    }
    const sock = (await listed(run))[uuid]?.vfio_user_socket as string;

    const text = await ok(run('list'));
    assert.match(text, new RegExp(`^${uuid} ${PARENT} mediated-bochs-medium manual$`, 'm'));
    const one = await listed(() => run('list', '-u', uuid, '--dumpjson'));
    assert.deepEqual(Object.keys(one), [uuid]);

    for (const r of [run, env]) {
      const qa = await ok(r('qemu-args', '-u', uuid));
      const m = /^-device '(.*)'\n$/.exec(qa);
      assert.ok(m, `qemu-args output: ${qa}`);
      const dev = JSON.parse(m[1] as string) as { driver: string; socket: { type: string; path: string } };
      assert.equal(dev.driver, 'vfio-user-pci');
      assert.deepEqual(dev.socket, { type: 'unix', path: sock });
    }

    assert.equal(await ok(run('stop', '-u', uuid)), '');
    assert.deepEqual(await listed(run), {});
    assert.equal(existsSync(sock), false, 'the vfio-user socket is gone');
    assert.equal(existsSync(join(dirs.run, uuid)), false, 'the instance directory is gone');
    expectError(await run('qemu-args', '-u', uuid), 'ENODEV');
    assert.deepEqual(await available(run), FRESH);
  });

  it('start and stop through MEDIATED_RUN_DIR only', async () => {
    const uuid = (await ok(env('start', '-p', PARENT, '-t', 'mediated-bochs-small'))).trim();
    assert.match(uuid, UUID_RE);
    assert.ok(uuid in (await listed(run)));
    await ok(env('stop', '-u', uuid));
    assert.deepEqual(await listed(env), {});
  });

  it('a given UUID is used (and canonicalised to lower case)', async () => {
    const upper = 'A1B2C3D4-0000-4000-8000-00000000ABCD';
    const out = await ok(run('start', '-u', upper, '-p', PARENT, '-t', 'mediated-tty-1'));
    assert.equal(out, '', 'no UUID printed when one was given');
    const l = await listed(run);
    assert.deepEqual(Object.keys(l), [upper.toLowerCase()]);
    await ok(run('stop', '-u', upper));
    assert.deepEqual(await listed(run), {});
  });

  it('mediated-tty-2 has two serial host sockets', async () => {
    const uuid = (await ok(run('start', '-p', PARENT, '-t', 'mediated-tty-2'))).trim();
    const inst = (await listed(run))[uuid] as Record<string, unknown>;
    assert.equal(inst.mdev_type, 'mediated-tty-2');
    assert.ok(isSocket(inst.vfio_user_socket as string));
    const serial = inst.serial as { port: number; socket: string }[];
    assert.equal(serial.length, 2);
    assert.deepEqual(
      serial.map((s) => s.port),
      [0, 1],
    );
    for (const s of serial) assert.ok(isSocket(s.socket), `${s.socket} is a socket`);
    assert.notEqual(serial[0]?.socket, serial[1]?.socket);
    const verbose = await ok(run('list', '-v'));
    for (const s of serial) assert.ok(verbose.includes(s.socket));
    assert.equal((await available(run))['mediated-tty-1'], 22);
    await ok(run('stop', '-u', uuid));
    for (const s of serial) assert.equal(existsSync(s.socket), false);
    assert.deepEqual(await available(run), FRESH);
  });

  it('irq=msi on mediated-tty-2 is refused with EINVAL and nothing starts', async () => {
    const r = await run('start', '-p', PARENT, '-t', 'mediated-tty-2', '--attr', 'irq=msi');
    expectError(r, 'EINVAL', /msi/);
    assert.match(r.stderr, /mediated-tty-1|single-port/);
    assert.equal(r.stdout, '');
    assert.deepEqual(await listed(run), {});
    assert.deepEqual(await available(run), FRESH);
    // The same attribute is fine on a single-port card.
    const uuid = (await ok(run('start', '-p', PARENT, '-t', 'mediated-tty-1', '--attr', 'irq=msi'))).trim();
    assert.equal((await listed(run))[uuid]?.irq, 'msi');
    assert.deepEqual((await listed(run))[uuid]?.attrs, [{ irq: 'msi' }]);
    await ok(run('stop', '-u', uuid));
  });
});

describe('errors users know from mdev', () => {
  const { run } = withDaemon('errors');
  const U = '0f0f0f0f-1111-4222-8333-444444444444';

  it('duplicate UUID: EEXIST', async () => {
    await ok(run('start', '-u', U, '-p', PARENT, '-t', 'mediated-bochs-small'));
    expectError(await run('start', '-u', U, '-p', PARENT, '-t', 'mediated-bochs-small'), 'EEXIST', new RegExp(U));
    expectError(await run('start', '-u', U.toUpperCase(), '-p', PARENT, '-t', 'mediated-tty-1'), 'EEXIST');
    assert.deepEqual(Object.keys(await listed(run)), [U]);
    await ok(run('stop', '-u', U));
  });

  it('unknown type: EINVAL; unknown parent: ENODEV; bad UUID: EINVAL', async () => {
    const bads = ['not-a-uuid', '0f0f0f0f-1111-4222-8333-44444444444', '0f0f0f0f11114222833344444444444444', 'zf0f0f0f-1111-4222-8333-444444444444'];
    const cases: [string[], string, RegExp?][] = [
      [['start', '-p', PARENT, '-t', 'mediated-bochs-huge'], 'EINVAL', /mediated-bochs-huge/],
      [['start', '-p', 'mediated9', '-t', 'mediated-bochs-small'], 'ENODEV', /mediated9/],
      ...bads.map((bad): [string[], string, RegExp] => [['start', '-u', bad, '-p', PARENT, '-t', 'mediated-bochs-small'], 'EINVAL', /not a UUID/]),
      [['stop', '-u', 'nope'], 'EINVAL'],
      [['define', '-p', 'mediated9', '-t', 'mediated-bochs-small'], 'ENODEV'],
      [['define', '-p', PARENT, '-t', 'mediated-bochs-huge'], 'EINVAL'],
      [['define', '-u', 'bad', '-p', PARENT, '-t', 'mediated-bochs-small'], 'EINVAL'],
    ];
    const rs = await Promise.all(cases.map(([args]) => run(...args)));
    for (const [i, [, code, re]] of cases.entries()) expectError(rs[i] as CliResult, code, re);
    const [l, ld, a] = await Promise.all([listed(run), listed(run, true), available(run)]);
    assert.deepEqual(l, {});
    assert.deepEqual(ld, {});
    assert.deepEqual(a, FRESH);
  });

  it('exhausted VRAM budget: four large fit, the fifth gets ENOSPC', async () => {
    const uuids = (await Promise.all([1, 2, 3, 4].map(() => ok(run('start', '-p', PARENT, '-t', 'mediated-bochs-large'))))).map((o) => o.trim());
    const a = await available(run);
    assert.equal(a['mediated-bochs-large'], 0);
    assert.equal(a['mediated-bochs-medium'], 0);
    assert.equal(a['mediated-bochs-small'], 0);
    assert.equal(a['mediated-tty-1'], 24, 'serial ports are a separate budget');
    const [r, small, def, l] = await Promise.all([
      run('start', '-p', PARENT, '-t', 'mediated-bochs-large'),
      run('start', '-p', PARENT, '-t', 'mediated-bochs-small'),
      run('define', '-p', PARENT, '-t', 'mediated-bochs-small'),
      listed(run),
    ]);
    expectError(r, 'ENOSPC', /mediated-bochs-large/);
    expectError(small, 'ENOSPC');
    expectError(def, 'ENOSPC');
    assert.equal(Object.keys(l).length, 4);
    await ok(run('stop', '-u', uuids[0] as string));
    assert.equal((await available(run))['mediated-bochs-large'], 1);
    const again = (await ok(run('start', '-p', PARENT, '-t', 'mediated-bochs-large'))).trim();
    await Promise.all([...uuids.slice(1), again].map((u) => ok(run('stop', '-u', u))));
    assert.deepEqual(await available(run), FRESH);
  });

  it('exhausted serial ports under concurrent starts: 12 dual cards fit, the 13th gets ENOSPC', async () => {
    const rs = await Promise.all(Array.from({ length: 13 }, () => run('start', '-p', PARENT, '-t', 'mediated-tty-2')));
    const good = rs.filter((r) => r.code === 0);
    const bad = rs.filter((r) => r.code !== 0);
    assert.equal(good.length, 12, 'never oversubscribed, never under-used');
    assert.equal(bad.length, 1);
    expectError(bad[0] as CliResult, 'ENOSPC');
    expectError(await run('start', '-p', PARENT, '-t', 'mediated-tty-1'), 'ENOSPC');
    assert.equal((await available(run))['mediated-tty-1'], 0);
    await Promise.all(good.map((r) => ok(run('stop', '-u', r.stdout.trim()))));
    assert.deepEqual(await listed(run), {});
    assert.deepEqual(await available(run), FRESH);
  });

  it('stop of an unknown UUID: ENODEV; undefine/modify of an unknown one fail', async () => {
    const X = '99999999-9999-4999-8999-999999999999';
    const [stop, qa, start, undef, mod] = await Promise.all([
      run('stop', '-u', X),
      run('qemu-args', '-u', X),
      run('start', '-u', X),
      run('undefine', '-u', X),
      run('modify', '-u', X, '--auto'),
    ]);
    expectError(stop, 'ENODEV', new RegExp(X));
    expectError(qa, 'ENODEV');
    expectError(start, 'ENOENT', /not defined/);
    expectError(undef, 'ENOENT');
    expectError(mod, 'ENOENT');
  });

  it('usage errors exit 2 with a message', async () => {
    const cases = [
      ['stop'],
      ['frobnicate'],
      ['start', '-p', PARENT],
      ['modify', '-u', U, '--auto', '--manual'],
      ['start', '-p', PARENT, '-t', 'mediated-tty-1', '--attr', 'noequals'],
    ];
    const rs = await Promise.all(cases.map((args) => run(...args)));
    for (const [i, args] of cases.entries()) {
      const r = rs[i] as CliResult;
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^mediated: /);
    }
  });
});

describe('available_instances with definitions', () => {
  const { run } = withDaemon('avail');

  it('define takes a share, undefine returns it', async () => {
    assert.deepEqual(await available(run), FRESH);
    const u = (await ok(run('define', '-p', PARENT, '-t', 'mediated-bochs-medium'))).trim();
    assert.match(u, UUID_RE);
    const a = await available(run);
    assert.equal(a['mediated-bochs-medium'], 15);
    assert.equal(a['mediated-bochs-large'], Math.floor((256 - 16) / 64));
    assert.equal(a['mediated-bochs-small'], 15, 'one head of 16 taken');
    assert.equal(a['mediated-tty-1'], 24);
    await ok(run('undefine', '-u', u));
    assert.deepEqual(await available(run), FRESH);
  });

  it('the large count follows the VRAM definitions take', async () => {
    const us: string[] = [];
    for (let k = 1; k <= 5; k++) {
      us.push((await ok(run('define', '-p', PARENT, '-t', 'mediated-bochs-medium'))).trim());
      const a = await available(run);
      assert.equal(a['mediated-bochs-medium'], 16 - k);
      assert.equal(a['mediated-bochs-large'], Math.floor((256 - 16 * k) / 64), `after ${k} medium definitions`);
    }
    await Promise.all(us.map((u) => ok(run('undefine', '-u', u))));
    assert.deepEqual(await available(run), FRESH);
  });

  it('starting a defined instance does not charge twice; stopping keeps the reservation', async () => {
    const u = (await ok(run('define', '-p', PARENT, '-t', 'mediated-bochs-medium'))).trim();
    const reserved = await available(run);
    assert.equal(reserved['mediated-bochs-medium'], 15);

    await ok(run('start', '-u', u));
    const [running, a1, text, textDefined] = await Promise.all([listed(run), available(run), ok(run('list')), ok(run('list', '--defined'))]);
    assert.equal(running[u]?.defined, true);
    assert.deepEqual(a1, reserved, 'no second charge when the definition starts');
    assert.match(text, new RegExp(`^${u} ${PARENT} mediated-bochs-medium manual \\(defined\\)$`, 'm'));
    assert.match(textDefined, new RegExp(`^${u} ${PARENT} mediated-bochs-medium manual \\(active\\)$`, 'm'));

    await ok(run('stop', '-u', u));
    const [l2, a2] = await Promise.all([listed(run), available(run)]);
    assert.deepEqual(l2, {});
    assert.deepEqual(a2, reserved, 'the definition keeps its share after stop');

    // Start/stop again: the count never drifts.
    await ok(run('start', '-u', u));
    await ok(run('stop', '-u', u));
    assert.deepEqual(await available(run), reserved);

    // A transient start under the defined UUID with the same parent/type uses the reservation too.
    await ok(run('start', '-u', u, '-p', PARENT, '-t', 'mediated-bochs-medium'));
    assert.deepEqual(await available(run), reserved);
    expectError(await run('start', '-u', u), 'EEXIST');
    await ok(run('stop', '-u', u));
    // … and with another type it is refused.
    expectError(await run('start', '-u', u, '-p', PARENT, '-t', 'mediated-bochs-small'), 'EEXIST');
    assert.deepEqual(await available(run), reserved);

    await ok(run('undefine', '-u', u));
    assert.deepEqual(await available(run), FRESH);
  });

  it('undefine of a running instance keeps its charge until it stops', async () => {
    const u = (await ok(run('define', '-p', PARENT, '-t', 'mediated-bochs-large'))).trim();
    await ok(run('start', '-u', u));
    await ok(run('undefine', '-u', u));
    assert.deepEqual(await listed(run, true), {});
    assert.equal((await available(run))['mediated-bochs-large'], 3, 'still running, still charged');
    assert.equal((await listed(run))[u]?.defined, false);
    await ok(run('stop', '-u', u));
    assert.deepEqual(await available(run), FRESH);
  });

  it('define -u of a running transient instance takes over its charge', async () => {
    const u = (await ok(run('start', '-p', PARENT, '-t', 'mediated-bochs-large'))).trim();
    await ok(run('define', '-u', u));
    const def = await listed(run, true);
    assert.deepEqual(def[u], { mdev_type: 'mediated-bochs-large', start: 'manual', attrs: [] });
    assert.equal((await available(run))['mediated-bochs-large'], 3);
    await ok(run('stop', '-u', u));
    assert.equal((await available(run))['mediated-bochs-large'], 3, 'now held by the definition');
    await ok(run('undefine', '-u', u));
    assert.deepEqual(await available(run), FRESH);
  });

  it('modify -t of a running defined instance: accounting follows the definition', async () => {
    const u = (await ok(run('define', '-p', PARENT, '-t', 'mediated-bochs-medium'))).trim();
    await ok(run('start', '-u', u));
    await ok(run('modify', '-u', u, '-t', 'mediated-bochs-large'));
    assert.equal((await listed(run, true))[u]?.mdev_type, 'mediated-bochs-large');
    assert.equal((await listed(run))[u]?.mdev_type, 'mediated-bochs-medium', 'the running device is unchanged');
    await ok(run('stop', '-u', u));
    const a = await available(run);
    assert.equal(a['mediated-bochs-large'], 3, 'the definition now reserves a large share');
    assert.equal(a['mediated-bochs-medium'], 12);
    await ok(run('start', '-u', u));
    assert.equal((await listed(run))[u]?.mdev_type, 'mediated-bochs-large');
    assert.deepEqual(await available(run), a);
    await ok(run('stop', '-u', u));
    await ok(run('undefine', '-u', u));
    assert.deepEqual(await available(run), FRESH);
  });
});

describe('define, undefine, modify (mdevctl flags and files)', () => {
  const { dirs, run, env } = withDaemon('define');
  const U = '3e1a7c2b-5d4f-4a6e-9b8c-0d1e2f3a4b5c';
  let U2 = '';
  const defDir = () => join(dirs.state, 'definitions', PARENT);
  const fileOf = (u: string) => JSON.parse(readFileSync(join(defDir(), u), 'utf8')) as unknown;
  const visibleFiles = () =>
    readdirSync(defDir())
      .filter((n) => !n.startsWith('.'))
      .sort();

  it('define -u U -p P -t T --auto and define --jsonfile F -p P', async () => {
    assert.equal(await ok(run('define', '-u', U, '-p', PARENT, '-t', 'mediated-bochs-small', '--auto')), '');
    const f = join(dirs.root, 'def.json');
    writeFileSync(f, '{"mdev_type":"mediated-bochs-medium","start":"manual","attrs":[{"resolution":"1024x768"}]}');
    U2 = (await ok(env('define', '--jsonfile', f, '-p', PARENT))).trim();
    assert.match(U2, UUID_RE);
    expectError(await run('define', '-u', U, '-p', PARENT, '-t', 'mediated-bochs-small'), 'EEXIST');
  });

  it('list --defined --dumpjson shows exactly the mdevctl config objects', async () => {
    const doc = await okJson<unknown>(run('list', '--defined', '--dumpjson'));
    assert.deepEqual(doc, [
      {
        [PARENT]: [
          { [U]: { mdev_type: 'mediated-bochs-small', start: 'auto', attrs: [] } },
          { [U2]: { mdev_type: 'mediated-bochs-medium', start: 'manual', attrs: [{ resolution: '1024x768' }] } },
        ],
      },
    ]);
    const text = await ok(run('list', '--defined'));
    assert.match(text, new RegExp(`^${U} ${PARENT} mediated-bochs-small auto$`, 'm'));
    assert.match(text, new RegExp(`^${U2} ${PARENT} mediated-bochs-medium manual$`, 'm'));
    // Defining starts nothing.
    assert.deepEqual(await listed(run), {});
  });

  it('the files hold exactly the mdevctl JSON', async () => {
    assert.deepEqual(visibleFiles(), [U, U2].sort());
    assert.deepEqual(fileOf(U), { mdev_type: 'mediated-bochs-small', start: 'auto', attrs: [] });
    assert.deepEqual(fileOf(U2), { mdev_type: 'mediated-bochs-medium', start: 'manual', attrs: [{ resolution: '1024x768' }] });
    assert.deepEqual(Object.keys(fileOf(U) as object), ['mdev_type', 'start', 'attrs'], 'mdevctl key order');
    assert.equal(readdirSync(defDir()).length, 2, 'no temporaries left behind');
  });

  it('modify --manual, --addattr/--value, --delattr -i', async () => {
    await ok(run('modify', '-u', U, '--manual'));
    assert.deepEqual(fileOf(U), { mdev_type: 'mediated-bochs-small', start: 'manual', attrs: [] });
    await ok(run('modify', '-u', U, '--addattr', 'resolution', '--value', '800x600'));
    assert.deepEqual(fileOf(U), { mdev_type: 'mediated-bochs-small', start: 'manual', attrs: [{ resolution: '800x600' }] });
    await ok(run('modify', '-u', U, '--addattr', 'resolution', '--value', '640x480', '-i', '0'));
    assert.deepEqual(fileOf(U), { mdev_type: 'mediated-bochs-small', start: 'manual', attrs: [{ resolution: '640x480' }, { resolution: '800x600' }] });
    await ok(run('modify', '-u', U, '--delattr', '-i', '0'));
    assert.deepEqual(fileOf(U), { mdev_type: 'mediated-bochs-small', start: 'manual', attrs: [{ resolution: '800x600' }] });
    await ok(env('modify', '-u', U, '--auto'));
    assert.deepEqual(fileOf(U), { mdev_type: 'mediated-bochs-small', start: 'auto', attrs: [{ resolution: '800x600' }] });
    assert.deepEqual((await listed(run, true))[U], fileOf(U), 'the daemon and the file agree');
  });

  it('bad attribute values are refused with EINVAL and change nothing', async () => {
    const before = { u: fileOf(U), u2: fileOf(U2), list: await listed(run, true), avail: await available(run) };
    const stat0 = statSync(join(defDir(), U));
    const bad: string[][] = [
      ['modify', '-u', U, '--addattr', 'resolution', '--value', '99999x1'],
      ['modify', '-u', U, '--addattr', 'resolution', '--value', 'big'],
      ['modify', '-u', U, '--addattr', 'resolution', '--value', '1920x1080'], // over the small type's 1024x768
      ['modify', '-u', U, '--addattr', 'colour', '--value', 'blue'],
      ['modify', '-u', U, '--addattr', 'resolution', '--value', '800x600', '-i', '7'],
      ['modify', '-u', U, '--delattr', '-i', '5'],
      ['modify', '-u', U, '-t', 'mediated-tty-1'], // the resolution attribute does not fit a serial card
      ['modify', '-u', U, '-t', 'mediated-bochs-huge'],
      ['modify', '-u', U2, '--addattr', 'irq', '--value', 'msi'],
    ];
    const f1 = join(dirs.root, 'bad1.json');
    writeFileSync(f1, '{"mdev_type":"mediated-bochs-medium","start":"sometimes","attrs":[]}');
    const f2 = join(dirs.root, 'bad2.json');
    writeFileSync(f2, '{"mdev_type":"mediated-bochs-medium","attrs":[{"resolution":"1024x768","extra":"x"}]}');
    bad.push(
      ['modify', '-u', U2, '--jsonfile', f1],
      ['define', '-p', PARENT, '--jsonfile', f2],
      ['define', '-p', PARENT, '-t', 'mediated-bochs-small', '--attr', 'resolution=4000x4000'],
    );
    const [parentless, ...rs] = await Promise.all([run('modify', '-u', U, '-p', 'mediated9'), ...bad.map((args) => run(...args))]);
    for (const [i, r] of rs.entries()) expectError(r, 'EINVAL', undefined, (bad[i] as string[]).join(' '));
    expectError(parentless as CliResult, 'ENODEV');

    assert.deepEqual(fileOf(U), before.u);
    assert.deepEqual(fileOf(U2), before.u2);
    assert.equal(statSync(join(defDir(), U)).mtimeMs, stat0.mtimeMs, 'the file was not rewritten');
    const [l, a] = await Promise.all([listed(run, true), available(run)]);
    assert.deepEqual(l, before.list);
    assert.deepEqual(a, before.avail);
    assert.deepEqual(visibleFiles(), [U, U2].sort(), 'no new definitions');
    assert.equal(readdirSync(defDir()).length, 2);
  });

  it('modify --jsonfile replaces the config', async () => {
    const f = join(dirs.root, 'mod.json');
    writeFileSync(f, '{"mdev_type":"mediated-bochs-large","start":"auto","attrs":[{"resolution":"1920x1080"}]}');
    await ok(run('modify', '-u', U2, '--jsonfile', f));
    assert.deepEqual(fileOf(U2), { mdev_type: 'mediated-bochs-large', start: 'auto', attrs: [{ resolution: '1920x1080' }] });
    const a = await available(run);
    assert.equal(a['mediated-bochs-large'], Math.floor((256 - 4 - 64) / 64));
  });

  it('undefine removes the file and the definition', async () => {
    await ok(run('undefine', '-u', U2));
    assert.deepEqual(visibleFiles(), [U]);
    assert.deepEqual(Object.keys(await listed(run, true)), [U]);
    await ok(env('undefine', '-u', U));
    assert.deepEqual(visibleFiles(), []);
    assert.deepEqual(await okJson(run('list', '--defined', '--dumpjson')), []);
    assert.deepEqual(await available(run), FRESH);
  });
});

describe('control socket security and robustness', () => {
  const { dirs, run, daemon } = withDaemon('sec');

  /** Opens a raw connection, lets `fn` write to it, collects what comes back until close or timeout. */
  function raw(fn: (s: import('node:net').Socket) => void, waitMs = 300): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const s = connect(join(dirs.run, 'control.sock'));
      const chunks: Buffer[] = [];
      const done = () => {
        clearTimeout(t);
        s.destroy();
        resolve(Buffer.concat(chunks));
      };
      const t = setTimeout(done, waitMs);
      s.on('data', (b) => chunks.push(b));
      s.on('close', done);
      s.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'EPIPE' || (e as NodeJS.ErrnoException).code === 'ECONNRESET' ? done() : reject(e)));
      s.on('connect', () => fn(s));
    });
  }

  function header(id: number, cmd: number, size: number, flags: number): Buffer {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(id, 0);
    b.writeUInt16LE(cmd, 2);
    b.writeUInt32LE(size, 4);
    b.writeUInt32LE(flags, 8);
    return b;
  }

  /** Replies in a byte stream: [id, flags, body]. */
  function replies(buf: Buffer): { id: number; flags: number; body: Record<string, unknown> }[] {
    const out = [];
    let at = 0;
    while (buf.length - at >= 16) {
      const size = buf.readUInt32LE(at + 4);
      out.push({ id: buf.readUInt16LE(at), flags: buf.readUInt32LE(at + 8), body: JSON.parse(buf.subarray(at + 16, at + size).toString('utf8')) });
      at += size;
    }
    return out;
  }

  async function stillWorks(): Promise<void> {
    assert.ok(daemon().alive, `the daemon is alive\n${daemon().stderr}`);
    assert.deepEqual(await available(run), FRESH);
  }

  it('run dir is 0700 and the control socket 0600', async () => {
    await stillWorks(); // answered only once the daemon is fully up
    assert.equal(statSync(dirs.run).mode & 0o777, 0o700);
    const s = statSync(join(dirs.run, 'control.sock'));
    assert.ok(s.isSocket());
    assert.equal(s.mode & 0o777, 0o600);
    assert.equal(statSync(join(dirs.state, 'definitions')).mode & 0o777, 0o700);
  });

  it('garbage bytes do not crash the daemon', async () => {
    await raw((s) => s.end(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')));
    await raw((s) => s.end(Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131 + 7) & 0xff))));
    await raw((s) => s.end(Buffer.alloc(64, 0xff)));
    await raw((s) => s.end(Buffer.alloc(3, 1))); // less than a header
    await raw((s) => s.end(header(1, CONTROL_CMD, 4, KIND_REQUEST))); // size smaller than a header
    await raw((s) => s.end(header(1, 0x1234, 20, KIND_REQUEST))); // not a control command
    await raw((s) => s.end(header(1, CONTROL_CMD, 0xffffffff, KIND_REQUEST))); // absurd size
    await stillWorks();
  });

  it('half a message, then the client vanishes', async () => {
    const msg = encodeControl(7, KIND_REQUEST, { op: 'types', args: {} });
    await raw((s) => {
      s.write(msg.subarray(0, 10)); // half a header
      setTimeout(() => s.destroy(), 20);
    });
    await raw((s) => {
      s.write(msg.subarray(0, msg.length - 5)); // header and part of the body
      setTimeout(() => s.destroy(), 20);
    });
    await raw((s) => {
      s.end(msg.subarray(0, msg.length - 5)); // orderly half-close mid-message
    });
    await raw((s) => {
      // A header announcing 1 MiB, then only a few bytes.
      s.write(header(3, CONTROL_CMD, 1024 * 1024, KIND_REQUEST));
      s.write(Buffer.from('{"op":'));
      setTimeout(() => s.destroy(), 20);
    });
    await stillWorks();
  });

  it('malformed requests get error replies, not a crash', async () => {
    const bodies = [
      Buffer.from('{not json'),
      Buffer.from('null'),
      Buffer.from('42'),
      Buffer.from('"types"'),
      Buffer.from('{"op":5}'),
      Buffer.from('{"op":"nosuchop"}'),
      Buffer.from('{"op":"list","args":{"uuid":5}}'),
      Buffer.from('{"op":"start","args":{"parent":"mediated0","type":"mediated-tty-1","attrs":"x"}}'),
      Buffer.from('{"op":"start","args":{"parent":"mediated0","type":"mediated-tty-1","attrs":[null]}}'),
      Buffer.from('{"op":"define","args":{"parent":"mediated0","config":[1,2]}}'),
      Buffer.from('{"op":"modify","args":{"uuid":{}}}'),
      Buffer.from('{"op":"stop","args":null}'),
      Buffer.from('{"op":"qemu-args","args":[]}'),
      Buffer.from('{"op":"plane-query","args":{"uuid":"00000000-0000-4000-8000-000000000000"}}'),
      Buffer.from('{"op":"buffer-release","args":{"buffer":7}}'),
      Buffer.from('{"op":"__proto__"}'),
      Buffer.from('{"op":"constructor"}'),
    ];
    const stream = Buffer.concat(bodies.map((b, i) => Buffer.concat([header(i + 1, CONTROL_CMD, 16 + b.length, KIND_REQUEST), b])));
    const got = replies(await raw((s) => s.write(stream), 1000));
    assert.equal(got.length, bodies.length, 'one reply per request');
    for (const [i, r] of got.entries()) {
      assert.equal(r.id, i + 1, 'in order');
      assert.equal(r.flags & 0xff, 0x21, `request ${bodies[i]} is answered with an error: ${JSON.stringify(r.body)}`);
      assert.equal(typeof r.body.code, 'string');
      assert.equal(typeof r.body.message, 'string');
    }
    await stillWorks();
  });

  it('a client vanishing mid-request does not hurt', async () => {
    // Requests whose replies have nowhere to go: the client is gone before the daemon answers.
    for (let i = 0; i < 5; i++) {
      const start = encodeControl(1, KIND_REQUEST, { op: 'start', args: { parent: PARENT, type: 'mediated-tty-2' } });
      const types = encodeControl(2, KIND_REQUEST, { op: 'types', args: {} });
      await raw((s) => {
        s.write(Buffer.concat([start, types]));
        s.destroy();
      }, 50);
    }
    await sleep(200);
    assert.ok(daemon().alive);
    // Whatever got started is a normal instance: list and stop them all.
    const running = await listed(run);
    for (const [u, inst] of Object.entries(running)) {
      assert.equal(inst.mdev_type, 'mediated-tty-2');
      assert.equal(inst.state, 'running');
      await ok(run('stop', '-u', u));
    }
    await stillWorks();
  });

  it('many concurrent CLI calls are all answered', async () => {
    const rs = await Promise.all(Array.from({ length: 12 }, () => run('types', '--dumpjson')));
    for (const r of rs) assert.equal(r.code, 0, r.stderr);
    await stillWorks();
    assert.doesNotMatch(daemon().stderr, /\n\s+at /, 'no internal error was logged');
  });
});
