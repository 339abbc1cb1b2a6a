// Checks the real-QEMU test environment (scripts/test-env.sh): boots each guest generation under
// TCG without devices, runs a /test.sh plus an extra file appended as a cpio archive, and reports
// boot times.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { makeCpio } from './cpio.js';
import { bootGuest, type Guest, loadTestEnv } from './qemu.js';

describe('cpio writer', () => {
  test('newc entries, parent dirs, padding and trailer', () => {
    const a = makeCpio([
      { path: '/etc/x/hello.txt', data: 'hello' },
      { path: 'run.sh', data: 'ls\n', mode: 0o755 },
    ]);
    assert.equal(a.length % 4, 0);
    const names: string[] = [];
    const modes: number[] = [];
    let off = 0;
    for (;;) {
      assert.equal(off % 4, 0);
      assert.equal(a.toString('ascii', off, off + 6), '070701');
      const field = (i: number) => Number.parseInt(a.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
      const nameSize = field(11);
      const size = field(6);
      const name = a.toString('utf8', off + 110, off + 110 + nameSize - 1);
      names.push(name);
      modes.push(field(1));
      off += 110 + nameSize;
      off += (4 - (off % 4)) % 4;
      if (name === 'hello.txt' || name === 'etc/x/hello.txt') assert.equal(a.toString('utf8', off, off + size), 'hello');
      off += size + ((4 - (size % 4)) % 4);
      if (name === 'TRAILER!!!') break;
    }
    assert.equal(off, a.length);
    assert.deepEqual(names, ['etc', 'etc/x', 'etc/x/hello.txt', 'run.sh', 'TRAILER!!!']);
    assert.deepEqual(modes.slice(0, 4), [0o40755, 0o40755, 0o100644, 0o100755]);
  });
});

describe('real QEMU test environment', () => {
  const env = loadTestEnv();
  const work = mkdtempSync(join(tmpdir(), 'mediated-env-test-'));
  const guests: Guest[] = [];
  after(() => {
    for (const g of guests) g.kill();
    rmSync(work, { recursive: true, force: true });
  });

  test('QEMU is >= 10.1', () => {
    const [maj = 0, min = 0] = env.qemuVersion.split('.').map(Number);
    assert.ok(maj * 1000 + min >= 10001, `QEMU ${env.qemuVersion}`);
  });

  for (const gen of ['6.12', 'new']) {
    test(`boots the ${gen} guest and runs /test.sh`, { timeout: 180_000 }, async (t) => {
      const info = env.guests[gen];
      assert.ok(info, `guest ${gen} missing from the manifest`);
      const t0 = performance.now();
      const g = await bootGuest({
        guest: gen,
        workDir: work,
        append: 'mediated.test=env',
        script: [
          'echo "U: $(uname -r)"',
          'echo "C: $(cat /proc/cmdline)"',
          'echo "F: $(cat /etc/mediated/hello.txt)"',
          'for m in $(cat /lib/modules/order); do grep -q "^$m " /proc/modules || echo "M: $m not loaded"; done',
          'exit 0',
        ].join('\n'),
        files: [{ path: '/etc/mediated/hello.txt', data: 'hello from the host' }],
        timeoutMs: 150_000,
      });
      guests.push(g);
      const init = await g.waitFor(/T: init ([\d.]+)/, 120_000);
      const tInit = (performance.now() - t0) / 1000;
      const rc = await g.waitFor(/T: test-exit (\d+)/, 60_000);
      const tTest = (performance.now() - t0) / 1000;
      const ex = await g.exited;
      const tExit = (performance.now() - t0) / 1000;
      const out = g.output();
      assert.equal(rc[1], '0', out);
      assert.match(out, new RegExp(`^U: ${info.kernelVersion.replace(/[.+]/g, '\\$&')}$`, 'm'));
      assert.match(out, /^C: .*console=ttyS0 .*mediated\.test=env/m);
      assert.match(out, /^F: hello from the host$/m);
      assert.doesNotMatch(out, /^T: insmod .* failed|^M: /m);
      assert.deepEqual(ex, { code: 0, signal: null }, g.stderr());
      t.diagnostic(
        `${gen} (${info.kernelVersion}): T: init at ${tInit.toFixed(2)} s wall (guest uptime ${init[1]} s), ` +
          `test-exit at ${tTest.toFixed(2)} s, QEMU exited at ${tExit.toFixed(2)} s`,
      );
    });
  }
});
