/*
 * echo-server: the physical floor for the REGION_READ latency benchmark. A minimal vfio-user
 * responder on an AF_UNIX stream socket: it accepts ONE client, answers VERSION with a short
 * 0.0 reply, answers every REGION_READ with a same-shaped reply (header + echoed offset/region/
 * count + `count` data bytes holding a 32-bit counter, the same work as the benchmark device's
 * register), and any other command with a bare error reply (ENOSYS). It exits when the client
 * disconnects.
 *
 * Two loops:
 *   default  blocking: read exactly the 16-byte header, then exactly the payload, then one
 *            write() of the reply (libvfio-user's way: two reads per message, no event loop).
 *   -e       epoll: nonblocking socket, level-triggered epoll_wait, ONE read() per wakeup into
 *            a buffer, every complete message parsed and answered, then back to epoll_wait
 *            (the shape of our server's reader mode, minus JavaScript).
 *   -e -m    the epoll loop with the native addon's syscalls instead of read()/write():
 *            recvmsg(MSG_CMSG_CLOEXEC | MSG_DONTWAIT) with a 32-fd control buffer and
 *            sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT). A diagnostic: it prices the syscall flavour.
 *
 * Prints "ready" on stdout once listening.  usage: echo-server -s SOCKET [-e [-m]]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HDR 16
#define CMD_VERSION 1
#define CMD_REGION_READ 9
#define TYPE_COMMAND 0
#define TYPE_REPLY 1
#define FLAG_ERROR 0x20
#define MAX_MSG (64 * 1024)
#define MAX_READ (MAX_MSG - HDR - 16)

static const char VERSION_JSON[] = "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":1048576}}";

static int use_msg; /* -m: recvmsg/sendmsg like src/native/addon.c */
static uint8_t rx[2 * MAX_MSG];
static uint8_t tx[MAX_MSG];
static uint32_t counter;

static void die(const char *what) {
  fprintf(stderr, "echo-server: %s: %s\n", what, strerror(errno));
  exit(2);
}

static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* Writes all of buf; on a nonblocking socket waits for POLLOUT when the buffer is full. */
static void write_all(int fd, const uint8_t *p, size_t len) {
  while (len > 0) {
    ssize_t n;
    if (use_msg) {
      struct iovec iov = {(void *)p, len};
      struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
      n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } else {
      n = write(fd, p, len);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        poll(&pfd, 1, -1);
        continue;
      }
      die("write");
    }
    p += n;
    len -= (size_t)n;
  }
}

/* Builds the reply to one complete message (header at m, size from its header) in tx. */
static size_t answer(const uint8_t *m) {
  uint16_t id = get16(m), cmd = get16(m + 2);
  uint32_t size = get32(m + 4), flags = get32(m + 8);
  size_t len = HDR;
  uint32_t rflags = TYPE_REPLY, err = 0;
  if ((flags & 0xf) != TYPE_COMMAND) {
    fprintf(stderr, "echo-server: message type %u is not a command\n", flags & 0xf);
    exit(3);
  }
  if (cmd == CMD_VERSION && size >= HDR + 4) {
    put16(tx + HDR, 0);
    put16(tx + HDR + 2, 0);
    memcpy(tx + HDR + 4, VERSION_JSON, sizeof VERSION_JSON);
    len = HDR + 4 + sizeof VERSION_JSON;
  } else if (cmd == CMD_REGION_READ && size == HDR + 16 && get32(m + HDR + 12) - 1 < MAX_READ) {
    uint32_t count = get32(m + HDR + 12);
    memcpy(tx + HDR, m + HDR, 16); /* offset, region, count */
    uint32_t v = ++counter;
    for (uint32_t i = 0; i < count; i++) tx[HDR + 16 + i] = i < 4 ? (uint8_t)(v >> (8 * i)) : 0;
    len = HDR + 16 + count;
  } else {
    rflags |= FLAG_ERROR;
    err = ENOSYS;
  }
  put16(tx, id);
  put16(tx + 2, cmd);
  put32(tx + 4, (uint32_t)len);
  put32(tx + 8, rflags);
  put32(tx + 12, err);
  return len;
}

/* 1 when len bytes were read, 0 on EOF before the first byte; exits on errors. */
static int read_exact(int fd, uint8_t *p, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, p + got, len - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    if (n == 0) {
      if (got == 0) return 0;
      fprintf(stderr, "echo-server: client closed in the middle of a message\n");
      exit(3);
    }
    got += (size_t)n;
  }
  return 1;
}

static void serve_blocking(int c) {
  for (;;) {
    if (!read_exact(c, rx, HDR)) return;
    uint32_t size = get32(rx + 4);
    if (size < HDR || size > MAX_MSG) {
      fprintf(stderr, "echo-server: message size %u out of range\n", size);
      exit(3);
    }
    if (size > HDR && !read_exact(c, rx + HDR, size - HDR)) {
      fprintf(stderr, "echo-server: client closed in the middle of a message\n");
      exit(3);
    }
    write_all(c, tx, answer(rx));
  }
}

static void serve_epoll(int c) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0) die("epoll_ctl");
  size_t have = 0;
  for (;;) {
    struct epoll_event got;
    int k = epoll_wait(ep, &got, 1, -1);
    if (k < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    ssize_t n;
    if (use_msg) {
      union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(32 * sizeof(int))];
      } ctl;
      struct iovec iov = {rx + have, sizeof rx - have};
      struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
      n = recvmsg(c, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
      if (n > 0 && msg.msg_controllen > 0) {
        fprintf(stderr, "echo-server: unexpected ancillary data\n");
        exit(3);
      }
    } else {
      n = read(c, rx + have, sizeof rx - have);
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      die("read");
    }
    if (n == 0) {
      if (have) fprintf(stderr, "echo-server: client closed in the middle of a message\n");
      break;
    }
    have += (size_t)n;
    size_t at = 0;
    while (have - at >= HDR) {
      uint32_t size = get32(rx + at + 4);
      if (size < HDR || size > MAX_MSG) {
        fprintf(stderr, "echo-server: message size %u out of range\n", size);
        exit(3);
      }
      if (have - at < size) break;
      write_all(c, tx, answer(rx + at));
      at += size;
    }
    if (at > 0) {
      memmove(rx, rx + at, have - at);
      have -= at;
    }
  }
  close(ep);
}

int main(int argc, char **argv) {
  const char *path = NULL;
  int use_epoll = 0, opt;
  while ((opt = getopt(argc, argv, "s:em")) != -1) {
    switch (opt) {
      case 's': path = optarg; break;
      case 'e': use_epoll = 1; break;
      case 'm': use_msg = 1; break;
      default:
        fprintf(stderr, "usage: %s -s SOCKET [-e [-m]]\n", argv[0]);
        return 1;
    }
  }
  if (!path) {
    fprintf(stderr, "echo-server: -s SOCKET is required\n");
    return 1;
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) {
    fprintf(stderr, "echo-server: socket path too long\n");
    return 1;
  }
  strcpy(sa.sun_path, path);
  unlink(path);
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) die("socket");
  if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
  if (listen(l, 1) < 0) die("listen");
  printf("ready\n");
  fflush(stdout);
  int c = accept4(l, NULL, NULL, SOCK_CLOEXEC | (use_epoll ? SOCK_NONBLOCK : 0));
  if (c < 0) die("accept");
  close(l);
  unlink(path);
  if (use_epoll) serve_epoll(c);
  else serve_blocking(c);
  close(c);
  return 0;
}
