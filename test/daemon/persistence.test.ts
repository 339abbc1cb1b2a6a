// End to end: definitions on disk across daemon restarts (SIGTERM and kill -9),
// auto-start, and crash safety of `modify` under SIGKILL at random moments.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import { ControlClient } from '../../src/daemon/control-client.js';
import { available, cliEnvFor, cliFor, DaemonProcess, isSocket, listed, ok, PARENT, removeDirs, sleep, tempDirs, UUID_RE } from './helpers.js';

interface Config {
  mdev_type: string;
  start: 'auto' | 'manual';
  attrs: Record<string, string>[];
}

/** Parses a definition file and checks it is exactly mdevctl's config object. */
function readConfig(path: string): Config {
  const doc = JSON.parse(readFileSync(path, 'utf8')) as Config;
  assert.deepEqual(Object.keys(doc), ['mdev_type', 'start', 'attrs'], `${path}: mdevctl keys in order`);
  assert.equal(typeof doc.mdev_type, 'string');
  assert.ok(doc.start === 'auto' || doc.start === 'manual', `${path}: start is auto|manual`);
  assert.ok(Array.isArray(doc.attrs));
  for (const a of doc.attrs) {
    assert.equal(Object.keys(a).length, 1, `${path}: single-key attribute objects`);
    assert.equal(typeof Object.values(a)[0], 'string');
  }
  return doc;
}

describe('persistence across restarts', () => {
  const dirs = tempDirs('persist');
  const run = cliFor(dirs);
  const env = cliEnvFor(dirs);
  let d: DaemonProcess | null = null;
  after(async () => {
    await d?.dispose();
    removeDirs(dirs);
  });

  const A = 'aaaaaaaa-0000-4000-8000-000000000001'; // medium, auto
  const M = 'bbbbbbbb-0000-4000-8000-000000000002'; // small, manual, resolution 800x600
  const T = 'cccccccc-0000-4000-8000-000000000003'; // tty-1, auto, irq=msi
  let defs: Record<string, Record<string, unknown>> = {};
  let avail: Record<string, number> = {};

  /** After a restart: the definitions are back, exactly the auto ones run, the books add up. */
  async function checkRestarted(): Promise<void> {
    const [defined, running, a] = await Promise.all([listed(run, true), listed(env), available(run)]);
    assert.deepEqual(defined, defs, 'definitions survived');
    assert.deepEqual(Object.keys(running).sort(), [A, T].sort(), 'auto definitions run, manual and transient ones do not');
    assert.ok(isSocket(running[A]?.vfio_user_socket as string));
    assert.equal(running[A]?.start, 'auto');
    assert.equal(running[A]?.defined, true);
    assert.deepEqual(running[T]?.attrs, [{ irq: 'msi' }]);
    assert.equal(running[T]?.irq, 'msi');
    for (const s of (running[T]?.serial ?? []) as { socket: string }[]) assert.ok(isSocket(s.socket));
    assert.equal((running[T]?.serial as unknown[] | undefined)?.length, 1);
    assert.deepEqual(a, avail, 'reservations are restored, not doubled by auto-start');
  }

  it('define, start some, stop the daemon with SIGTERM, restart', async () => {
    d = await DaemonProcess.start(dirs);
    await ok(run('define', '-u', A, '-p', PARENT, '-t', 'mediated-bochs-medium', '--auto'));
    await ok(run('define', '-u', M, '-p', PARENT, '-t', 'mediated-bochs-small', '--attr', 'resolution=800x600'));
    await ok(env('define', '-u', T, '-p', PARENT, '-t', 'mediated-tty-1', '--auto', '--attr', 'irq=msi'));
    defs = await listed(run, true);
    assert.deepEqual(Object.keys(defs).sort(), [A, M, T]);
    avail = await available(run);
    assert.deepEqual(avail, {
      'mediated-bochs-small': 14,
      'mediated-bochs-medium': 14,
      'mediated-bochs-large': Math.floor((256 - 16 - 4) / 64),
      'mediated-tty-1': 23,
      'mediated-tty-2': 11,
    });
    // Defined ones running, plus a transient one: only the auto definitions come back.
    await ok(run('start', '-u', M));
    await ok(run('start', '-u', A));
    const X = (await ok(run('start', '-p', PARENT, '-t', 'mediated-tty-2'))).trim();
    assert.match(X, UUID_RE);

    const exit = await d.kill('SIGTERM');
    assert.equal(exit.code, 0, `orderly exit on SIGTERM\n${d.stderr}`);
    for (const u of [A, M, X]) assert.equal(existsSync(join(dirs.run, u)), false, `instance ${u} cleaned up on SIGTERM`);

    d = await DaemonProcess.start(dirs);
    await checkRestarted();
  });

  it('survives kill -9 (stale sockets and instance directories left behind)', async () => {
    assert.ok(d);
    await d.kill('SIGKILL');
    assert.ok(existsSync(join(dirs.run, 'control.sock')), 'kill -9 leaves the control socket file');
    assert.ok(existsSync(join(dirs.run, A)), 'and the instance directory');
    d = await DaemonProcess.start(dirs);
    await checkRestarted();
  });

  it('start -u of a defined manual instance works after a restart', async () => {
    assert.ok(d);
    assert.equal(await ok(run('start', '-u', M)), '');
    const running = await listed(run);
    assert.equal(running[M]?.mdev_type, 'mediated-bochs-small');
    assert.deepEqual(running[M]?.attrs, [{ resolution: '800x600' }]);
    assert.equal(running[M]?.resolution, '800x600');
    assert.ok(isSocket(running[M]?.vfio_user_socket as string));
    assert.match(await ok(run('list')), new RegExp(`^${M} ${PARENT} mediated-bochs-small manual \\(defined\\)$`, 'm'));
    assert.deepEqual(await available(run), avail, 'starting a definition charges nothing more');

    // kill -9 with the manual one running: it stays defined, but does not come back by itself.
    await d.kill('SIGKILL');
    d = await DaemonProcess.start(dirs);
    await checkRestarted();
    await ok(run('start', '-u', M));
    await ok(run('stop', '-u', M));
    await ok(run('undefine', '-u', M));
    delete defs[M];
    await d.kill('SIGTERM');
    d = await DaemonProcess.start(dirs);
    assert.deepEqual(await listed(run, true), defs, 'undefine is durable');
  });
});

describe('crash safety of modify under kill -9', () => {
  const dirs = tempDirs('crash');
  const run = cliFor(dirs);
  let d: DaemonProcess | null = null;
  after(async () => {
    await d?.dispose();
    removeDirs(dirs);
  });

  const U = 'dddddddd-0000-4000-8000-000000000004'; // modified over and over
  const K = 'eeeeeeee-0000-4000-8000-000000000005'; // never touched
  const ITERATIONS = 30;
  const BURST = 6;

  it(`${ITERATIONS} rounds of modify + SIGKILL at a random moment + restart`, async (t) => {
    const defDir = join(dirs.state, 'definitions', PARENT);
    d = await DaemonProcess.start(dirs);
    await ok(run('define', '-u', U, '-p', PARENT, '-t', 'mediated-bochs-medium'));
    await ok(run('define', '-u', K, '-p', PARENT, '-t', 'mediated-tty-1', '--attr', 'irq=msi'));
    const kConfig = readConfig(join(defDir, K));
    // A torn temporary as an interrupted write would leave it: the loader must not read it.
    writeFileSync(join(defDir, `.${U}.99999.tmp`), '{"mdev_type": "mediated-bo');

    let state = readConfig(join(defDir, U));
    let g = 0;
    let midBurst = 0;
    let maxTemps = 0;
    for (let round = 0; round < ITERATIONS; round++) {
      // Issue a burst of modifies (alternating --auto + --addattr and --manual + --delattr -i 0, as the CLI sends them).
      const client = new ControlClient(join(dirs.run, 'control.sock'));
      const states: Config[] = [state];
      let answered = 0;
      for (let j = 0; j < BURST; j++, g++) {
        const prev = states[states.length - 1] as Config;
        const add = g % 2 === 0;
        const value = `${640 + (g % 1000)}x480`;
        const args = add
          ? { uuid: U, auto: true, manual: false, addattr: 'resolution', value, delattr: false }
          : { uuid: U, auto: false, manual: true, delattr: true, index: 0 };
        // What the definition becomes if this modify is applied (a refused one changes nothing).
        states.push(
          add
            ? { ...prev, start: 'auto', attrs: [...prev.attrs, { resolution: value }] }
            : prev.attrs.length > 0
              ? { ...prev, start: 'manual', attrs: prev.attrs.slice(1) }
              : prev,
        );
        client.call('modify', args).then(
          () => answered++,
          (e: { code?: string }) => {
            if (e.code !== 'ECONNRESET') answered++; // answered with an error: processed, nothing changed
          },
        );
      }
      await sleep(Math.random() * 30);
      await d.kill('SIGKILL');
      client.close();
      if (answered > 0 && answered < BURST) midBurst++;

      // Every file parses as mdevctl JSON; U holds one of the states the burst went through,
      // at least as far as the daemon had acknowledged (a reply means it is on disk).
      const names = readdirSync(defDir);
      const visible = names.filter((n) => !n.startsWith('.')).sort();
      maxTemps = Math.max(maxTemps, names.length - visible.length);
      assert.deepEqual(visible, [U, K].sort(), `round ${round}: only the two definitions are visible`);
      assert.deepEqual(readConfig(join(defDir, K)), kConfig, `round ${round}: the untouched definition is intact`);
      const disk = readConfig(join(defDir, U));
      const at = states.findIndex((s, k) => k >= answered && isDeepStrictEqual(s, disk));
      assert.ok(
        at >= 0,
        `round ${round}: ${JSON.stringify(disk)} is not a state at or after the ${answered} acknowledged modifies of ${JSON.stringify(states)}`,
      );
      state = disk;

      // The daemon starts fine, loads exactly the two definitions and ignores the temporaries.
      d = await DaemonProcess.start(dirs);
      const defs = await listed(run, true);
      assert.deepEqual(defs, { [U]: disk, [K]: kConfig }, `round ${round}: the loader reads what is on disk`);
      assert.doesNotMatch(d.stderr, /ignoring definition/, `round ${round}: nothing unreadable`);
    }
    // An auto definition is running after the last restart; a manual one is not.
    const running = await listed(run);
    assert.equal(U in running, state.start === 'auto');
    assert.equal(K in running, false);
    t.diagnostic(`${midBurst}/${ITERATIONS} kills landed mid-burst; up to ${maxTemps} dot-temporaries seen (ignored by the loader)`);
  });
});
