// Reader mode: watch(), watchBuffer(), watchWritable(), watchClose().
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  close,
  EAGAIN,
  ECONNRESET,
  ENOBUFS,
  eventfd,
  eventfdRead,
  eventfdWrite,
  newStatus,
  recv,
  ST_FDS,
  ST_NFDS,
  ST_OFFSET,
  send,
  socketpair,
  type WatchHandle,
  watch,
  watchBuffer,
  watchClose,
  watchWritable,
} from '../../src/native/index.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await sleep(5);
  assert.ok(cond(), `timed out waiting for ${what}`);
}

describe('watch (reader mode)', () => {
  it('appends data at st[ST_OFFSET], reports fds, and EOF exactly once', async () => {
    const [a, b] = socketpair();
    const rx = new Uint8Array(256);
    const st = newStatus();
    const events: number[] = [];
    const fds: number[] = [];
    const h = watch(
      b,
      rx,
      st,
      (n) => {
        events.push(n);
        if (n > 0) {
          for (let i = 0; i < st[ST_NFDS]; i++) fds.push(st[ST_FDS + i]);
          st[ST_OFFSET] += n; // JS owns the append offset
        }
      },
      () => assert.fail('onWritable without watchWritable'),
    );
    const efd = eventfd();
    send(a, Buffer.from('hello '), 0, 6);
    await until(() => st[ST_OFFSET] === 6, 'first chunk');
    send(a, Buffer.from('world'), 0, 5, [efd]);
    await until(() => st[ST_OFFSET] === 11, 'second chunk');
    assert.equal(Buffer.from(rx.subarray(0, 11)).toString(), 'hello world');
    assert.equal(fds.length, 1);
    eventfdWrite(fds[0]);
    assert.equal(eventfdRead(efd), 1); // the received fd is the same eventfd

    close(a);
    await until(() => events.includes(0), 'EOF');
    await sleep(50);
    assert.deepEqual(events, [6, 5, 0]); // EOF once, and no EAGAIN noise
    watchClose(h);
    watchClose(h); // idempotent
    close(b); // safe right after watchClose
    close(efd);
    close(fds[0]);
  });

  it('a peer reset delivers the queued data first, then -ECONNRESET once', async () => {
    const [a, b] = socketpair();
    const st = newStatus();
    const seen: number[] = [];
    const h = watch(
      a,
      new Uint8Array(64),
      st,
      (n) => {
        seen.push(n);
        if (n > 0) st[ST_OFFSET] += n;
      },
      () => {},
    );
    send(a, new Uint8Array(10), 0, 10); // b never reads this, so its close resets a
    send(b, new Uint8Array(7), 0, 7); // still queued for a when b goes away
    close(b);
    await until(() => seen.length === 2, 'data and error');
    await sleep(30);
    assert.deepEqual(seen, [7, -ECONNRESET]); // libuv alone would report EBADF
    watchClose(h);
    close(a);
  });

  it('reports -ENOBUFS when the buffer is full, then continues after watchBuffer', async () => {
    const [a, b] = socketpair();
    const st = newStatus();
    const seen: number[] = [];
    let rx = new Uint8Array(4);
    const h = watch(
      b,
      rx,
      st,
      (n) => {
        seen.push(n);
        if (n > 0) st[ST_OFFSET] += n;
        else if (n === -ENOBUFS) {
          const bigger = new Uint8Array(rx.length * 4); // grow, keep the offset
          bigger.set(rx);
          rx = bigger;
          watchBuffer(h, rx);
        }
      },
      () => {},
    );
    send(a, Buffer.from('0123456789'), 0, 10);
    await until(() => st[ST_OFFSET] === 10, 'all bytes');
    assert.equal(Buffer.from(rx.subarray(0, 10)).toString(), '0123456789');
    assert.deepEqual(seen, [4, -ENOBUFS, 6]);
    watchClose(h);
    close(a);
    close(b);
  });

  it('stops on a bad st[ST_OFFSET] (-EINVAL) instead of writing out of bounds', async () => {
    const [a, b] = socketpair();
    const st = newStatus();
    const seen: number[] = [];
    st[ST_OFFSET] = 100; // beyond the 16-byte buffer
    const h = watch(
      b,
      new Uint8Array(16),
      st,
      (n) => seen.push(n),
      () => {},
    );
    send(a, Buffer.from('x'), 0, 1);
    await until(() => seen.length > 0, 'error');
    await sleep(30);
    assert.equal(seen.length, 1);
    assert.ok(seen[0] < 0 && seen[0] !== -ENOBUFS);
    watchClose(h);
    close(a);
    close(b);
  });

  it('watchWritable fires once the filled socket drains', async () => {
    const [a, b] = socketpair();
    const st = newStatus();
    let writable = 0;
    const h: WatchHandle = watch(
      a,
      new Uint8Array(64),
      st,
      () => {},
      () => {
        writable++;
        watchWritable(h, false); // a write queue would flush here and switch off when empty
      },
    );
    const chunk = new Uint8Array(65536);
    let sent = 0;
    for (;;) {
      const n = send(a, chunk, 0, chunk.length);
      if (n === -EAGAIN) break;
      assert.ok(n > 0);
      sent += n;
    }
    assert.ok(sent > 0);
    watchWritable(h, true);
    await sleep(30);
    assert.equal(writable, 0); // still full
    const rx = new Uint8Array(65536);
    const rst = newStatus();
    let got = 0;
    for (let n = recv(b, rx, 0, rx.length, rst); n > 0; n = recv(b, rx, 0, rx.length, rst)) got += n;
    assert.equal(got, sent);
    await until(() => writable > 0, 'writable');
    await sleep(30);
    assert.equal(writable, 1); // switched off inside the callback
    watchClose(h);
    watchWritable(h, true); // no-op once closed
    close(a);
    close(b);
  });

  it('watchClose from inside onData stops further callbacks', async () => {
    const [a, b] = socketpair();
    const st = newStatus();
    let calls = 0;
    let writableCalls = 0;
    const h = watch(
      b,
      new Uint8Array(64),
      st,
      () => {
        calls++;
        watchClose(h);
        close(b); // the transport tears down right here
      },
      () => writableCalls++,
    );
    watchWritable(h, true);
    await sleep(20);
    writableCalls = 0;
    send(a, Buffer.from('abc'), 0, 3);
    await until(() => calls === 1, 'data');
    send(a, Buffer.from('def'), 0, 3);
    await sleep(30);
    assert.equal(calls, 1);
    close(a);
  });

  it('validates arguments', () => {
    const [a, b] = socketpair();
    const st = newStatus();
    assert.throws(
      () =>
        watch(
          b,
          new Uint8Array(8),
          new Int32Array(8),
          () => {},
          () => {},
        ),
      TypeError,
    );
    assert.throws(
      () =>
        watch(
          b,
          new Uint16Array(8) as never,
          st,
          () => {},
          () => {},
        ),
      TypeError,
    );
    assert.throws(() => watch(b, new Uint8Array(8), st, null as never, () => {}), TypeError);
    const h = watch(
      b,
      new Uint8Array(8),
      st,
      () => {},
      () => {},
    );
    assert.throws(
      () =>
        watch(
          b,
          new Uint8Array(8),
          st,
          () => {},
          () => {},
        ),
      /EEXIST/,
    ); // one poller per fd
    assert.throws(() => watchBuffer(h, new Int32Array(4) as never), TypeError);
    watchClose(h);
    close(a);
    close(b);
  });
});
