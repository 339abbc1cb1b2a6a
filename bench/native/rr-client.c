/*
 * rr-client: round-trip latency of a 4-byte vfio-user REGION_READ.
 *
 * Connects to a UNIX stream socket, optionally performs the VERSION handshake, then sends
 * WARMUP + SAMPLES REGION_READ requests one at a time with blocking write()/read() and times
 * each round trip (write of the request .. last byte of the 36-byte reply) with
 * clock_gettime(CLOCK_MONOTONIC). Every reply is checked: same msg id and command, size 36,
 * flags = REPLY without ERROR, offset/region/count echoed.
 *
 * Output: a human-readable summary on stderr, one JSON line on stdout (ns):
 *   {"n":...,"median":...,"p90":...,"p99":...,"p999":...,"mean":...,"min":...,"max":...,"last":...}
 * and, with -o FILE, the samples in measurement order, one decimal ns value per line.
 *
 * usage: rr-client -s SOCKET [-V] [-w WARMUP] [-n SAMPLES] [-r REGION] [-a OFFSET] [-o FILE]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HDR 16
#define CMD_VERSION 1
#define CMD_REGION_READ 9
#define FLAG_TYPE_MASK 0xf
#define TYPE_REPLY 1
#define FLAG_ERROR 0x20
#define READ_COUNT 4
#define REQ_SIZE (HDR + 16)
#define REPLY_SIZE (HDR + 16 + READ_COUNT)

static const char VERSION_JSON[] = "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":1048576}}";

static void die(const char *what) {
  fprintf(stderr, "rr-client: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void fail(const char *msg) {
  fprintf(stderr, "rr-client: %s\n", msg);
  exit(3);
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static void write_all(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    p += n;
    len -= (size_t)n;
  }
}

static void read_all(int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    if (n == 0) fail("server closed the connection");
    p += n;
    len -= (size_t)n;
  }
}

static void header(uint8_t *h, uint16_t id, uint16_t cmd, uint32_t size) {
  put16(h, id);
  put16(h + 2, cmd);
  put32(h + 4, size);
  put32(h + 8, 0);  /* flags: command, reply wanted */
  put32(h + 12, 0); /* error */
}

static void check_header(const uint8_t *h, uint16_t id, uint16_t cmd) {
  uint32_t flags = get32(h + 8);
  if (get16(h) != id || get16(h + 2) != cmd) {
    fprintf(stderr, "rr-client: reply id %u cmd %u, expected id %u cmd %u\n", get16(h), get16(h + 2), id, cmd);
    exit(3);
  }
  if ((flags & FLAG_TYPE_MASK) != TYPE_REPLY || (flags & FLAG_ERROR)) {
    fprintf(stderr, "rr-client: reply to command %u has flags 0x%x, error %u\n", cmd, flags, get32(h + 12));
    exit(3);
  }
}

static void version(int fd) {
  uint8_t msg[HDR + 4 + sizeof VERSION_JSON];
  uint8_t buf[4096];
  uint32_t size = sizeof msg;
  header(msg, 0, CMD_VERSION, size);
  put16(msg + HDR, 0);     /* major */
  put16(msg + HDR + 2, 0); /* minor */
  memcpy(msg + HDR + 4, VERSION_JSON, sizeof VERSION_JSON); /* with its NUL */
  write_all(fd, msg, size);
  read_all(fd, buf, HDR);
  check_header(buf, 0, CMD_VERSION);
  uint32_t rsize = get32(buf + 4);
  if (rsize < HDR + 4 || rsize > sizeof buf) fail("VERSION reply has an implausible size");
  read_all(fd, buf + HDR, rsize - HDR);
  if (get16(buf + HDR) != 0 || get16(buf + HDR + 2) != 0) fail("VERSION reply is not 0.0");
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples. */
static uint64_t pct(const uint64_t *s, size_t n, double p) {
  size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return s[k - 1];
}

static unsigned long parse_num(const char *s, const char *what) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 0);
  if (errno || *end || end == s) {
    fprintf(stderr, "rr-client: bad %s: %s\n", what, s);
    exit(1);
  }
  return v;
}

int main(int argc, char **argv) {
  const char *path = NULL, *out = NULL;
  int handshake = 0, opt;
  unsigned long warmup = 2000, samples = 20000, region = 0;
  uint64_t offset = 0;
  while ((opt = getopt(argc, argv, "s:Vw:n:r:a:o:")) != -1) {
    switch (opt) {
      case 's': path = optarg; break;
      case 'V': handshake = 1; break;
      case 'w': warmup = parse_num(optarg, "warm-up count"); break;
      case 'n': samples = parse_num(optarg, "sample count"); break;
      case 'r': region = parse_num(optarg, "region"); break;
      case 'a': offset = parse_num(optarg, "offset"); break;
      case 'o': out = optarg; break;
      default:
        fprintf(stderr, "usage: %s -s SOCKET [-V] [-w WARMUP] [-n SAMPLES] [-r REGION] [-a OFFSET] [-o FILE]\n", argv[0]);
        return 1;
    }
  }
  if (!path || samples == 0) {
    fprintf(stderr, "rr-client: -s SOCKET is required and -n must be > 0\n");
    return 1;
  }

  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) fail("socket path too long");
  strcpy(sa.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
  if (handshake) version(fd);

  uint64_t *t = malloc(samples * sizeof *t);
  if (!t) die("malloc");
  uint8_t req[REQ_SIZE], rep[REPLY_SIZE];
  header(req, 0, CMD_REGION_READ, REQ_SIZE);
  put64(req + HDR, offset);
  put32(req + HDR + 8, (uint32_t)region);
  put32(req + HDR + 12, READ_COUNT);
  uint32_t last = 0;
  uint16_t id = 1;
  unsigned long total = warmup + samples;
  for (unsigned long i = 0; i < total; i++, id++) {
    put16(req, id);
    uint64_t t0 = now_ns();
    write_all(fd, req, REQ_SIZE);
    read_all(fd, rep, REPLY_SIZE);
    uint64_t t1 = now_ns();
    check_header(rep, id, CMD_REGION_READ);
    if (get32(rep + 4) != REPLY_SIZE || get64(rep + HDR) != offset || get32(rep + HDR + 8) != region ||
        get32(rep + HDR + 12) != READ_COUNT)
      fail("REGION_READ reply does not echo the request (size, offset, region or count)");
    last = get32(rep + HDR + 16);
    if (i >= warmup) t[i - warmup] = t1 - t0;
  }
  close(fd);

  if (out) {
    FILE *f = fopen(out, "w");
    if (!f) die(out);
    for (unsigned long i = 0; i < samples; i++) fprintf(f, "%" PRIu64 "\n", t[i]);
    if (fclose(f) != 0) die(out);
  }

  double sum = 0;
  for (unsigned long i = 0; i < samples; i++) sum += (double)t[i];
  qsort(t, samples, sizeof *t, cmp_u64);
  double mean = sum / (double)samples;
  uint64_t med = pct(t, samples, 50), p90 = pct(t, samples, 90), p99 = pct(t, samples, 99),
           p999 = pct(t, samples, 99.9);
  fprintf(stderr, "rr-client: %lu round trips: median %.2f us, p90 %.2f, p99 %.2f, p99.9 %.2f, mean %.2f (last value 0x%x)\n",
          samples, med / 1e3, p90 / 1e3, p99 / 1e3, p999 / 1e3, mean / 1e3, last);
  printf("{\"n\":%lu,\"median\":%" PRIu64 ",\"p90\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"p999\":%" PRIu64
         ",\"mean\":%.1f,\"min\":%" PRIu64 ",\"max\":%" PRIu64 ",\"last\":%u}\n",
         samples, med, p90, p99, p999, mean, t[0], t[samples - 1], last);
  free(t);
  return 0;
}
