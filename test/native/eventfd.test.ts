// eventfd counters and uv_poll readiness on the event loop.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { close, EAGAIN, eventfd, eventfdRead, eventfdWrite, poll, pollClose, pollUpdate, READABLE, WRITABLE } from '../../src/native/index.js';

const tick = () => new Promise((r) => setTimeout(r, 20));

describe('eventfd', () => {
  it('accumulates writes; a read resets; an empty read is -EAGAIN', () => {
    const fd = eventfd();
    try {
      assert.equal(eventfdRead(fd), -EAGAIN);
      assert.equal(eventfdWrite(fd), 0);
      assert.equal(eventfdWrite(fd, 1), 0);
      assert.equal(eventfdRead(fd), 2);
      assert.equal(eventfdRead(fd), -EAGAIN);
      assert.equal(eventfdWrite(fd, 2 ** 40), 0); // 64-bit counter
      assert.equal(eventfdRead(fd), 2 ** 40);
    } finally {
      close(fd);
    }
  });

  it('initval and semaphore mode', () => {
    const fd = eventfd(3, true);
    assert.equal(eventfdRead(fd), 1);
    assert.equal(eventfdRead(fd), 1);
    assert.equal(eventfdRead(fd), 1);
    assert.equal(eventfdRead(fd), -EAGAIN);
    close(fd);
  });

  it('I/O errors are returned as -errno, not thrown', () => {
    const fd = eventfd();
    close(fd);
    assert.ok(eventfdWrite(fd) < 0);
    assert.ok(eventfdRead(fd) < 0);
    assert.ok(close(fd) < 0);
  });
});

describe('poll', () => {
  it('fires READABLE when the eventfd is written, and not before', async () => {
    const fd = eventfd();
    const seen: Array<[number, number, number]> = [];
    let done!: () => void;
    const fired = new Promise<void>((r) => {
      done = r;
    });
    const h = poll(fd, READABLE, (status, events) => {
      seen.push([status, events, eventfdRead(fd)]);
      pollClose(h); // closing from inside the callback is allowed
      pollClose(h); // and idempotent
      done();
    });
    await tick();
    assert.equal(seen.length, 0);
    eventfdWrite(fd, 5);
    await fired;
    await tick();
    assert.deepEqual(seen, [[0, READABLE, 5]]);
    close(fd);
  });

  it('pollUpdate switches interest; level-triggered WRITABLE repeats until changed', async () => {
    const fd = eventfd();
    let writable = 0;
    let readable = 0;
    const h = poll(fd, 0, (status, events) => {
      assert.equal(status, 0);
      if (events & WRITABLE) writable++;
      if (events & READABLE) {
        readable++;
        eventfdRead(fd);
      }
      if (writable >= 3) pollUpdate(h, READABLE); // stop asking for WRITABLE
    });
    await tick();
    assert.equal(writable + readable, 0); // events = 0: nothing
    pollUpdate(h, WRITABLE);
    await tick();
    assert.equal(writable, 3);
    eventfdWrite(fd);
    await tick();
    assert.equal(readable, 1);
    pollClose(h);
    eventfdWrite(fd);
    await tick();
    assert.equal(readable, 1); // closed: no more callbacks
    pollUpdate(h, READABLE); // no-op on a closed handle
    await tick();
    assert.equal(readable, 1);
    close(fd);
  });

  it('rejects a second poller on the same fd and bad handles', () => {
    const fd = eventfd();
    const h = poll(fd, READABLE, () => {});
    assert.throws(
      () => poll(fd, READABLE, () => {}),
      (e: NodeJS.ErrnoException) => e.code === 'EEXIST',
    );
    assert.throws(() => pollClose({} as never), TypeError);
    assert.throws(() => pollUpdate(null as never, READABLE), TypeError);
    pollClose(h);
    close(fd);
  });
});
