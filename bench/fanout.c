/*
 * fanout.c - native client for fan-out (publish/subscribe) benchmarks over WebSocket.
 *
 * Opens N subscriber connections (GET /sub) and one publisher (GET /pub) to a server that
 * forwards every binary message the publisher sends, unchanged, as one binary message to
 * every subscriber.  Single thread, epoll, non-blocking sockets, TCP_NODELAY.
 *
 * Every message is `size` bytes: a little-endian sequence number, the publisher's send time
 * (CLOCK_MONOTONIC, ns) and filler derived from the sequence number.  Each subscriber checks
 * every message it gets: binary FIN frame, unmasked, right length and contents, and sequence
 * number exactly one more than the previous one -- so a gap, a duplicate or a reordering
 * anywhere fails the run (exit 2, the subscriber and sequence numbers printed).
 *
 * Flow control: at most `inflight` messages are outstanding, a message counting as done
 * once all N subscribers have it.  --inflight 1 measures latency with one message in
 * flight; a larger window measures throughput (deliveries per second).
 *
 * Phases: connect and upgrade everything; send a probe every 20 ms until every subscriber
 * has received one (the server may subscribe a connection a little after its upgrade);
 * then run with flow control; after --warmup seconds count deliveries and latencies
 * (receive time - send time) for --duration seconds.  With --markers, "window-start" and
 * "window-end" are printed on stdout at those moments (a driver samples the server's CPU
 * time there); the result is one JSON line (--json) or a text summary.
 *
 * Build: gcc -O2 -Wall -Wextra -o fanout fanout.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static int opt_subs = 1000;
static size_t opt_size = 64;
static int opt_inflight = 64;
static double opt_duration = 4.0;
static double opt_warmup = 1.0;
static int opt_json = 0;
static int opt_markers = 0;
static const char *opt_sub_path = "/sub";
static const char *opt_pub_path = "/pub";

#define HEAD 16          /* seq (8) + send time (8) */
#define RING (1u << 16)  /* completion counters; inflight must be below this */
#define LAT_SLOTS 2000000 /* latency histogram: 1 us slots up to 2 s */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static void fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (opt_json)
        printf("{\"errors\": 1, \"error\": \"%s\"}\n", msg);
    fprintf(stderr, "fanout: %s\n", msg);
    fflush(stdout);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "fanout: out of memory\n");
        exit(3);
    }
    return p;
}

/* ------------------------------------------------------------------ */
/* SHA-1 and base64, for Sec-WebSocket-Accept                          */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const uint8_t *msg, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u, 0xc3d2e1f0u};
    size_t total = ((len + 8) / 64 + 1) * 64;
    uint8_t *buf = xmalloc(total);
    memcpy(buf, msg, len);
    memset(buf + len, 0, total - len);
    buf[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) buf[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)buf[off + 4 * i] << 24 | (uint32_t)buf[off + 4 * i + 1] << 16 |
                   (uint32_t)buf[off + 4 * i + 2] << 8 | (uint32_t)buf[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5a827999u; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ed9eba1u; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8f1bbcdcu; }
            else { f = b ^ c ^ d; k = 0xca62c1d6u; }
            uint32_t t = rol32(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol32(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    free(buf);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

static void base64(const uint8_t *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = 0;
}

static void accept_for(const char *key, char out[29])
{
    char tmp[128];
    uint8_t dig[20];
    int n = snprintf(tmp, sizeof tmp, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    sha1((const uint8_t *)tmp, (size_t)n, dig);
    base64(dig, 20, out);
}

/* ------------------------------------------------------------------ */
/* messages                                                            */

static inline uint8_t filler(uint64_t seq, size_t i) { return (uint8_t)(seq * 131u + i * 7u); }

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* ------------------------------------------------------------------ */
/* connections                                                         */

typedef struct {
    int fd;
    int open;            /* upgrade response verified */
    char accept[29];     /* expected Sec-WebSocket-Accept */
    uint8_t *buf;        /* unparsed bytes (handshake response, then frames) */
    size_t len, cap;
    int64_t next;        /* expected next sequence number; -1 before the first */
} sub_t;

static sub_t *subs;
static int joined;       /* subscribers that got their first message */
static uint32_t *done_count; /* deliveries per sequence number, mod RING */
static uint64_t base_seq;    /* first message under flow control */
static uint64_t done_seq;    /* all messages below it are complete */
static int running;          /* flow-control phase */
static int counting;         /* inside the measured window */
static uint64_t deliveries, total_deliveries;
static uint32_t *lat_hist;
static uint64_t lat_over, lat_max_ns;

static void grow(sub_t *s, size_t need)
{
    if (s->cap >= need) return;
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < need) cap *= 2;
    uint8_t *b = realloc(s->buf, cap);
    if (!b) fail("out of memory");
    s->buf = b;
    s->cap = cap;
}

static int connect_to(void)
{
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)opt_port);
    if (inet_pton(AF_INET, opt_host, &sa.sin_addr) != 1) fail("bad host %s", opt_host);
    for (int attempt = 0;; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) fail("socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            return fd;
        }
        int err = errno;
        close(fd);
        if (attempt >= 50) fail("connect: %s", strerror(err));
        usleep(100000);
    }
}

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct timespec ts = {0, 50000};
                nanosleep(&ts, NULL);
                continue;
            }
            fail("send: %s", strerror(errno));
        }
        b += w;
        n -= (size_t)w;
    }
}

static void upgrade_request(int fd, const char *path, char accept[29])
{
    uint8_t raw[16];
    char key[32], req[512];
    for (int i = 0; i < 16; i++) raw[i] = (uint8_t)(rand() & 0xff);
    base64(raw, 16, key);
    accept_for(key, accept);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, opt_host, opt_port, key);
    send_all(fd, req, (size_t)n);
}

/* Checks a complete upgrade response in s->buf; returns the header length. */
static size_t check_upgrade(sub_t *s, int idx)
{
    uint8_t *end = memmem(s->buf, s->len, "\r\n\r\n", 4);
    if (!end) {
        if (s->len > 8192) fail("conn %d: upgrade response too long", idx);
        return 0;
    }
    size_t hlen = (size_t)(end - s->buf) + 4;
    char *head = strndup((char *)s->buf, hlen);
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) fail("conn %d: no 101: %.60s", idx, head);
    char *acc = strcasestr(head, "\r\nSec-WebSocket-Accept:");
    if (!acc) fail("conn %d: no Sec-WebSocket-Accept", idx);
    acc += 23;
    while (*acc == ' ') acc++;
    if (strncmp(acc, s->accept, 28) != 0) fail("conn %d: bad Sec-WebSocket-Accept", idx);
    free(head);
    return hlen;
}

static void delivered(int idx, const uint8_t *p, size_t n, uint64_t now)
{
    sub_t *s = &subs[idx];
    if (n != opt_size) fail("sub %d: message of %zu bytes, want %zu", idx, n, opt_size);
    uint64_t seq = get64(p);
    for (size_t i = HEAD; i < n; i++)
        if (p[i] != filler(seq, i)) fail("sub %d: message %llu corrupt at byte %zu", idx,
                                         (unsigned long long)seq, i);
    if (s->next < 0) {
        joined++;
    } else if ((int64_t)seq != s->next) {
        fail("sub %d: got message %llu, expected %lld (%s)", idx, (unsigned long long)seq,
             (long long)s->next, (int64_t)seq < s->next ? "duplicate or reordered" : "gap");
    }
    s->next = (int64_t)seq + 1;
    total_deliveries++;
    if (running && seq >= base_seq) {
        uint32_t *c = &done_count[seq % RING];
        ++*c;
        while (done_count[done_seq % RING] == (uint32_t)opt_subs) {
            done_count[done_seq % RING] = 0;
            done_seq++;
        }
    }
    if (counting) {
        deliveries++;
        uint64_t lat = now - get64(p + 8);
        uint64_t us = lat / 1000;
        if (us < LAT_SLOTS) lat_hist[us]++;
        else lat_over++;
        if (lat > lat_max_ns) lat_max_ns = lat;
    }
}

/* Parses whole frames out of s->buf. */
static void parse_frames(int idx, uint64_t now)
{
    sub_t *s = &subs[idx];
    size_t pos = 0;
    while (s->len - pos >= 2) {
        uint8_t *f = s->buf + pos;
        uint8_t b0 = f[0], b1 = f[1];
        size_t h = 2, n = b1 & 0x7f;
        if (b1 & 0x80) fail("sub %d: masked frame from the server", idx);
        if (n == 126) {
            if (s->len - pos < 4) break;
            n = (size_t)f[2] << 8 | f[3];
            h = 4;
        } else if (n == 127) {
            if (s->len - pos < 10) break;
            n = (size_t)get64(f + 2);
            n = __builtin_bswap64(n);
            h = 10;
        }
        if (s->len - pos < h + n) break;
        if (b0 == 0x82) {
            delivered(idx, f + h, n, now);
        } else if (b0 == 0x89 || b0 == 0x8a) {
            /* ping/pong: nothing to check (pings are not answered; runs are short) */
        } else if (b0 == 0x88) {
            fail("sub %d: the server closed the WebSocket", idx);
        } else {
            fail("sub %d: unexpected frame byte 0x%02x", idx, b0);
        }
        pos += h + n;
    }
    if (pos) {
        memmove(s->buf, s->buf + pos, s->len - pos);
        s->len -= pos;
    }
}

static void on_readable(int idx, uint64_t now)
{
    sub_t *s = &subs[idx];
    for (;;) {
        grow(s, s->len + 65536);
        ssize_t r = recv(s->fd, s->buf + s->len, s->cap - s->len, 0);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            fail("sub %d: recv: %s", idx, strerror(errno));
        }
        if (r == 0) fail("sub %d: the server closed the connection", idx);
        s->len += (size_t)r;
        if (!s->open) {
            size_t hlen = check_upgrade(s, idx);
            if (!hlen) continue;
            memmove(s->buf, s->buf + hlen, s->len - hlen);
            s->len -= hlen;
            s->open = 1;
        }
        parse_frames(idx, now);
        if ((size_t)r < 65536) return;
    }
}

/* ------------------------------------------------------------------ */
/* publisher                                                           */

static int pub_fd;
static uint8_t *pub_out;
static size_t pub_len, pub_cap;
static uint64_t pub_seq;

static void publish(void)
{
    size_t hdr = opt_size < 126 ? 2 : 4;
    size_t flen = hdr + 4 + opt_size;
    if (pub_len + flen > pub_cap) {
        pub_cap = (pub_len + flen) * 2;
        pub_out = realloc(pub_out, pub_cap);
        if (!pub_out) fail("out of memory");
    }
    uint8_t *f = pub_out + pub_len;
    f[0] = 0x82;
    if (hdr == 2) {
        f[1] = (uint8_t)(0x80 | opt_size);
    } else {
        f[1] = 0x80 | 126;
        f[2] = (uint8_t)(opt_size >> 8);
        f[3] = (uint8_t)opt_size;
    }
    uint8_t mask[4];
    uint32_t m = (uint32_t)rand();
    memcpy(mask, &m, 4);
    memcpy(f + hdr, mask, 4);
    uint8_t *p = f + hdr + 4;
    put64(p, pub_seq);
    put64(p + 8, now_ns());
    for (size_t i = HEAD; i < opt_size; i++) p[i] = filler(pub_seq, i);
    for (size_t i = 0; i < opt_size; i++) p[i] ^= mask[i & 3];
    pub_len += flen;
    pub_seq++;
}

static void flush_publisher(void)
{
    while (pub_len) {
        ssize_t w = send(pub_fd, pub_out, pub_len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            fail("publisher: send: %s", strerror(errno));
        }
        memmove(pub_out, pub_out + w, pub_len - (size_t)w);
        pub_len -= (size_t)w;
    }
}

/* ------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: fanout --port P [--host H] [--subs N] [--size B] [--inflight K]\n"
            "              [--duration S] [--warmup S] [--json] [--markers]\n"
            "              [--sub-path /sub] [--pub-path /pub]\n");
    exit(1);
}

static void on_alarm(int sig)
{
    (void)sig;
    fail("watchdog: the run did not finish in time");
}

int main(int argc, char **argv)
{
    static struct option opts[] = {
        {"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},     {"subs", 1, 0, 'n'},
        {"size", 1, 0, 's'},     {"inflight", 1, 0, 'k'}, {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'w'},   {"json", 0, 0, 'j'},     {"markers", 0, 0, 'm'},
        {"sub-path", 1, 0, 'S'}, {"pub-path", 1, 0, 'P'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'h': opt_host = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 'n': opt_subs = atoi(optarg); break;
        case 's': opt_size = (size_t)atol(optarg); break;
        case 'k': opt_inflight = atoi(optarg); break;
        case 'd': opt_duration = atof(optarg); break;
        case 'w': opt_warmup = atof(optarg); break;
        case 'j': opt_json = 1; break;
        case 'm': opt_markers = 1; break;
        case 'S': opt_sub_path = optarg; break;
        case 'P': opt_pub_path = optarg; break;
        default: usage();
        }
    }
    if (!opt_port || opt_subs < 1 || opt_size < HEAD + 8 || opt_size > 65535 ||
        opt_inflight < 1 || opt_inflight >= (int)RING)
        usage();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)(opt_warmup + opt_duration) + 180);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    srand((unsigned)now_ns());

    subs = calloc((size_t)opt_subs, sizeof *subs);
    done_count = calloc(RING, sizeof *done_count);
    lat_hist = calloc(LAT_SLOTS, sizeof *lat_hist);
    if (!subs || !done_count || !lat_hist) fail("out of memory");
    int ep = epoll_create1(0);

    /* Subscribers: connect and send the upgrade; the responses are read in the loop. */
    for (int i = 0; i < opt_subs; i++) {
        sub_t *s = &subs[i];
        s->fd = connect_to();
        s->next = -1;
        upgrade_request(s->fd, opt_sub_path, s->accept);
        fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    }
    /* The publisher: upgrade synchronously, then non-blocking. */
    pub_fd = connect_to();
    {
        char accept[29];
        sub_t tmp = {0};
        upgrade_request(pub_fd, opt_pub_path, tmp.accept);
        memcpy(accept, tmp.accept, sizeof accept);
        size_t hlen = 0;
        while (!hlen) {
            grow(&tmp, tmp.len + 4096);
            ssize_t r = recv(pub_fd, tmp.buf + tmp.len, tmp.cap - tmp.len, 0);
            if (r <= 0) fail("publisher: upgrade failed");
            tmp.len += (size_t)r;
            hlen = check_upgrade(&tmp, -1);
        }
        free(tmp.buf);
        fcntl(pub_fd, F_SETFL, fcntl(pub_fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
        epoll_ctl(ep, EPOLL_CTL_ADD, pub_fd, &ev);
    }

    struct epoll_event *evs = xmalloc(sizeof *evs * 1024);
    uint64_t t_probe = 0, t_run = 0, t_start = 0, t_end = 0;
    uint64_t published_in_window = 0, pub_at_start = 0;
    double cpu0 = 0, cpu1 = 0;
    uint64_t warm_ns = (uint64_t)(opt_warmup * 1e9), dur_ns = (uint64_t)(opt_duration * 1e9);
    uint64_t t_begin = now_ns();
    for (;;) {
        uint64_t now = now_ns();
        if (!running) {
            if (joined == opt_subs) {
                running = 1;
                base_seq = done_seq = pub_seq;
                t_run = now;
            } else if (now - t_probe > 20000000ull) {
                if (now - t_begin > 120000000000ull)
                    fail("only %d of %d subscribers got a message in 120 s", joined, opt_subs);
                publish();
                t_probe = now;
            }
        }
        if (running) {
            if (!counting && !t_end && now - t_run >= warm_ns) {
                counting = 1;
                t_start = now;
                pub_at_start = pub_seq;
                cpu0 = cpu_s();
                if (opt_markers) { printf("window-start\n"); fflush(stdout); }
            }
            if (counting && now - t_start >= dur_ns) {
                counting = 0;
                t_end = now;
                cpu1 = cpu_s();
                published_in_window = pub_seq - pub_at_start;
                if (opt_markers) { printf("window-end\n"); fflush(stdout); }
                break;
            }
            while (pub_seq - done_seq < (uint64_t)opt_inflight && pub_len < 65536) publish();
        }
        flush_publisher();
        int n = epoll_wait(ep, evs, 1024, running ? 5 : 2);
        now = now_ns();
        for (int i = 0; i < n; i++) {
            uint32_t idx = evs[i].data.u32;
            if (idx == UINT32_MAX) {
                char junk[4096];
                ssize_t r = recv(pub_fd, junk, sizeof junk, 0);
                if (r == 0) fail("publisher: the server closed the connection");
                continue;
            }
            on_readable((int)idx, now);
        }
    }
    double wall = (double)(t_end - t_start) / 1e9;
    uint64_t counted = 0, p50 = 0, p99 = 0, p999 = 0;
    for (uint64_t us = 0; us < LAT_SLOTS; us++) {
        counted += lat_hist[us];
        if (!p50 && counted * 2 >= deliveries) p50 = us + 1;
        if (!p99 && counted * 100 >= deliveries * 99) p99 = us + 1;
        if (!p999 && counted * 1000 >= deliveries * 999) p999 = us + 1;
    }
    if (!p99) p99 = LAT_SLOTS;
    if (!p999) p999 = LAT_SLOTS;
    double rate = deliveries / wall;
    if (opt_json) {
        printf("{\"errors\": 0, \"subs\": %d, \"size\": %zu, \"inflight\": %d, "
               "\"deliveries\": %llu, \"deliveries_per_s\": %.1f, \"published\": %llu, "
               "\"lat_p50_us\": %llu, \"lat_p99_us\": %llu, \"lat_p999_us\": %llu, "
               "\"lat_max_us\": %.1f, \"client_cpu\": %.4f, \"window_s\": %.4f, "
               "\"total_deliveries\": %llu}\n",
               opt_subs, opt_size, opt_inflight, (unsigned long long)deliveries, rate,
               (unsigned long long)published_in_window, (unsigned long long)p50,
               (unsigned long long)p99, (unsigned long long)p999, lat_max_ns / 1e3,
               (cpu1 - cpu0) / wall, wall, (unsigned long long)total_deliveries);
    } else {
        printf("%d subscribers, %zu B, %d in flight: %.0f deliveries/s (%llu in %.2f s), "
               "%llu published; latency p50 %llu us, p99 %llu us, p99.9 %llu us, max %.0f us;"
               " client CPU %.0f%%\n",
               opt_subs, opt_size, opt_inflight, rate, (unsigned long long)deliveries, wall,
               (unsigned long long)published_in_window, (unsigned long long)p50,
               (unsigned long long)p99, (unsigned long long)p999, lat_max_ns / 1e3,
               100 * (cpu1 - cpu0) / wall);
    }
    fflush(stdout);
    return 0;
}
