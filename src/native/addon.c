/*
 * mediated_native: the small N-API addon under mediated's vfio-user transport.
 *
 * Node 20 cannot pass fds over a UNIX socket (net reads with read(), so the kernel discards
 * SCM_RIGHTS fds), cannot mmap, and has no memfd/eventfd. This file provides exactly those
 * primitives; protocol logic stays in TypeScript. Rules: docs/node-native-plumbing.md §5-7.
 *
 * Conventions
 *  - Calls that create a resource throw an Error with .code ("EBADF"), .errno (-9), .syscall.
 *  - Hot-path I/O (recv, send, accept, eventfdRead/Write, close) returns -errno instead, so
 *    the transport never pays for an exception on EAGAIN.
 *  - Bad arguments are programming errors: TypeError / RangeError.
 *  - No global mutable state: everything lives in mapping/handle structs or in the per-env
 *    instance, so the addon works in several worker_threads at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#ifndef __GLIBC__
#define strerrorname_np(e) NULL /* glibc >= 2.32 only */
#endif

#define MAX_FDS 32       /* fds accepted per recvmsg: the max_msg_fds we advertise */
#define SEND_MAX_FDS 253 /* SCM_MAX_FD, the kernel's limit per sendmsg */
enum { ST_NFDS = 0, ST_FLAGS = 1, ST_OFFSET = 2, ST_FDS = 4, ST_LEN = ST_FDS + MAX_FDS };
#define MAX_VIEW 4294967296.0 /* Node 20 ArrayBuffer limit (buffer.constants.MAX_LENGTH) */
#define MAX_SAFE 9007199254740991.0
#define REQUIRED NAN /* "no default" for get_num() */

static const napi_type_tag MAPPING_TAG = {0x6d65646961746564ULL, 0x6d6d61702d616231ULL};
static const napi_type_tag HANDLE_TAG = {0x6d65646961746564ULL, 0x706f6c6c2d68646cULL};

/* ---------- errors and arguments ---------- */

static napi_value throw_errno(napi_env env, const char *syscall, int err) {
  char msg[256];
  const char *name = strerrorname_np(err);
  napi_value code, message, error, v;
  if (!name) name = "EUNKNOWN";
  snprintf(msg, sizeof msg, "%s: %s (%s)", syscall, strerror(err), name);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -err, &v); /* negative, like Node's own err.errno */
  napi_set_named_property(env, error, "errno", v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, error, "syscall", v);
  napi_throw(env, error);
  return NULL;
}

static bool arg_error(napi_env env, bool range, const char *what, const char *why) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s %s", what, why);
  if (range) napi_throw_range_error(env, NULL, msg);
  else napi_throw_type_error(env, NULL, msg);
  return false;
}

static bool is_undefined(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && t == napi_undefined;
}

/* An integral number in [min, max]; undefined gives dflt unless dflt is REQUIRED. */
static bool get_num(napi_env env, napi_value v, double dflt, double min, double max,
                    double *out, const char *what) {
  if (!isnan(dflt) && is_undefined(env, v)) return *out = dflt, true;
  if (napi_get_value_double(env, v, out) != napi_ok) return arg_error(env, 0, what, "must be a number");
  if (!(*out >= min && *out <= max) || *out != (double)(int64_t)*out)
    return arg_error(env, 1, what, "is not an integer in range");
  return true;
}

static bool get_fd(napi_env env, napi_value v, int *fd) {
  double d;
  if (!get_num(env, v, REQUIRED, 0, INT32_MAX, &d, "fd")) return false;
  return *fd = (int)d, true;
}

static bool get_bool(napi_env env, napi_value v, bool dflt, bool *out, const char *what) {
  if (is_undefined(env, v)) return *out = dflt, true;
  if (napi_get_value_bool(env, v, out) != napi_ok) return arg_error(env, 0, what, "must be a boolean");
  return true;
}

/* A typed array of the given kind; data already includes the view's byteOffset. */
static bool get_typed(napi_env env, napi_value v, napi_typedarray_type want, void **data,
                      size_t *len) {
  bool is = false;
  napi_typedarray_type t;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  return napi_get_typedarray_info(env, v, &t, len, data, NULL, NULL) == napi_ok && t == want;
}

static bool get_func(napi_env env, napi_value v, const char *what) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_function)
    return arg_error(env, 0, what, "must be a function");
  return true;
}

/* Asks for the full length first: an over-long socket path is an error, not silently cut. */
static bool get_str(napi_env env, napi_value v, char *buf, size_t size, const char *what) {
  size_t n;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok)
    return arg_error(env, 0, what, "must be a string");
  if (n == 0 || n >= size) return arg_error(env, 1, what, "is empty or too long");
  return napi_get_value_string_utf8(env, v, buf, size, &n) == napi_ok;
}

static napi_value num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

/* Declares argv[n] (missing arguments read as undefined); FD_ARGS also parses argv[0] as fd. */
#define ARGS(n)                                                                          \
  size_t argc = (n);                                                                     \
  napi_value argv[(n)];                                                                  \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL
#define FD_ARGS(n)                                                                       \
  ARGS(n);                                                                               \
  int fd;                                                                                \
  if (!get_fd(env, argv[0], &fd)) return NULL

/* ---------- memfd, seals, size ---------- */

static napi_value js_memfd(napi_env env, napi_callback_info info) {
  ARGS(2);
  char name[250]; /* memfd names are at most 249 bytes */
  double size;
  if (!get_str(env, argv[0], name, sizeof name, "memfd: name") ||
      !get_num(env, argv[1], REQUIRED, 0, MAX_SAFE, &size, "memfd: size"))
    return NULL;
  /* ALLOW_SEALING: our VRAM gets SHRINK|GROW seals so a peer cannot SIGBUS us (or QEMU) */
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return throw_errno(env, "memfd_create", errno);
  if (ftruncate(fd, (off_t)size) == 0) return num(env, fd);
  int e = errno;
  close(fd);
  return throw_errno(env, "ftruncate", e);
}

static napi_value js_add_seals(napi_env env, napi_callback_info info) {
  FD_ARGS(2);
  double seals;
  if (!get_num(env, argv[1], REQUIRED, 0, INT32_MAX, &seals, "addSeals: seals")) return NULL;
  if (fcntl(fd, F_ADD_SEALS, (int)seals) < 0) return throw_errno(env, "fcntl(F_ADD_SEALS)", errno);
  return NULL;
}

static napi_value js_get_seals(napi_env env, napi_callback_info info) {
  FD_ARGS(1);
  int r = fcntl(fd, F_GET_SEALS);
  return r < 0 ? throw_errno(env, "fcntl(F_GET_SEALS)", errno) : num(env, r);
}

static napi_value js_file_size(napi_env env, napi_callback_info info) {
  FD_ARGS(1);
  struct stat sb;
  return fstat(fd, &sb) < 0 ? throw_errno(env, "fstat", errno) : num(env, (double)sb.st_size);
}

/* ---------- mmap as a detachable external ArrayBuffer ---------- */

/*
 * One per mapping, owned by the ArrayBuffer's finalizer. Node runs that finalizer late (after
 * GC, or from a SetImmediate after a detach), so munmap() only marks the mapping unmapped and
 * the finalizer frees it. `creating` covers a failing napi_create_external_arraybuffer, which
 * may call the finalizer synchronously (or not at all): then the creator cleans up.
 */
typedef struct {
  void *addr;
  size_t len;
  bool unmapped, creating;
} mapping;

static void mapping_finalize(napi_env env, void *data, void *hint) {
  mapping *m = hint;
  (void)env, (void)data;
  if (!m->unmapped) munmap(m->addr, m->len);
  m->unmapped = true;
  if (!m->creating) free(m);
}

static napi_value js_mmap(napi_env env, napi_callback_info info) {
  FD_ARGS(5);
  double len, off;
  bool writable, populate;
  struct stat sb;
  napi_value ab;
  if (!get_num(env, argv[1], REQUIRED, 1, MAX_VIEW, &len, "mmap: length (1 byte .. 4 GiB)") ||
      !get_num(env, argv[2], 0, 0, MAX_SAFE, &off, "mmap: offset") ||
      !get_bool(env, argv[3], true, &writable, "mmap: writable") ||
      !get_bool(env, argv[4], false, &populate, "mmap: populate"))
    return NULL;
  if ((uint64_t)off % (uint64_t)sysconf(_SC_PAGESIZE))
    return arg_error(env, 1, "mmap: offset", "must be a multiple of the page size"), NULL;
  if (fstat(fd, &sb) < 0) return throw_errno(env, "fstat", errno);
  /* touching a page past EOF is a SIGBUS that kills Node: refuse such windows up front */
  if (S_ISREG(sb.st_mode) && (uint64_t)off + (uint64_t)len > (uint64_t)sb.st_size)
    return arg_error(env, 1, "mmap: offset + length", "exceeds the file size"), NULL;
  void *p = mmap(NULL, (size_t)len, PROT_READ | (writable ? PROT_WRITE : 0),
                 MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, (off_t)off);
  if (p == MAP_FAILED) return throw_errno(env, "mmap", errno);
  mapping *m = calloc(1, sizeof *m);
  if (!m) {
    munmap(p, (size_t)len);
    return throw_errno(env, "mmap", ENOMEM);
  }
  *m = (mapping){.addr = p, .len = (size_t)len, .creating = true};
  napi_status s = napi_create_external_arraybuffer(env, p, m->len, mapping_finalize, m, &ab);
  m->creating = false;
  if (s != napi_ok) {
    if (!m->unmapped) munmap(p, m->len); /* only if the finalizer did not already */
    free(m);
    return NULL;
  }
  /* tag + wrap so munmap() recognises our buffers and finds the mapping. Should this fail,
     the ArrayBuffer still owns m and its finalizer unmaps at GC. */
  if (napi_type_tag_object(env, ab, &MAPPING_TAG) != napi_ok ||
      napi_wrap(env, ab, m, NULL, NULL, NULL) != napi_ok)
    return NULL;
  return ab;
}

static napi_value js_munmap(napi_env env, napi_callback_info info) {
  ARGS(1);
  bool is_ab = false, ours = false, detached = false;
  void *p;
  napi_is_arraybuffer(env, argv[0], &is_ab);
  if (is_ab) napi_check_object_type_tag(env, argv[0], &MAPPING_TAG, &ours);
  if (!ours) return arg_error(env, 0, "munmap:", "expected an ArrayBuffer returned by mmap()"), NULL;
  /* detached = already unmapped; its mapping struct may be freed by now: do not touch it */
  napi_is_detached_arraybuffer(env, argv[0], &detached);
  if (detached) {
    napi_throw_error(env, "ERR_MEDIATED_UNMAPPED", "munmap: buffer is already unmapped");
    return NULL;
  }
  if (napi_unwrap(env, argv[0], &p) != napi_ok) return NULL;
  mapping *m = p;
  void *addr = m->addr;
  size_t len = m->len;
  /* Detach first, so every view reads as length 0 instead of faulting. Mark first, so a
     finalizer run from inside the detach neither unmaps nor is touched afterwards. */
  m->unmapped = true;
  if (napi_detach_arraybuffer(env, argv[0]) != napi_ok) {
    m->unmapped = false; /* still attached: the finalizer cannot have run */
    return NULL;
  }
  munmap(addr, len);
  return NULL;
}

/* ---------- eventfd ---------- */

static napi_value js_eventfd(napi_env env, napi_callback_info info) {
  ARGS(2);
  double init;
  bool sem;
  if (!get_num(env, argv[0], 0, 0, UINT32_MAX, &init, "eventfd: initval") ||
      !get_bool(env, argv[1], false, &sem, "eventfd: semaphore"))
    return NULL;
  int fd = eventfd((unsigned)init, EFD_CLOEXEC | EFD_NONBLOCK | (sem ? EFD_SEMAPHORE : 0));
  return fd < 0 ? throw_errno(env, "eventfd", errno) : num(env, fd);
}

static napi_value js_eventfd_write(napi_env env, napi_callback_info info) {
  FD_ARGS(2);
  double d;
  ssize_t n;
  if (!get_num(env, argv[1], 1, 0, MAX_SAFE, &d, "eventfdWrite: value")) return NULL;
  uint64_t v = (uint64_t)d;
  do n = write(fd, &v, sizeof v); while (n < 0 && errno == EINTR);
  return num(env, n < 0 ? -errno : 0);
}

static napi_value js_eventfd_read(napi_env env, napi_callback_info info) {
  FD_ARGS(1);
  uint64_t v;
  ssize_t n;
  do n = read(fd, &v, sizeof v); while (n < 0 && errno == EINTR);
  return num(env, n < 0 ? -errno : (double)v);
}

/* ---------- UNIX sockets ---------- */

static bool get_addr(napi_env env, napi_value v, struct sockaddr_un *a) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  return get_str(env, v, a->sun_path, sizeof a->sun_path, "socket path");
}

/* A socket file nobody listens on (connect says ECONNREFUSED) is a leftover: remove it. A live
   server's socket or a non-socket file stays, and bind() then fails with EADDRINUSE. */
static void unlink_stale(const struct sockaddr_un *a) {
  struct stat sb;
  if (lstat(a->sun_path, &sb) < 0 || !S_ISSOCK(sb.st_mode)) return;
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) return;
  if (connect(probe, (const struct sockaddr *)a, sizeof *a) < 0 && errno == ECONNREFUSED)
    unlink(a->sun_path);
  close(probe);
}

/* Closes fd and throws errno as it was when the failing call returned. */
static napi_value fail_close(napi_env env, int fd, const char *syscall) {
  int e = errno;
  close(fd);
  return throw_errno(env, syscall, e);
}

static napi_value js_listen(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct sockaddr_un a;
  double backlog;
  if (!get_addr(env, argv[0], &a) ||
      !get_num(env, argv[1], 64, 1, INT32_MAX, &backlog, "listen: backlog"))
    return NULL;
  unlink_stale(&a);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) return fail_close(env, fd, "bind");
  if (listen(fd, (int)backlog) < 0) return fail_close(env, fd, "listen");
  return num(env, fd);
}

static napi_value js_accept(napi_env env, napi_callback_info info) {
  FD_ARGS(1);
  int r;
  do r = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); while (r < 0 && errno == EINTR);
  return num(env, r < 0 ? -errno : r);
}

static napi_value js_connect(napi_env env, napi_callback_info info) {
  ARGS(1);
  struct sockaddr_un a;
  int r, fl;
  if (!get_addr(env, argv[0], &a)) return NULL;
  /* Blocking: a UNIX connect completes at once unless the backlog is full. An interrupted
     AF_UNIX connect leaves the socket unconnected, so retrying on EINTR is safe. */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  do r = connect(fd, (struct sockaddr *)&a, sizeof a); while (r < 0 && errno == EINTR);
  if (r < 0) return fail_close(env, fd, "connect");
  if ((fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return fail_close(env, fd, "fcntl(O_NONBLOCK)");
  return num(env, fd);
}

static napi_value js_socketpair(napi_env env, napi_callback_info info) {
  int sv[2];
  napi_value arr;
  (void)info;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    return throw_errno(env, "socketpair", errno);
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, num(env, sv[0]));
  napi_set_element(env, arr, 1, num(env, sv[1]));
  return arr;
}

/*
 * One nonblocking recvmsg, the core of recv() and watch(): bytes, 0 on EOF, or -errno.
 * st[ST_NFDS] and st[ST_FDS..] get the fds, st[ST_FLAGS] msg_flags (MSG_CTRUNC: the kernel
 * closed fds that did not fit, a protocol error for the caller).
 */
static ssize_t recv_fds(int fd, void *buf, size_t len, int32_t *st) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
  } ctl;
  struct iovec iov = {buf, len};
  struct msghdr msg;
  ssize_t n;
  int nfds = 0;
  do { /* the kernel writes msg_controllen and msg_flags: reset them before every call */
    msg = (struct msghdr){.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                          .msg_controllen = sizeof ctl.buf};
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    st[ST_NFDS] = st[ST_FLAGS] = 0;
    return -errno;
  }
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
      int f;
      memcpy(&f, CMSG_DATA(c) + i * sizeof f, sizeof f);
      if (nfds < MAX_FDS) st[ST_FDS + nfds++] = f;
      else close(f), msg.msg_flags |= MSG_CTRUNC; /* cannot happen with our buffer; no leak */
    }
  }
  st[ST_NFDS] = nfds;
  st[ST_FLAGS] = msg.msg_flags;
  return n;
}

/* argv[0..2] = buf (Uint8Array), off, len: the byte range [off, off + len) of buf. */
static bool get_range(napi_env env, napi_value *argv, uint8_t **p, size_t *len, const char *fn) {
  void *data;
  size_t size;
  double off, n;
  if (!get_typed(env, argv[0], napi_uint8_array, &data, &size))
    return arg_error(env, 0, fn, "buf must be a Uint8Array");
  if (!get_num(env, argv[1], REQUIRED, 0, (double)size, &off, fn) ||
      !get_num(env, argv[2], REQUIRED, 0, (double)size - off, &n, fn))
    return false;
  *p = (uint8_t *)data + (size_t)off;
  *len = (size_t)n;
  return true;
}

static napi_value js_recv(napi_env env, napi_callback_info info) {
  FD_ARGS(5);
  uint8_t *p;
  size_t len, stlen;
  void *st;
  if (!get_range(env, argv + 1, &p, &len, "recv: off/len")) return NULL;
  if (!get_typed(env, argv[4], napi_int32_array, &st, &stlen) || stlen < ST_LEN)
    return arg_error(env, 0, "recv: st", "must be an Int32Array of length >= 36"), NULL;
  if (len == 0) { /* recvmsg of 0 bytes returns 0, which would read as EOF */
    ((int32_t *)st)[ST_NFDS] = ((int32_t *)st)[ST_FLAGS] = 0;
    return num(env, -ENOBUFS);
  }
  return num(env, (double)recv_fds(fd, p, len, st));
}

static napi_value js_send(napi_env env, napi_callback_info info) {
  FD_ARGS(5);
  uint32_t nfds = 0;
  uint8_t *p;
  size_t len;
  bool is_arr = false;
  ssize_t n;
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(SEND_MAX_FDS * sizeof(int))];
  } ctl;
  if (!get_range(env, argv + 1, &p, &len, "send: off/len")) return NULL;
  struct iovec iov = {p, len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  napi_is_array(env, argv[4], &is_arr);
  if (is_arr && napi_get_array_length(env, argv[4], &nfds) == napi_ok && nfds) {
    if (nfds > SEND_MAX_FDS) return arg_error(env, 1, "send: fds", "has more than 253 entries"), NULL;
    if (!len) return arg_error(env, 1, "send: fds", "need at least 1 byte of data"), NULL;
    memset(ctl.buf, 0, sizeof ctl.buf);
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    for (uint32_t i = 0; i < nfds; i++) {
      napi_value e;
      int f;
      if (napi_get_element(env, argv[4], i, &e) != napi_ok || !get_fd(env, e, &f)) return NULL;
      memcpy(CMSG_DATA(c) + i * sizeof f, &f, sizeof f);
    }
  }
  /* the kernel attaches the fds to the first skb: even a short send has delivered them all */
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
  return num(env, n < 0 ? -errno : (double)n);
}

/* ---------- fd utilities ---------- */

static napi_value js_close(napi_env env, napi_callback_info info) {
  FD_ARGS(1);
  /* never retried on EINTR: Linux releases the fd anyway and it may already be reused */
  return num(env, close(fd) < 0 ? -errno : 0);
}

static napi_value js_dup(napi_env env, napi_callback_info info) {
  FD_ARGS(1);
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return r < 0 ? throw_errno(env, "dup", errno) : num(env, r);
}

static napi_value js_set_nonblocking(napi_env env, napi_callback_info info) {
  FD_ARGS(2);
  int fl;
  bool on;
  if (!get_bool(env, argv[1], true, &on, "setNonBlocking: on")) return NULL;
  if ((fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0)
    return throw_errno(env, "fcntl(O_NONBLOCK)", errno);
  return NULL;
}

/* ---------- uv_poll handles: poll() and reader-mode watch() ---------- */

/*
 * Teardown (worker exit, process exit): every uv handle must be closed AND its close callback
 * must have run before Node unloads this library, or libuv jumps into unmapped code (and a
 * worker's uv_loop_close aborts on open handles). So each instance lists its handles until
 * their close callback has run, and an async cleanup hook holds Node's teardown until then.
 */
typedef struct handle handle;
typedef struct {
  napi_env env;
  handle *head; /* handles whose close callback has not run yet */
  napi_async_cleanup_hook_handle hook;
  bool tearing_down;
} instance;

struct handle {
  uv_poll_t uv;
  napi_env env;
  instance *owner;
  handle *prev, *next;
  bool watch;    /* watch() (reader mode), else poll() */
  bool closing;  /* uv_close requested: JS is never called again */
  bool finished; /* watch: EOF or hard error reported, polling stopped for good */
  int fd, events;
  int refs;      /* one for libuv until the close callback, one for the JS wrapper until GC */
  napi_ref cb, on_writable, buf, st; /* poll() only uses cb */
  /* watch(): where buf and st live, looked up once when set instead of on every read. The
     references above keep both arrays alive; napi_get_typedarray_info has moved any on-heap
     array off-heap, so the pointers stay valid, and neither array is ever detached. */
  uint8_t *rx;
  size_t rxlen;
  int32_t *stp;
};

static void handle_unref(handle *h) {
  if (--h->refs == 0) free(h);
}

static void on_wrapper_gc(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  handle_unref(data);
}

static void instance_done(instance *in) {
  napi_remove_async_cleanup_hook(in->hook); /* lets Node finish its teardown */
  free(in);
}

static void on_uv_closed(uv_handle_t *u) {
  handle *h = u->data;
  instance *in = h->owner;
  if (h->prev) h->prev->next = h->next;
  else in->head = h->next;
  if (h->next) h->next->prev = h->prev;
  if (in->tearing_down && !in->head) instance_done(in);
  handle_unref(h);
}

static void drop_ref(napi_env env, napi_ref *r) {
  if (*r) napi_delete_reference(env, *r);
  *r = NULL;
}

/* Idempotent. uv_close takes the fd out of epoll at once, so close(fd) right after is safe. */
static void handle_close(handle *h) {
  if (h->closing) return;
  h->closing = true;
  drop_ref(h->env, &h->cb);
  drop_ref(h->env, &h->on_writable);
  drop_ref(h->env, &h->buf);
  drop_ref(h->env, &h->st);
  uv_close((uv_handle_t *)&h->uv, on_uv_closed);
}

static void on_env_teardown(napi_async_cleanup_hook_handle hook, void *arg) {
  instance *in = arg;
  in->hook = hook;
  in->tearing_down = true;
  napi_set_instance_data(in->env, NULL, NULL, NULL); /* no new handles from here on */
  for (handle *h = in->head; h; h = h->next) handle_close(h);
  if (!in->head) instance_done(in);
}

/*
 * Calls JS from a libuv callback. napi_make_callback drains microtasks like Node's own
 * callbacks and needs an object receiver (the global). A throwing callback becomes process
 * 'uncaughtException' through napi_fatal_exception instead of being lost or aborting.
 */
static void call_js(napi_env env, napi_ref ref, size_t argc, const napi_value *argv) {
  napi_value fn, global, result, err;
  bool pending = false;
  if (!ref || napi_get_reference_value(env, ref, &fn) != napi_ok || !fn) return;
  napi_get_global(env, &global);
  napi_make_callback(env, NULL, global, fn, argc, argv, &result);
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
      napi_get_and_clear_last_exception(env, &err) == napi_ok)
    napi_fatal_exception(env, err);
}

static void on_poll(uv_poll_t *u, int status, int events);
static void on_watch(uv_poll_t *u, int status, int events);

static int set_interest(handle *h, int events) {
  h->events = events;
  if (h->closing || h->finished) return 0;
  if (!events) return uv_poll_stop(&h->uv);
  return uv_poll_start(&h->uv, events, h->watch ? on_watch : on_poll);
}

static void on_poll(uv_poll_t *u, int status, int events) {
  handle *h = u->data;
  napi_handle_scope scope;
  napi_value argv[2];
  if (h->closing) return;
  napi_open_handle_scope(h->env, &scope);
  napi_create_int32(h->env, status, &argv[0]);
  napi_create_int32(h->env, events, &argv[1]);
  call_js(h->env, h->cb, 2, argv);
  napi_close_handle_scope(h->env, scope);
}

/* Reader mode: ONE recvmsg appended at buf[st[ST_OFFSET]..], then at most one onData(n). */
static void watch_read(handle *h, int status) {
  napi_env env = h->env;
  napi_value v;
  uint8_t *buf = h->rx;
  size_t len = h->rxlen;
  ssize_t n;
  bool ok = buf != NULL && h->stp != NULL;
  int32_t *st = h->stp;
  if (!ok || st[ST_OFFSET] < 0 || (size_t)st[ST_OFFSET] > len) n = -EINVAL;
  else if ((size_t)st[ST_OFFSET] == len) n = -ENOBUFS; /* a 0-byte recvmsg would look like EOF */
  else n = recv_fds(h->fd, (uint8_t *)buf + st[ST_OFFSET], len - st[ST_OFFSET], st);
  if (n < 0 && ok) st[ST_NFDS] = st[ST_FLAGS] = 0;
  if (n == -EAGAIN) {
    if (status == 0) return; /* spurious wakeup: nothing to tell JS */
    n = status;              /* poll reported an error that recvmsg does not explain */
  }
  if (n == 0 || (n < 0 && n != -ENOBUFS)) {
    h->finished = true; /* EOF / hard error: stop before calling JS, so it is reported once */
    uv_poll_stop(&h->uv);
  } else if (status < 0) {
    /* libuv reports EPOLLERR as UV_EBADF and stops the handle, but a reset socket may still
       hold data: keep reading until recvmsg itself returns the real error */
    set_interest(h, h->events);
  }
  napi_create_int64(env, n, &v);
  call_js(env, h->cb, 1, &v);
}

static void on_watch(uv_poll_t *u, int status, int events) {
  handle *h = u->data;
  napi_handle_scope scope;
  if (h->closing || h->finished) return;
  napi_open_handle_scope(h->env, &scope);
  if (status < 0 || (events & UV_READABLE)) watch_read(h, status);
  /* onData may have closed the handle or seen EOF: re-check before the second call */
  if (status == 0 && (events & UV_WRITABLE) && (h->events & UV_WRITABLE) && !h->closing &&
      !h->finished)
    call_js(h->env, h->on_writable, 0, NULL);
  napi_close_handle_scope(h->env, scope);
}

/* A started handle plus its JS wrapper object (type-tagged, so foreign objects are refused). */
static napi_value handle_new(napi_env env, int fd, bool watch, int events, handle **out) {
  instance *in = NULL;
  uv_loop_t *loop;
  napi_value obj;
  int r;
  if (napi_get_instance_data(env, (void **)&in) != napi_ok || !in ||
      napi_get_uv_event_loop(env, &loop) != napi_ok || napi_create_object(env, &obj) != napi_ok ||
      napi_type_tag_object(env, obj, &HANDLE_TAG) != napi_ok)
    return NULL;
  handle *h = calloc(1, sizeof *h);
  if (!h) return throw_errno(env, "poll", ENOMEM);
  /* uv_poll_init also sets O_NONBLOCK and refuses an fd libuv already watches (EEXIST) */
  if ((r = uv_poll_init(loop, &h->uv, fd)) < 0) {
    free(h);
    return throw_errno(env, "uv_poll_init", -r);
  }
  h->uv.data = h;
  h->env = env;
  h->watch = watch;
  h->fd = fd;
  h->refs = 1;
  h->owner = in;
  h->next = in->head;
  if (in->head) in->head->prev = h;
  in->head = h;
  if ((r = set_interest(h, events)) < 0) {
    handle_close(h);
    return throw_errno(env, "uv_poll_start", -r);
  }
  if (napi_wrap(env, obj, h, on_wrapper_gc, NULL, NULL) != napi_ok) {
    handle_close(h);
    return NULL;
  }
  h->refs++;
  *out = h;
  return obj;
}

enum { POLL_HANDLE, WATCH_HANDLE, ANY_HANDLE };

static handle *get_handle(napi_env env, napi_value v, int kind) {
  bool ours = false;
  void *p;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) == napi_ok && t == napi_object)
    napi_check_object_type_tag(env, v, &HANDLE_TAG, &ours);
  if (!ours || napi_unwrap(env, v, &p) != napi_ok ||
      (kind != ANY_HANDLE && ((handle *)p)->watch != (kind == WATCH_HANDLE)))
    return arg_error(env, 0, "handle:", "expected a handle returned by poll()/watch()"), NULL;
  return p;
}

static napi_value js_poll(napi_env env, napi_callback_info info) {
  FD_ARGS(3);
  double ev;
  handle *h;
  napi_value obj;
  if (!get_num(env, argv[1], REQUIRED, 0, 15, &ev, "poll: events") ||
      !get_func(env, argv[2], "poll: cb") || !(obj = handle_new(env, fd, false, (int)ev, &h)))
    return NULL;
  napi_create_reference(env, argv[2], 1, &h->cb);
  return obj;
}

static napi_value js_poll_update(napi_env env, napi_callback_info info) {
  ARGS(2);
  double ev;
  int r;
  handle *h = get_handle(env, argv[0], POLL_HANDLE);
  if (!h || !get_num(env, argv[1], REQUIRED, 0, 15, &ev, "pollUpdate: events")) return NULL;
  if ((r = set_interest(h, (int)ev)) < 0) return throw_errno(env, "uv_poll_start", -r);
  return NULL;
}

static napi_value js_handle_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  handle *h = get_handle(env, argv[0], ANY_HANDLE);
  if (h) handle_close(h);
  return NULL;
}

/* buf stays below 2 GiB because the append offset st[ST_OFFSET] is an int32 */
static bool check_rx(napi_env env, napi_value buf, napi_value st) {
  void *p;
  size_t n;
  if (!get_typed(env, buf, napi_uint8_array, &p, &n) || n > INT32_MAX)
    return arg_error(env, 0, "watch: buf", "must be a Uint8Array below 2 GiB");
  if (st && (!get_typed(env, st, napi_int32_array, &p, &n) || n < ST_LEN))
    return arg_error(env, 0, "watch: st", "must be an Int32Array of length >= 36");
  return true;
}

static napi_value js_watch(napi_env env, napi_callback_info info) {
  FD_ARGS(5);
  handle *h;
  napi_value obj;
  if (!check_rx(env, argv[1], argv[2]) || !get_func(env, argv[3], "watch: onData") ||
      !get_func(env, argv[4], "watch: onWritable") ||
      !(obj = handle_new(env, fd, true, UV_READABLE, &h)))
    return NULL;
  napi_create_reference(env, argv[1], 1, &h->buf);
  napi_create_reference(env, argv[2], 1, &h->st);
  void *p;
  size_t n;
  get_typed(env, argv[1], napi_uint8_array, &p, &h->rxlen);
  h->rx = p;
  get_typed(env, argv[2], napi_int32_array, &p, &n);
  h->stp = p;
  napi_create_reference(env, argv[3], 1, &h->cb);
  napi_create_reference(env, argv[4], 1, &h->on_writable);
  return obj;
}

static napi_value js_watch_buffer(napi_env env, napi_callback_info info) {
  ARGS(2);
  handle *h = get_handle(env, argv[0], WATCH_HANDLE);
  if (!h || !check_rx(env, argv[1], NULL) || h->closing) return NULL;
  drop_ref(env, &h->buf);
  napi_create_reference(env, argv[1], 1, &h->buf);
  void *p;
  get_typed(env, argv[1], napi_uint8_array, &p, &h->rxlen);
  h->rx = p;
  return NULL;
}

static napi_value js_watch_writable(napi_env env, napi_callback_info info) {
  ARGS(2);
  bool on;
  int r;
  handle *h = get_handle(env, argv[0], WATCH_HANDLE);
  if (!h || !get_bool(env, argv[1], true, &on, "watchWritable: on")) return NULL;
  if ((r = set_interest(h, UV_READABLE | (on ? UV_WRITABLE : 0))) < 0)
    return throw_errno(env, "uv_poll_start", -r);
  return NULL;
}

/* ---------- module init ---------- */

NAPI_MODULE_INIT() {
#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}
  napi_property_descriptor fns[] = {
      FN("memfd", js_memfd), FN("addSeals", js_add_seals), FN("getSeals", js_get_seals),
      FN("fileSize", js_file_size), FN("mmap", js_mmap), FN("munmap", js_munmap),
      FN("eventfd", js_eventfd), FN("eventfdWrite", js_eventfd_write),
      FN("eventfdRead", js_eventfd_read), FN("listen", js_listen), FN("accept", js_accept),
      FN("connect", js_connect), FN("socketpair", js_socketpair), FN("recv", js_recv),
      FN("send", js_send), FN("close", js_close), FN("dup", js_dup),
      FN("setNonBlocking", js_set_nonblocking), FN("poll", js_poll),
      FN("pollUpdate", js_poll_update), FN("pollClose", js_handle_close), FN("watch", js_watch),
      FN("watchBuffer", js_watch_buffer), FN("watchWritable", js_watch_writable),
      FN("watchClose", js_handle_close)};
#undef FN
  static const struct {
    const char *name;
    double value;
  } k[] = {
      {"EAGAIN", EAGAIN}, {"EINTR", EINTR}, {"ENOBUFS", ENOBUFS}, {"EBADF", EBADF},
      {"EINVAL", EINVAL}, {"EPIPE", EPIPE}, {"ECONNRESET", ECONNRESET}, {"ENOENT", ENOENT},
      {"ENOMEM", ENOMEM}, {"EMFILE", EMFILE}, {"ECONNREFUSED", ECONNREFUSED},
      {"ENOTCONN", ENOTCONN}, {"EEXIST", EEXIST}, {"EPERM", EPERM},
      {"SEAL_SEAL", F_SEAL_SEAL}, {"SEAL_SHRINK", F_SEAL_SHRINK}, {"SEAL_GROW", F_SEAL_GROW},
      {"SEAL_WRITE", F_SEAL_WRITE}, {"READABLE", UV_READABLE}, {"WRITABLE", UV_WRITABLE},
      {"DISCONNECT", UV_DISCONNECT}, {"PRIORITIZED", UV_PRIORITIZED}, {"MSG_CTRUNC", MSG_CTRUNC},
      {"MAX_FDS", MAX_FDS}, {"SEND_MAX_FDS", SEND_MAX_FDS}, {"ST_NFDS", ST_NFDS},
      {"ST_FLAGS", ST_FLAGS}, {"ST_OFFSET", ST_OFFSET}, {"ST_FDS", ST_FDS},
      {"ST_LENGTH", ST_LEN}, {"MAX_MAP_LENGTH", MAX_VIEW}};
  napi_value c;
  instance *in = calloc(1, sizeof *in);
  if (!in) return throw_errno(env, "init", ENOMEM);
  in->env = env;
  if (napi_set_instance_data(env, in, NULL, NULL) != napi_ok ||
      napi_add_async_cleanup_hook(env, on_env_teardown, in, NULL) != napi_ok ||
      napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns) != napi_ok ||
      napi_create_object(env, &c) != napi_ok)
    return NULL;
  for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
    napi_set_named_property(env, c, k[i].name, num(env, k[i].value));
  napi_set_named_property(env, c, "PAGE_SIZE", num(env, (double)sysconf(_SC_PAGESIZE)));
  napi_set_named_property(env, exports, "constants", c);
  return exports;
}
