/**
 * Typed wrapper of the C addon (src/native/addon.c, built to build/mediated_native.node by
 * scripts/build-native.mjs): fd passing over UNIX sockets, memfd, mmap, eventfd and uv_poll
 * readiness on the Node event loop. See docs/node-native-plumbing.md for the rules.
 *
 * Error convention:
 *  - calls that create a resource (memfd, mmap, eventfd, listen, connect, socketpair, dup, poll,
 *    watch, and addSeals/getSeals/fileSize/setNonBlocking) throw a `NativeError`
 *    (`code` like 'EAGAIN', `errno` negative like Node, `syscall`);
 *  - hot-path I/O (recv, send, accept, eventfdRead, eventfdWrite, close) returns `-errno`
 *    (compare with `-EAGAIN` etc.), never throws for I/O errors;
 *  - invalid arguments throw TypeError / RangeError.
 */
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot } from '../util/repo-root.js';

declare const pollBrand: unique symbol;
declare const watchBrand: unique symbol;
/** Opaque handle returned by {@link poll}. */
export interface PollHandle {
  readonly [pollBrand]: true;
}
/** Opaque handle returned by {@link watch}. */
export interface WatchHandle {
  readonly [watchBrand]: true;
}

/** Error thrown by resource-creating calls. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

interface Constants {
  EAGAIN: number;
  EINTR: number;
  ENOBUFS: number;
  EBADF: number;
  EINVAL: number;
  EPIPE: number;
  ECONNRESET: number;
  ENOENT: number;
  ENOMEM: number;
  EMFILE: number;
  ECONNREFUSED: number;
  ENOTCONN: number;
  EEXIST: number;
  EPERM: number;
  SEAL_SEAL: number;
  SEAL_SHRINK: number;
  SEAL_GROW: number;
  SEAL_WRITE: number;
  READABLE: number;
  WRITABLE: number;
  DISCONNECT: number;
  PRIORITIZED: number;
  MSG_CTRUNC: number;
  MAX_FDS: number;
  SEND_MAX_FDS: number;
  ST_NFDS: number;
  ST_FLAGS: number;
  ST_OFFSET: number;
  ST_FDS: number;
  ST_LENGTH: number;
  PAGE_SIZE: number;
  MAX_MAP_LENGTH: number;
}

interface Addon {
  constants: Constants;
  memfd(name: string, size: number): number;
  addSeals(fd: number, seals: number): void;
  getSeals(fd: number): number;
  fileSize(fd: number): number;
  mmap(fd: number, length: number, offset?: number, writable?: boolean, populate?: boolean): ArrayBuffer;
  munmap(ab: ArrayBuffer): void;
  eventfd(initval?: number, semaphore?: boolean): number;
  eventfdWrite(fd: number, value?: number): number;
  eventfdRead(fd: number): number;
  listen(path: string, backlog?: number): number;
  accept(fd: number): number;
  connect(path: string): number;
  socketpair(): [number, number];
  recv(fd: number, buf: Uint8Array, off: number, len: number, st: Int32Array): number;
  send(fd: number, buf: Uint8Array, off: number, len: number, fds?: readonly number[] | null): number;
  close(fd: number): number;
  dup(fd: number): number;
  setNonBlocking(fd: number, on: boolean): void;
  poll(fd: number, events: number, cb: (status: number, events: number) => void): PollHandle;
  pollUpdate(h: PollHandle, events: number): void;
  pollClose(h: PollHandle): void;
  watch(fd: number, buf: Uint8Array, st: Int32Array, onData: (n: number) => void, onWritable: () => void): WatchHandle;
  watchBuffer(h: WatchHandle, buf: Uint8Array): void;
  watchWritable(h: WatchHandle, on: boolean): void;
  watchClose(h: WatchHandle): void;
}

/** Absolute path of the compiled addon. */
export const addonPath: string = join(repoRoot(dirname(fileURLToPath(import.meta.url))), 'build', 'mediated_native.node');

function load(): Addon {
  try {
    return createRequire(import.meta.url)(addonPath) as Addon;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') {
      throw new Error(`mediated: native addon not built (${addonPath}); run: node scripts/build-native.mjs`);
    }
    throw err;
  }
}

const native = load();
const k = native.constants;

// errno values, positive: results are compared as `n === -EAGAIN`.
export const EAGAIN = k.EAGAIN;
export const EINTR = k.EINTR;
export const ENOBUFS = k.ENOBUFS;
export const EBADF = k.EBADF;
export const EINVAL = k.EINVAL;
export const EPIPE = k.EPIPE;
export const ECONNRESET = k.ECONNRESET;
export const ENOENT = k.ENOENT;
export const ENOMEM = k.ENOMEM;
export const EMFILE = k.EMFILE;
export const ECONNREFUSED = k.ECONNREFUSED;
export const ENOTCONN = k.ENOTCONN;
export const EEXIST = k.EEXIST;
export const EPERM = k.EPERM;

/** memfd seals (F_SEAL_*) for {@link addSeals} / {@link getSeals}. */
export const SEAL_SEAL = k.SEAL_SEAL;
export const SEAL_SHRINK = k.SEAL_SHRINK;
export const SEAL_GROW = k.SEAL_GROW;
export const SEAL_WRITE = k.SEAL_WRITE;

/** uv_poll event bits for {@link poll} / {@link pollUpdate}. */
export const READABLE = k.READABLE;
export const WRITABLE = k.WRITABLE;
export const DISCONNECT = k.DISCONNECT;
export const PRIORITIZED = k.PRIORITIZED;

/** Set in st[ST_FLAGS] when fds did not fit: the kernel closed the rest. A protocol error. */
export const MSG_CTRUNC = k.MSG_CTRUNC;
/** Most fds one recv()/watch() read can return (the max_msg_fds to advertise): 32. */
export const MAX_FDS = k.MAX_FDS;
/** Most fds one send() may carry (the kernel's SCM_MAX_FD): 253. */
export const SEND_MAX_FDS = k.SEND_MAX_FDS;

/** Status array layout (Int32Array of ST_LENGTH) used by recv() and watch(). */
export const ST_NFDS = k.ST_NFDS; // number of fds received by the last read
export const ST_FLAGS = k.ST_FLAGS; // msg_flags of the last read (MSG_CTRUNC)
export const ST_OFFSET = k.ST_OFFSET; // watch(): append offset into buf, maintained by JS
export const ST_FDS = k.ST_FDS; // first of st[ST_NFDS] received fds
export const ST_LENGTH = k.ST_LENGTH; // 4 + MAX_FDS

export const PAGE_SIZE = k.PAGE_SIZE;
/** Largest mmap() window (4 GiB, Node 20's ArrayBuffer limit). */
export const MAX_MAP_LENGTH = k.MAX_MAP_LENGTH;

/** A fresh status array for recv()/watch(). */
export function newStatus(): Int32Array {
  return new Int32Array(ST_LENGTH);
}

/** memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING) + ftruncate(size). Size may exceed 4 GiB. */
export const memfd: (name: string, size: number) => number = native.memfd;
/** fcntl(F_ADD_SEALS). Throws (EPERM) when a seal forbids it. */
export const addSeals: (fd: number, seals: number) => void = native.addSeals;
/** fcntl(F_GET_SEALS). */
export const getSeals: (fd: number) => number = native.getSeals;
/** fstat().st_size. */
export const fileSize: (fd: number) => number = native.fileSize;

/**
 * mmap(MAP_SHARED) of [offset, offset + length) as an external ArrayBuffer.
 * length: 1 .. 4 GiB (use several windows above); offset: page-aligned, may exceed 4 GiB; for
 * regular files (memfds) the window must lie within the file size (else it throws, because
 * touching pages past EOF is a SIGBUS). writable=false maps PROT_READ: writing through such a
 * view is a SIGSEGV, so never hand it to code that writes. populate: MAP_POPULATE (our VRAM,
 * not gigabytes of guest RAM). Unmapped by GC if {@link munmap} is not called, but call it.
 */
export const mmap: (fd: number, length: number, offset?: number, writable?: boolean, populate?: boolean) => ArrayBuffer = native.mmap;
/**
 * Detaches the buffer (every view then has byteLength 0) and unmaps now. Throws on a second
 * call or on a buffer that mmap() did not return.
 */
export const munmap: (ab: ArrayBuffer) => void = native.munmap;

/** eventfd(EFD_CLOEXEC | EFD_NONBLOCK [| EFD_SEMAPHORE]). */
export const eventfd: (initval?: number, semaphore?: boolean) => number = native.eventfd;
/** Adds value (default 1) to the counter: 0 or -errno (-EAGAIN on overflow). */
export const eventfdWrite: (fd: number, value?: number) => number = native.eventfdWrite;
/** Reads and resets the counter (or decrements by 1 in semaphore mode): value or -errno (-EAGAIN when 0). */
export const eventfdRead: (fd: number) => number = native.eventfdRead;

/**
 * AF_UNIX stream socket bound and listening at path, nonblocking and cloexec. A leftover
 * socket file nobody listens on is removed first; a live server or a non-socket file makes
 * it throw (EADDRINUSE).
 */
export const listen: (path: string, backlog?: number) => number = native.listen;
/** accept4(SOCK_NONBLOCK | SOCK_CLOEXEC): fd or -errno (-EAGAIN when none pending). */
export const accept: (fd: number) => number = native.accept;
/** Blocking connect to a UNIX socket path, then nonblocking. Throws on failure. */
export const connect: (path: string) => number = native.connect;
/** Nonblocking, cloexec AF_UNIX stream socket pair. */
export const socketpair: () => [number, number] = native.socketpair;

/**
 * One recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC) into buf[off, off + len): bytes, 0 on EOF or
 * -errno (-EAGAIN: nothing to read; -ENOBUFS if len is 0). st[ST_NFDS] = fds received (now
 * owned by the caller: close them on every path), st[ST_FDS..] = the fds, st[ST_FLAGS] =
 * msg_flags (check MSG_CTRUNC). st must have ST_LENGTH entries.
 */
export const recv: (fd: number, buf: Uint8Array, off: number, len: number, st: Int32Array) => number = native.recv;
/**
 * One sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT) of buf[off, off + len) with fds as SCM_RIGHTS
 * (needs len >= 1). Returns bytes sent, possibly short, or -errno (-EAGAIN, -EPIPE). When
 * n > 0 all fds went with the first byte: send the rest WITHOUT fds. The peer gets
 * duplicates; our fds stay open.
 */
export const send: (fd: number, buf: Uint8Array, off: number, len: number, fds?: readonly number[] | null) => number = native.send;

/** close(2): 0 or -errno. Never retried on EINTR (the fd is gone anyway on Linux). */
export const close: (fd: number) => number = native.close;
/** fcntl(F_DUPFD_CLOEXEC). O_NONBLOCK is shared between duplicates. */
export const dup: (fd: number) => number = native.dup;
export const setNonBlocking: (fd: number, on: boolean) => void = native.setNonBlocking;

/**
 * uv_poll on the Node event loop (also sets the fd nonblocking). cb(status, events): status 0
 * or a negative libuv error (libuv then has stopped the handle: pollUpdate restarts it);
 * events is READABLE | WRITABLE | ... Level-triggered. A throwing cb becomes
 * 'uncaughtException'. One poll/watch per fd, and not on fds Node itself watches (EEXIST).
 * The handle keeps the loop alive until pollClose.
 */
export const poll: (fd: number, events: number, cb: (status: number, events: number) => void) => PollHandle = native.poll;
/** Changes the interest set (0 stops polling; restarts a handle stopped by an error). No-op once closed. */
export const pollUpdate: (h: PollHandle, events: number) => void = native.pollUpdate;
/** Stops and closes the poll (uv_close). Idempotent, callable from the callback; close(fd) after it is safe. */
export const pollClose: (h: PollHandle) => void = native.pollClose;

/**
 * Reader mode, the transport's hot path. On readability C does ONE recvmsg into
 * buf[st[ST_OFFSET] .. buf.length) and calls onData(n) once:
 *  - n > 0: n bytes appended at st[ST_OFFSET] (JS advances st[ST_OFFSET] itself), with
 *    st[ST_NFDS]/st[ST_FLAGS]/st[ST_FDS..] as for recv(); the fds belong to the caller;
 *  - n = 0: EOF, reported once; polling has stopped (still call watchClose);
 *  - n = -ENOBUFS: st[ST_OFFSET] == buf.length. Not fatal: consume, compact or watchBuffer()
 *    a larger buffer before returning, or it is reported again on the next loop turn;
 *  - other n < 0: hard error (-ECONNRESET, -EINVAL for a bad st[ST_OFFSET], ...), reported
 *    once; polling has stopped.
 * EAGAIN is swallowed. onWritable() is called while watchWritable(h, true) is on and the
 * socket is writable (after onData in the same turn). buf must stay below 2 GiB. Exceptions
 * from either callback become 'uncaughtException'. The handle keeps the loop alive until
 * watchClose.
 */
export const watch: (fd: number, buf: Uint8Array, st: Int32Array, onData: (n: number) => void, onWritable: () => void) => WatchHandle = native.watch;
/** Replaces the receive buffer (e.g. a grown copy); the next read uses it with st[ST_OFFSET]. */
export const watchBuffer: (h: WatchHandle, buf: Uint8Array) => void = native.watchBuffer;
/** Toggles UV_WRITABLE interest (the write-queue drain signal). No-op after EOF/error/close. */
export const watchWritable: (h: WatchHandle, on: boolean) => void = native.watchWritable;
/**
 * Stops polling and uv_closes the handle; idempotent and callable from inside onData or
 * onWritable (no further callback is made). The fd is removed from epoll at once, so
 * close(fd) right after watchClose is safe — and close(fd) must never come BEFORE it.
 */
export const watchClose: (h: WatchHandle) => void = native.watchClose;

/** Open fds of this process (entries of /proc/self/fd, minus the one readdir itself uses). */
export function fdCount(): number {
  return readdirSync('/proc/self/fd').length - 1;
}
