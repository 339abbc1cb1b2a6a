// Behaviour that needs a separate process: uncaught exceptions from native callbacks,
// worker_threads (per-instance state, teardown with open handles), GC finalizers.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';

const lib = new URL('../../src/native/index.js', import.meta.url).href;

/** Runs an ES module snippet in a fresh node, with `n` = the native module unless bare. */
function run(src: string, flags: string[] = [], bare = false) {
  const code = bare ? src : `import * as n from ${JSON.stringify(lib)};\n${src}`;
  return spawnSync(process.execPath, [...flags, '--input-type=module', '-e', code], {
    encoding: 'utf8',
    timeout: 20000,
  });
}

describe('exceptions thrown in native callbacks', () => {
  it('reach process "uncaughtException" (poll and watch), and the loop keeps going', () => {
    const r = run(`
      const caught = [];
      process.on('uncaughtException', (e) => caught.push(e.message));
      const efd = n.eventfd();
      const ph = n.poll(efd, n.READABLE, () => { n.eventfdRead(efd); n.pollClose(ph); throw new Error('from poll'); });
      n.eventfdWrite(efd);
      const [a, b] = n.socketpair();
      const st = n.newStatus();
      const wh = n.watch(b, new Uint8Array(64), st, (len) => {
        if (len <= 0) { n.watchClose(wh); return; }
        throw new Error('from onData ' + len);
      }, () => {});
      n.send(a, new Uint8Array(3), 0, 3);
      setTimeout(() => {
        n.send(a, new Uint8Array(2), 0, 2); // still delivered after the throw
        setTimeout(() => {
          n.close(a);
          setTimeout(() => { n.close(b); n.close(efd); console.log(JSON.stringify(caught)); }, 50);
        }, 50);
      }, 50);
    `);
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), ['from poll', 'from onData 3', 'from onData 2']);
  });

  it('without a handler the process exits with code 1 and the stack, not an abort', () => {
    const r = run(`
      const efd = n.eventfd();
      n.poll(efd, n.READABLE, () => { throw new Error('boom-in-callback'); });
      n.eventfdWrite(efd);
    `);
    assert.equal(r.signal, null);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /boom-in-callback/);
  });
});

describe('worker_threads', () => {
  // The main thread never loads the addon here: a worker's teardown is then also the last
  // user of the shared library, which Node unloads right after (pending uv close callbacks
  // would jump into unmapped code; open handles abort uv_loop_close).
  it('runs in several workers at once; every way of exiting is clean', () => {
    const body = `
      import * as n from ${JSON.stringify(lib)};
      import { parentPort, workerData } from 'node:worker_threads';
      const [a, b] = n.socketpair();
      const st = n.newStatus();
      const fd = n.memfd('w', 4096);
      const keep = n.mmap(fd, 4096); // never unmapped: teardown must cope
      new Uint8Array(keep)[0] = workerData.id;
      const efd = n.eventfd();
      const ph = n.poll(efd, n.READABLE, () => {}); // open, never fires
      const h = n.watch(b, new Uint8Array(64), st, (len) => {
        const rfd = st[n.ST_FDS + 1];
        const v = new Uint8Array(n.mmap(rfd, 4096))[0];
        n.close(st[n.ST_FDS]);
        parentPort.postMessage({ len, nfds: st[n.ST_NFDS], v });
        if (workerData.how === 'exit') {
          n.watchClose(h); // close callback still pending when the worker exits
          process.exit(0);
        } else if (workerData.how === 'natural') {
          n.watchClose(h);
          n.pollClose(ph);
          for (const f of [a, b, fd, efd, rfd]) n.close(f);
        } // 'terminate': everything left open
      }, () => {});
      n.send(a, new Uint8Array(5), 0, 5, [n.eventfd(), fd]);
    `;
    const r = run(
      `
      import { Worker } from 'node:worker_threads';
      const body = ${JSON.stringify(body)};
      const results = await Promise.all(['terminate', 'exit', 'natural'].map((how, i) =>
        new Promise((resolve, reject) => {
          const w = new Worker(new URL('data:text/javascript,' + encodeURIComponent(body)), { workerData: { id: i + 1, how } });
          let msg;
          w.on('message', (m) => { msg = m; if (how === 'terminate') w.terminate(); });
          w.once('error', reject);
          w.once('exit', (code) => resolve({ how, code, ...msg }));
        })));
      const n = await import(${JSON.stringify(lib)}); // and the main thread can still load it
      const efd = n.eventfd(); n.eventfdWrite(efd, 4);
      console.log(JSON.stringify({ results, main: n.eventfdRead(efd) }));
    `,
      [],
      true,
    );
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.results, [
      { how: 'terminate', code: 1, len: 5, nfds: 2, v: 1 },
      { how: 'exit', code: 0, len: 5, nfds: 2, v: 2 },
      { how: 'natural', code: 0, len: 5, nfds: 2, v: 3 },
    ]);
    assert.equal(out.main, 4);
  });

  it('process.exit() with open handles and mappings is clean', () => {
    const r = run(`
      const [a, b] = n.socketpair();
      n.watch(b, new Uint8Array(64), n.newStatus(), () => {}, () => {});
      const fd = n.memfd('x', 4096);
      const ab = n.mmap(fd, 4096);
      new Uint8Array(ab)[0] = 1;
      setTimeout(() => process.exit(3), 20);
    `);
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 3, r.stderr);
  });
});

describe('GC', () => {
  it('unmaps mappings that were dropped without munmap', () => {
    const r = run(
      `
      import { readFileSync } from 'node:fs';
      const maps = () => readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('memfd:gc-test')).length;
      const fd = n.memfd('gc-test', 1 << 20);
      let keep = [];
      for (let i = 0; i < 100; i++) keep.push(n.mmap(fd, 1 << 20));
      const before = maps();
      keep = null;
      for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
      console.log(JSON.stringify({ before, after: maps() }));
    `,
      ['--expose-gc'],
    );
    assert.equal(r.status, 0, r.stderr);
    const { before, after } = JSON.parse(r.stdout);
    assert.ok(before >= 100, `before ${before}`);
    assert.ok(after < 10, `after ${after}`);
  });
});
