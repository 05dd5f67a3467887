/*
 * loadgen.c - closed-loop load generator for echo servers.
 *
 * Single thread, epoll, non-blocking sockets, TCP_NODELAY (TCP), or a Unix
 * domain socket with --unix PATH (@NAME: Linux's abstract namespace).
 *
 * Each connection keeps K messages in flight.  Every echoed message is
 * verified byte for byte against what was sent; message contents differ per
 * message (an 8-byte connection/sequence tag followed by a slice of a random
 * buffer chosen by a hash of the tag), so a lost, duplicated, reordered or
 * corrupted echo is detected.  Any mismatch is reported with the connection
 * and offset, and the program exits non-zero.
 *
 * Modes:
 *   raw      the message is `size` bytes; the server echoes the byte stream.
 *   pbframe  the message is a gev-protobuf frame:
 *              u32 BE length (= 2 + len(type) + len(payload))
 *              u16 BE type length, type name "bench.Echo", payload
 *            and the server echoes the frame unchanged.
 *   ws       HTTP/1.1 WebSocket upgrade (the Sec-WebSocket-Accept value is
 *            checked), then masked binary frames with `size` payload bytes;
 *            the server must echo the payload in unmasked binary frames
 *            (fragmented echoes are accepted).
 *   hold     open N connections and keep them idle for `duration` seconds
 *            (for measuring server memory per connection).  With --size > 0
 *            each connection first does one verified echo round trip, so
 *            "held N" on stdout means the server really serves all N.
 *            --hold-proto raw|ws|pbframe picks the protocol for that.
 *
 * TLS (--tls): every mode above over TLS, with OpenSSL (libssl-dev): a
 * non-blocking handshake after connect (TLS 1.3 unless --tls-version 1.2),
 * the server verified against --tls-ca when given, then the same messages
 * through SSL_write/SSL_read, verified the same way.
 *
 * --latency records every round trip completed inside the measured window
 * (from the moment a message is queued for sending to the moment its echo
 * has fully arrived and been verified) in a log-linear histogram: exact
 * below 128 ns, then 64 buckets per power of two (under 1.6 % relative
 * error), and reports p50/p90/p99/p99.9/max/mean.  It costs one
 * clock_gettime() per message sent and one per message received.
 *
 * Build: gcc -O2 -Wall -Wextra -o loadgen loadgen.c
 *        gcc -O2 -Wall -Wextra -DWITH_TLS -o loadgen loadgen.c -lssl -lcrypto
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
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

/* ------------------------------------------------------------------ */
/* options                                                             */

enum { MODE_RAW, MODE_WS, MODE_PBFRAME, MODE_HOLD };

static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static const char *opt_unix = NULL;  /* connect to this Unix socket instead */
static int opt_conns = 50;
static size_t opt_size = 64;
static int opt_inflight = 1;
static double opt_duration = 4.0;
static double opt_warmup = 1.0;
static int opt_mode = MODE_RAW;
static int opt_proto = MODE_RAW;       /* protocol actually spoken */
static int opt_json = 0;
static int opt_markers = 0;
static int opt_latency = 0;
static double opt_connect_timeout = 30.0;
static int opt_tls = 0;
static const char *opt_tls_ca = NULL;          /* verify the server against this PEM */
static const char *opt_tls_servername = "localhost";
static int opt_tls_version = 13;
static int opt_connect_batch = 256;
static uint64_t opt_seed = 0x5eed1234abcdULL;

#define PB_TYPE "bench.Echo"
#define PB_TYPE_LEN 10
#define PB_PREFIX_LEN (4 + 2 + PB_TYPE_LEN)

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng_next(void)
{
    /* xorshift64* */
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static uint64_t mix64(uint64_t z)
{
    /* splitmix64 finaliser */
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "loadgen: out of memory (%zu bytes)\n", n);
        exit(3);
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fprintf(stderr, "loadgen: out of memory (%zu bytes)\n", n);
        exit(3);
    }
    return p;
}

/* ------------------------------------------------------------------ */
/* SHA-1 and base64 (for the WebSocket handshake)                      */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const uint8_t *msg, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u,
                     0xc3d2e1f0u};
    size_t total = ((len + 8) / 64 + 1) * 64;
    uint8_t *buf = xmalloc(total);
    memcpy(buf, msg, len);
    memset(buf + len, 0, total - len);
    buf[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        buf[total - 1 - i] = (uint8_t)(bits >> (8 * i));

    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)buf[off + 4 * i] << 24 |
                   (uint32_t)buf[off + 4 * i + 1] << 16 |
                   (uint32_t)buf[off + 4 * i + 2] << 8 |
                   (uint32_t)buf[off + 4 * i + 3];
        for (int i = 16; i < 80; i++)
            w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) {
                f = (b & c) | (~b & d);
                k = 0x5a827999u;
            } else if (i < 40) {
                f = b ^ c ^ d;
                k = 0x6ed9eba1u;
            } else if (i < 60) {
                f = (b & c) | (b & d) | (c & d);
                k = 0x8f1bbcdcu;
            } else {
                f = b ^ c ^ d;
                k = 0xca62c1d6u;
            }
            uint32_t t = rol32(a, 5) + f + e + k + w[i];
            e = d;
            d = c;
            c = rol32(b, 30);
            b = a;
            a = t;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
    }
    free(buf);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t)(h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(h[i] >> 8);
        out[4 * i + 3] = (uint8_t)h[i];
    }
}

/* writes a NUL-terminated base64 string; out needs 4*ceil(n/3)+1 bytes */
static void base64(const uint8_t *in, size_t n, char *out)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = 0;
}

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static void ws_accept_for(const char *key, char out[29])
{
    char tmp[128];
    uint8_t dig[20];
    int n = snprintf(tmp, sizeof tmp, "%s%s", key, WS_GUID);
    sha1((const uint8_t *)tmp, (size_t)n, dig);
    base64(dig, 20, out);
}

static int hist_selftest(void);

static int selftest(void)
{
    char acc[29];
    uint8_t dig[20];
    char hex[41];
    int bad = 0;
    sha1((const uint8_t *)"abc", 3, dig);
    for (int i = 0; i < 20; i++) sprintf(hex + 2 * i, "%02x", dig[i]);
    if (strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d") != 0) {
        fprintf(stderr, "sha1(abc) wrong: %s\n", hex);
        bad = 1;
    }
    /* 56-byte message: padding crosses a block boundary */
    const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha1((const uint8_t *)m2, strlen(m2), dig);
    for (int i = 0; i < 20; i++) sprintf(hex + 2 * i, "%02x", dig[i]);
    if (strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1") != 0) {
        fprintf(stderr, "sha1(m2) wrong: %s\n", hex);
        bad = 1;
    }
    ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", acc); /* RFC 6455 example */
    if (strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0) {
        fprintf(stderr, "ws accept wrong: %s\n", acc);
        bad = 1;
    }
    bad |= hist_selftest();
    printf("selftest %s\n", bad ? "FAILED" : "ok");
    return bad;
}

/* ------------------------------------------------------------------ */
/* message contents                                                    */

#define RAND_SPAN (1u << 20)
static uint8_t *randbuf;      /* RAND_SPAN + opt_size bytes */
static uint8_t pb_prefix[PB_PREFIX_LEN];

static void init_content(void)
{
    size_t n = RAND_SPAN + opt_size + 8;
    randbuf = xmalloc(n);
    uint64_t s = opt_seed;
    for (size_t i = 0; i < n; i++) {
        if ((i & 7) == 0) s = mix64(s);
        randbuf[i] = (uint8_t)(s >> (8 * (i & 7)));
    }
    uint32_t flen = (uint32_t)(2 + PB_TYPE_LEN + opt_size);
    pb_prefix[0] = (uint8_t)(flen >> 24);
    pb_prefix[1] = (uint8_t)(flen >> 16);
    pb_prefix[2] = (uint8_t)(flen >> 8);
    pb_prefix[3] = (uint8_t)flen;
    pb_prefix[4] = 0;
    pb_prefix[5] = PB_TYPE_LEN;
    memcpy(pb_prefix + 6, PB_TYPE, PB_TYPE_LEN);
}

/* The payload of message `seq` on connection `ci`:
 *   bytes [0, 8)  little-endian tag ((ci + 1) << 32 | seq), truncated to size
 *   bytes [8, n)  randbuf[off + j] with off = hash(tag) mod RAND_SPAN */
static inline uint64_t msg_tag(uint32_t ci, uint64_t seq)
{
    return ((uint64_t)(ci + 1) << 32) ^ (seq & 0xffffffffu);
}

static inline const uint8_t *msg_body(uint64_t tag)
{
    return randbuf + (mix64(tag ^ opt_seed) & (RAND_SPAN - 1));
}

static void gen_payload(uint32_t ci, uint64_t seq, uint8_t *dst)
{
    uint64_t tag = msg_tag(ci, seq);
    const uint8_t *body = msg_body(tag);
    size_t head = opt_size < 8 ? opt_size : 8;
    for (size_t j = 0; j < head; j++) dst[j] = (uint8_t)(tag >> (8 * j));
    if (opt_size > 8) memcpy(dst + 8, body + 8, opt_size - 8);
}

/* Compares data[0..n) with payload bytes [off, off+n) of message seq.
 * Returns -1 when equal, else the index (within data) of the first mismatch. */
static long verify_payload(uint32_t ci, uint64_t seq, size_t off,
                           const uint8_t *data, size_t n)
{
    uint64_t tag = msg_tag(ci, seq);
    size_t i = 0;
    while (i < n && off + i < 8) {
        if (data[i] != (uint8_t)(tag >> (8 * (off + i)))) return (long)i;
        i++;
    }
    if (i < n) {
        const uint8_t *exp = msg_body(tag) + off + i;
        if (memcmp(data + i, exp, n - i) != 0) {
            for (size_t k = i; k < n; k++)
                if (data[k] != exp[k - i]) return (long)k;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* connections                                                         */

enum {
    ST_WAIT,        /* waiting to (re)connect */
    ST_CONNECTING,  /* non-blocking connect in progress */
    ST_HANDSHAKE,   /* ws: upgrade request sent, reading response */
    ST_READY,       /* connected (and upgraded); traffic not started */
    ST_RUNNING,     /* messages flowing */
    ST_IDLE,        /* hold mode: done, idle */
    ST_TLS,         /* TLS handshake in progress */
};

typedef struct {
    int fd;
    int state;
    int want_out;           /* EPOLLOUT currently registered */
    int retries;
    double retry_at;
    double backoff;
    /* outgoing bytes not yet written */
    uint8_t *out;
    size_t out_len, out_head, out_cap;
    /* sequencing */
    uint64_t tx_seq;        /* next message to send */
    uint64_t rx_seq;        /* next message expected */
    uint64_t done_window;   /* messages completed inside the window */
    double *sent;           /* --latency: send time of message seq, at [seq % inflight] */
    size_t rx_off;          /* raw/pb: offset in current message */
    /* ws receive state */
    uint8_t hdr[14];
    int hdr_have, hdr_need;
    uint64_t frame_left;    /* payload bytes left in current frame */
    int frame_op, frame_fin;
    int msg_open;           /* a data message has started (fragments) */
    size_t msg_off;         /* payload bytes of current message so far */
    uint8_t ctl[125];       /* control frame payload */
    size_t ctl_len;
    /* ws handshake */
    char ws_accept[29];
    char *hs_buf;
    void *ssl;              /* SSL * with --tls */
    size_t hs_len;
} conn_t;

static conn_t *conns;
static int epfd = -1;
static struct sockaddr_storage srv_addr;
static socklen_t srv_addr_len;
static int n_connected;     /* connections that reached READY or later */
static int n_connecting;    /* connects in progress */
static int n_idle;          /* hold mode: connections done with their echo */
static int counting;        /* inside measured window */
static uint64_t window_msgs;
static uint64_t total_msgs;

static void emit_failure_json(const char *msg);

static void fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "loadgen: ERROR: %s\n", msg);
    if (opt_json) emit_failure_json(msg);
    exit(2);
}

static void ep_set(conn_t *c, uint32_t ci, int want_out)
{
    struct epoll_event ev;
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
    ev.data.u32 = ci;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        fail("epoll_ctl MOD conn %u: %s", ci, strerror(errno));
    c->want_out = want_out;
}

static void out_reserve(conn_t *c, size_t extra)
{
    if (c->out_head > 0 && c->out_head == c->out_len) {
        c->out_head = c->out_len = 0;
    }
    if (c->out_len + extra <= c->out_cap) return;
    if (c->out_head > 0) {
        memmove(c->out, c->out + c->out_head, c->out_len - c->out_head);
        c->out_len -= c->out_head;
        c->out_head = 0;
        if (c->out_len + extra <= c->out_cap) return;
    }
    size_t cap = c->out_cap ? c->out_cap : 256;
    while (cap < c->out_len + extra) cap *= 2;
    c->out = xrealloc(c->out, cap);
    c->out_cap = cap;
}

#ifdef WITH_TLS
static SSL_CTX *tls_ctx;

static const char *tls_errors(void)
{
    static char msg[256];
    unsigned long e = ERR_get_error();
    if (!e) return "no OpenSSL error queued";
    ERR_error_string_n(e, msg, sizeof msg);
    ERR_clear_error();
    return msg;
}
#endif

/* send(), or SSL_write() with --tls: > 0 bytes taken, -1 with errno EAGAIN
 * when it must wait (for readability too, which is always watched). */
static ssize_t io_send(conn_t *c, uint32_t ci, const uint8_t *p, size_t n)
{
#ifdef WITH_TLS
    if (c->ssl) {
        int r = SSL_write((SSL *)c->ssl, p, (int)(n > (1u << 30) ? (1u << 30) : n));
        if (r > 0) return r;
        int e = SSL_get_error((SSL *)c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            errno = EAGAIN;
            return -1;
        }
        fail("conn %u: SSL_write: error %d: %s", ci, e, tls_errors());
    }
#else
    (void)ci;
#endif
    return send(c->fd, p, n, MSG_NOSIGNAL);
}

/* Writes as much pending output as the socket takes; registers EPOLLOUT
 * interest while something is left. */
static void flush_out(conn_t *c, uint32_t ci)
{
    while (c->out_head < c->out_len) {
        ssize_t n = io_send(c, ci, c->out + c->out_head, c->out_len - c->out_head);
        if (n > 0) {
            c->out_head += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        fail("conn %u: send: %s", ci, n < 0 ? strerror(errno) : "returned 0");
    }
    int pending = c->out_head < c->out_len;
    if (pending != c->want_out) ep_set(c, ci, pending);
    if (!pending) c->out_head = c->out_len = 0;
}

static void queue_ws_frame(conn_t *c, int opcode, const uint8_t *payload,
                           size_t len)
{
    out_reserve(c, len + 14);
    uint8_t *p = c->out + c->out_len;
    size_t h = 0;
    p[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        p[h++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        p[h++] = 0x80 | 126;
        p[h++] = (uint8_t)(len >> 8);
        p[h++] = (uint8_t)len;
    } else {
        p[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) p[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t m32 = (uint32_t)rng_next();
    uint8_t mask[4];
    memcpy(mask, &m32, 4);
    memcpy(p + h, mask, 4);
    h += 4;
    uint8_t *d = p + h;
    size_t i = 0;
    uint64_t m64;
    memcpy(&m64, mask, 4);
    memcpy((uint8_t *)&m64 + 4, mask, 4);
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, payload + i, 8);
        v ^= m64;
        memcpy(d + i, &v, 8);
    }
    for (; i < len; i++) d[i] = payload[i] ^ mask[i & 3];
    c->out_len += h + len;
}

/* ------------------------------------------------------------------ */
/* latency histogram (--latency)                                       */

#define HIST_BUCKETS (64 * 64)
static uint64_t hist[HIST_BUCKETS];
static uint64_t hist_count;
static uint64_t hist_max_ns;
static double hist_sum_ns;

/* Log-linear: v < 128 exactly; above, the 7 leading bits of v (64..127)
 * select one of 64 buckets per power of two. */
static int hist_index(uint64_t v)
{
    if (v < 128) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    return shift * 64 + (int)(v >> shift);
}

/* Lower bound and width of bucket i, in ns. */
static void hist_bucket(int i, double *lo, double *width)
{
    if (i < 128) {
        *lo = i;
        *width = 1;
        return;
    }
    int shift = i / 64 - 1;
    uint64_t m = (uint64_t)(i - shift * 64);
    *lo = (double)(m << shift);
    *width = (double)((uint64_t)1 << shift);
}

static void hist_add(double seconds)
{
    uint64_t ns = seconds > 0 ? (uint64_t)(seconds * 1e9 + 0.5) : 0;
    int i = hist_index(ns);
    if (i >= HIST_BUCKETS) i = HIST_BUCKETS - 1;
    hist[i]++;
    hist_count++;
    hist_sum_ns += (double)ns;
    if (ns > hist_max_ns) hist_max_ns = ns;
}

/* The q-quantile (0 < q <= 1) in microseconds: the middle of the bucket
 * holding the ceil(q * count)-th smallest round trip. */
static double hist_quantile_us(double q)
{
    if (hist_count == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)hist_count);
    if ((double)rank < q * (double)hist_count) rank++;
    if (rank == 0) rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank) {
            double lo, width;
            hist_bucket(i, &lo, &width);
            double mid = lo + (width - 1) / 2;
            if (mid > (double)hist_max_ns) mid = (double)hist_max_ns;
            return mid / 1e3;
        }
    }
    return (double)hist_max_ns / 1e3;
}

/* Every value falls in its bucket; quantiles of 1..N us come out within
 * the bucket precision. */
static int hist_selftest(void)
{
    int bad = 0;
    uint64_t probes[] = {0, 1, 127, 128, 129, 255, 256, 1000, 65535, 65536,
                         999999, 123456789, 60000000000ULL};
    for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++) {
        double lo, width;
        int i = hist_index(probes[k]);
        hist_bucket(i, &lo, &width);
        if ((double)probes[k] < lo || (double)probes[k] >= lo + width ||
            width > 1 + (double)probes[k] / 64) {
            fprintf(stderr, "histogram: %llu in bucket %d [%.0f, +%.0f)\n",
                    (unsigned long long)probes[k], i, lo, width);
            bad = 1;
        }
    }
    for (int v = 1; v <= 100000; v++) hist_add((double)v * 1e-6);
    double want[] = {0.50, 50000, 0.99, 99000, 0.999, 99900};
    for (int k = 0; k < 6; k += 2) {
        double got = hist_quantile_us(want[k]);
        if (got < want[k + 1] * 0.98 || got > want[k + 1] * 1.02) {
            fprintf(stderr, "histogram: q%.3f = %.1f us, want about %.0f\n", want[k], got,
                    want[k + 1]);
            bad = 1;
        }
    }
    if (hist_count != 100000 || hist_max_ns != 100000000ULL) {
        fprintf(stderr, "histogram: count %llu max %llu\n", (unsigned long long)hist_count,
                (unsigned long long)hist_max_ns);
        bad = 1;
    }
    memset(hist, 0, sizeof hist);
    hist_count = hist_max_ns = 0;
    hist_sum_ns = 0;
    return bad;
}

static uint8_t *scratch;   /* opt_size bytes */

/* Appends message c->tx_seq to the output buffer (does not flush). */
static void queue_message(conn_t *c, uint32_t ci)
{
    uint64_t seq = c->tx_seq++;
    if (opt_latency) c->sent[seq % (uint64_t)opt_inflight] = now_s();
    if (opt_proto == MODE_WS) {
        gen_payload(ci, seq, scratch);
        queue_ws_frame(c, 2, scratch, opt_size);
        return;
    }
    size_t pre = opt_proto == MODE_PBFRAME ? PB_PREFIX_LEN : 0;
    out_reserve(c, pre + opt_size);
    if (pre) memcpy(c->out + c->out_len, pb_prefix, pre);
    gen_payload(ci, seq, c->out + c->out_len + pre);
    c->out_len += pre + opt_size;
}

static void message_done(conn_t *c, uint32_t ci)
{
    if (opt_latency && counting)
        hist_add(now_s() - c->sent[c->rx_seq % (uint64_t)opt_inflight]);
    c->rx_seq++;
    total_msgs++;
    if (counting) {
        window_msgs++;
        c->done_window++;
    }
    if (opt_mode == MODE_HOLD) {
        c->state = ST_IDLE;
        n_idle++;
        return;
    }
    queue_message(c, ci);
}

/* raw / pbframe receive */
static void rx_stream(conn_t *c, uint32_t ci, const uint8_t *d, size_t n)
{
    size_t pre = opt_proto == MODE_PBFRAME ? PB_PREFIX_LEN : 0;
    size_t mlen = pre + opt_size;
    while (n > 0) {
        if (c->rx_seq >= c->tx_seq)
            fail("conn %u: received %zu unexpected bytes (nothing in flight, "
                 "message %llu)", ci, n, (unsigned long long)c->rx_seq);
        size_t take = mlen - c->rx_off;
        if (take > n) take = n;
        size_t i = 0;
        for (; i < take && c->rx_off + i < pre; i++) {
            if (d[i] != pb_prefix[c->rx_off + i])
                fail("conn %u: message %llu: frame header mismatch at offset "
                     "%zu: got 0x%02x want 0x%02x", ci,
                     (unsigned long long)c->rx_seq, c->rx_off + i, d[i],
                     pb_prefix[c->rx_off + i]);
        }
        if (i < take) {
            size_t poff = c->rx_off + i - pre;
            long bad = verify_payload(ci, c->rx_seq, poff, d + i, take - i);
            if (bad >= 0)
                fail("conn %u: message %llu: payload mismatch at message "
                     "offset %zu", ci, (unsigned long long)c->rx_seq,
                     c->rx_off + i + (size_t)bad);
        }
        c->rx_off += take;
        d += take;
        n -= take;
        if (c->rx_off == mlen) {
            c->rx_off = 0;
            message_done(c, ci);
        }
    }
}

static void ws_frame_end(conn_t *c, uint32_t ci)
{
    if (c->frame_op >= 8) {
        if (c->frame_op == 8)
            fail("conn %u: server sent WebSocket close frame", ci);
        if (c->frame_op == 9) queue_ws_frame(c, 10, c->ctl, c->ctl_len);
        /* pong: ignored */
    } else if (c->frame_fin) {
        if (c->msg_off != opt_size)
            fail("conn %u: message %llu: echoed WebSocket message has %zu "
                 "bytes, want %zu", ci, (unsigned long long)c->rx_seq,
                 c->msg_off, opt_size);
        c->msg_open = 0;
        c->msg_off = 0;
        message_done(c, ci);
    }
    c->hdr_have = 0;
    c->hdr_need = 2;
}

static void ws_header_done(conn_t *c, uint32_t ci)
{
    uint8_t b0 = c->hdr[0], b1 = c->hdr[1];
    int op = b0 & 0x0f;
    if (b0 & 0x70) fail("conn %u: RSV bits set in server frame (0x%02x)", ci, b0);
    if (b1 & 0x80) fail("conn %u: server frame is masked", ci);
    uint64_t len = b1 & 0x7f;
    if (len == 126)
        len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
    else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | c->hdr[2 + i];
    }
    c->frame_op = op;
    c->frame_fin = (b0 & 0x80) != 0;
    c->frame_left = len;
    if (op >= 8) {
        if (!c->frame_fin || len > 125)
            fail("conn %u: bad control frame (op %d len %llu)", ci, op,
                 (unsigned long long)len);
        if (op != 8 && op != 9 && op != 10)
            fail("conn %u: unknown control opcode %d", ci, op);
        c->ctl_len = 0;
    } else if (op == 0) {
        if (!c->msg_open)
            fail("conn %u: continuation frame without a message", ci);
    } else if (op == 2) {
        if (c->msg_open)
            fail("conn %u: new data frame inside a fragmented message", ci);
        if (c->rx_seq >= c->tx_seq)
            fail("conn %u: unexpected message (nothing in flight)", ci);
        c->msg_open = 1;
        c->msg_off = 0;
    } else {
        fail("conn %u: unexpected opcode %d from server (want binary 2)", ci, op);
    }
    if (op < 8 && c->msg_off + len > opt_size)
        fail("conn %u: message %llu: echoed WebSocket message longer than %zu",
             ci, (unsigned long long)c->rx_seq, opt_size);
    if (len == 0) ws_frame_end(c, ci);
}

static void rx_ws(conn_t *c, uint32_t ci, const uint8_t *d, size_t n)
{
    while (n > 0) {
        if (c->hdr_have < c->hdr_need) {
            c->hdr[c->hdr_have++] = *d++;
            n--;
            if (c->hdr_have == 2) {
                int l7 = c->hdr[1] & 0x7f;
                c->hdr_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) +
                              ((c->hdr[1] & 0x80) ? 4 : 0);
            }
            if (c->hdr_have == c->hdr_need) ws_header_done(c, ci);
            continue;
        }
        size_t take = c->frame_left < n ? (size_t)c->frame_left : n;
        if (c->frame_op >= 8) {
            memcpy(c->ctl + c->ctl_len, d, take);
            c->ctl_len += take;
        } else {
            long bad = verify_payload(ci, c->rx_seq, c->msg_off, d, take);
            if (bad >= 0)
                fail("conn %u: message %llu: payload mismatch at payload "
                     "offset %zu", ci, (unsigned long long)c->rx_seq,
                     c->msg_off + (size_t)bad);
            c->msg_off += take;
        }
        c->frame_left -= take;
        d += take;
        n -= take;
        if (c->frame_left == 0) ws_frame_end(c, ci);
    }
}

/* ------------------------------------------------------------------ */
/* connection setup                                                    */

static void conn_ready(conn_t *c, uint32_t ci);

static int retryable(int e)
{
    return e == ECONNREFUSED || e == EAGAIN || e == ETIMEDOUT ||
           e == ECONNRESET || e == EADDRNOTAVAIL || e == EHOSTUNREACH ||
           e == ENETUNREACH;
}

static void schedule_retry(conn_t *c, uint32_t ci, int err, double now)
{
#ifdef WITH_TLS
    if (c->ssl) {
        SSL_free((SSL *)c->ssl);
        c->ssl = NULL;
    }
#endif
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->retries++;
    if (c->retries > 200)
        fail("conn %u: connect failed after %d tries: %s", ci, c->retries,
             strerror(err));
    c->backoff = c->backoff == 0 ? 0.005 : c->backoff * 2;
    if (c->backoff > 0.5) c->backoff = 0.5;
    c->retry_at = now + c->backoff * (0.5 + (double)(rng_next() % 1000) / 1000.0);
    c->state = ST_WAIT;
}

static void start_connect(conn_t *c, uint32_t ci, double now)
{
    int fd = socket(srv_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE)
            fail("conn %u: socket: %s (raise the fd limit)", ci, strerror(errno));
        fail("conn %u: socket: %s", ci, strerror(errno));
    }
    if (srv_addr.ss_family == AF_INET) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->fd = fd;
    int r;
    do {
        r = connect(fd, (struct sockaddr *)&srv_addr, srv_addr_len);
    } while (r < 0 && errno == EINTR);
    /* A Unix socket whose backlog is full says EAGAIN at once instead of
       queueing the SYN: retried with back-off like a refused connect. */
    if (r < 0 && errno != EINPROGRESS) {
        if (retryable(errno)) {
            schedule_retry(c, ci, errno, now);
            return;
        }
        fail("conn %u: connect: %s", ci, strerror(errno));
    }
    struct epoll_event ev;
    ev.events = EPOLLOUT;
    ev.data.u32 = ci;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        fail("epoll_ctl ADD: %s", strerror(errno));
    c->want_out = 1;
    c->state = ST_CONNECTING;
    n_connecting++;
}

static void send_ws_upgrade(conn_t *c, uint32_t ci)
{
    uint8_t raw[16];
    char key[25];
    for (int i = 0; i < 16; i++) raw[i] = (uint8_t)rng_next();
    base64(raw, 16, key);
    ws_accept_for(key, c->ws_accept);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\n"
                     "Host: %s:%d\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "\r\n",
                     opt_host, opt_port, key);
    out_reserve(c, (size_t)n);
    memcpy(c->out + c->out_len, req, (size_t)n);
    c->out_len += (size_t)n;
    c->state = ST_HANDSHAKE;
    flush_out(c, ci);
}

/* Connected (and, with --tls, the handshake done): upgrade or start. */
static void conn_established(conn_t *c, uint32_t ci)
{
    if (opt_proto == MODE_WS)
        send_ws_upgrade(c, ci);
    else
        conn_ready(c, ci);
}

#ifdef WITH_TLS
static void tls_step(conn_t *c, uint32_t ci)
{
    int r = SSL_do_handshake((SSL *)c->ssl);
    if (r == 1) {
        if (c->want_out) ep_set(c, ci, 0);
        conn_established(c, ci);
        return;
    }
    int e = SSL_get_error((SSL *)c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        if (c->want_out) ep_set(c, ci, 0);
    } else if (e == SSL_ERROR_WANT_WRITE) {
        if (!c->want_out) ep_set(c, ci, 1);
    } else {
        fail("conn %u: TLS handshake failed: error %d: %s", ci, e, tls_errors());
    }
}

static void tls_start(conn_t *c, uint32_t ci)
{
    SSL *ssl = SSL_new(tls_ctx);
    if (!ssl || !SSL_set_fd(ssl, c->fd))
        fail("conn %u: SSL_new: %s", ci, tls_errors());
    SSL_set_connect_state(ssl);
    SSL_set_tlsext_host_name(ssl, opt_tls_servername);
    if (opt_tls_ca && !SSL_set1_host(ssl, opt_tls_servername))
        fail("SSL_set1_host: %s", tls_errors());
    c->ssl = ssl;
    c->state = ST_TLS;
    tls_step(c, ci);
}
#endif

static void on_connected(conn_t *c, uint32_t ci)
{
    n_connecting--;
    c->want_out = 1; /* registered with EPOLLOUT only; ep_set fixes it */
    ep_set(c, ci, 0);
#ifdef WITH_TLS
    if (opt_tls) {
        tls_start(c, ci);
        return;
    }
#endif
    conn_established(c, ci);
}

/* Handles bytes of the HTTP upgrade response; leftover bytes after the
 * header block are fed to the frame parser. */
static void rx_handshake(conn_t *c, uint32_t ci, const uint8_t *d, size_t n)
{
    c->hs_buf = xrealloc(c->hs_buf, c->hs_len + n + 1);
    memcpy(c->hs_buf + c->hs_len, d, n);
    c->hs_len += n;
    c->hs_buf[c->hs_len] = 0;
    char *end = strstr(c->hs_buf, "\r\n\r\n");
    if (!end) {
        if (c->hs_len > 8192) fail("conn %u: upgrade response too long", ci);
        return;
    }
    size_t hdr_len = (size_t)(end - c->hs_buf) + 4;
    *end = 0;
    if (strncmp(c->hs_buf, "HTTP/1.1 101", 12) != 0) {
        char *nl = strstr(c->hs_buf, "\r\n");
        if (nl) *nl = 0;
        fail("conn %u: upgrade refused: \"%s\"", ci, c->hs_buf);
    }
    int ok = 0, saw = 0;
    char *line = strstr(c->hs_buf, "\r\n");
    while (line) {
        line += 2;
        char *next = strstr(line, "\r\n");
        if (next) *next = 0;
        if (strncasecmp(line, "Sec-WebSocket-Accept:", 21) == 0) {
            char *v = line + 21;
            while (*v == ' ' || *v == '\t') v++;
            char *e = v + strlen(v);
            while (e > v && (e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
            saw = 1;
            ok = strcmp(v, c->ws_accept) == 0;
            if (!ok)
                fail("conn %u: bad Sec-WebSocket-Accept \"%s\" (want \"%s\")",
                     ci, v, c->ws_accept);
        }
        line = next;
    }
    if (!saw) fail("conn %u: upgrade response lacks Sec-WebSocket-Accept", ci);
    size_t rest = c->hs_len - hdr_len;
    uint8_t *tail = NULL;
    if (rest) {
        tail = xmalloc(rest);
        memcpy(tail, c->hs_buf + hdr_len, rest);
    }
    free(c->hs_buf);
    c->hs_buf = NULL;
    c->hs_len = 0;
    conn_ready(c, ci);
    if (rest) {
        rx_ws(c, ci, tail, rest);
        free(tail);
    }
}

/* Connection fully set up: in run modes traffic starts later (all at once),
 * in hold mode the single verification echo is sent now. */
static void conn_ready(conn_t *c, uint32_t ci)
{
    c->state = ST_READY;
    c->hdr_have = 0;
    c->hdr_need = 2;
    n_connected++;
    if (opt_mode == MODE_HOLD) {
        if (opt_size == 0) {
            c->state = ST_IDLE;
            n_idle++;
        } else {
            c->state = ST_RUNNING;
            queue_message(c, ci);
            flush_out(c, ci);
        }
    }
}

/* ------------------------------------------------------------------ */
/* event handling                                                      */

static uint8_t rbuf[1 << 16];

/* Bytes from the server (plaintext, after TLS). */
static void rx_data(conn_t *c, uint32_t ci, const uint8_t *d, size_t n)
{
    if (c->state == ST_HANDSHAKE)
        rx_handshake(c, ci, d, n);
    else if (c->state == ST_RUNNING || c->state == ST_IDLE || c->state == ST_READY) {
        if (c->state != ST_RUNNING && opt_proto != MODE_WS)
            fail("conn %u: %zu unexpected bytes from server while idle", ci, n);
        if (opt_proto == MODE_WS)
            rx_ws(c, ci, d, n);
        else
            rx_stream(c, ci, d, n);
    }
}

static void on_event(uint32_t ci, uint32_t events, double now)
{
    conn_t *c = &conns[ci];
    if (c->fd < 0) return; /* closed earlier in this batch (retry pending) */
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t sl = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0) err = errno;
        if (err == 0 && !(events & (EPOLLERR | EPOLLHUP))) {
            on_connected(c, ci);
            return;
        }
        if (err == 0) err = ECONNRESET;
        n_connecting--;
        if (retryable(err)) {
            schedule_retry(c, ci, err, now);
            return;
        }
        fail("conn %u: connect: %s", ci, strerror(err));
    }
#ifdef WITH_TLS
    if (c->state == ST_TLS) {
        tls_step(c, ci);
        return;
    }
    if (c->ssl && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
        /* Drain OpenSSL completely: a record it has buffered raises no epoll event. */
        for (;;) {
            int n = SSL_read((SSL *)c->ssl, rbuf, (int)sizeof rbuf);
            if (n > 0) {
                rx_data(c, ci, rbuf, (size_t)n);
                continue;
            }
            int e = SSL_get_error((SSL *)c->ssl, n);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
                fail("conn %u: connection closed by server (state %d, %llu "
                     "messages done, %llu in flight)", ci, c->state,
                     (unsigned long long)c->rx_seq,
                     (unsigned long long)(c->tx_seq - c->rx_seq));
            fail("conn %u: SSL_read: error %d: %s", ci, e, tls_errors());
        }
    } else
#endif
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        ssize_t n;
        do {
            n = recv(c->fd, rbuf, sizeof rbuf, 0);
        } while (n < 0 && errno == EINTR);
        if (n == 0)
            fail("conn %u: connection closed by server (state %d, %llu "
                 "messages done, %llu in flight)", ci, c->state,
                 (unsigned long long)c->rx_seq,
                 (unsigned long long)(c->tx_seq - c->rx_seq));
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fail("conn %u: recv: %s", ci, strerror(errno));
        } else {
            rx_data(c, ci, rbuf, (size_t)n);
        }
    }
    if (c->fd >= 0 && (c->out_len > c->out_head || c->want_out))
        flush_out(c, ci);
}

static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return;
    if (rl.rlim_cur >= want) return;
    rlim_t target = want;
    if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max) {
        /* try raising the hard limit too (works as root) */
        struct rlimit r2 = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &r2) == 0) return;
        target = rl.rlim_max;
    }
    rl.rlim_cur = target;
    setrlimit(RLIMIT_NOFILE, &rl);
}

/* ------------------------------------------------------------------ */
/* output                                                              */

static const char *mode_name(int m)
{
    switch (m) {
    case MODE_RAW: return "raw";
    case MODE_WS: return "ws";
    case MODE_PBFRAME: return "pbframe";
    default: return "hold";
    }
}

static void emit_failure_json(const char *msg)
{
    printf("{\"mode\": \"%s\", \"conns\": %d, \"size\": %zu, \"inflight\": %d, "
           "\"messages\": %llu, \"errors\": 1, \"error\": \"",
           mode_name(opt_mode), opt_conns, opt_size, opt_inflight,
           (unsigned long long)window_msgs);
    for (const char *p = msg; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        putchar((unsigned char)*p >= 0x20 ? *p : ' ');
    }
    printf("\"}\n");
    fflush(stdout);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: loadgen --port P | --unix PATH [options]\n"
        "  --host ADDR          server IPv4 address (127.0.0.1)\n"
        "  --port P             server port\n"
        "  --unix PATH          connect to a Unix socket instead (@NAME: abstract)\n"
        "  --conns N            connections (50)\n"
        "  --size BYTES         payload bytes per message (64)\n"
        "  --inflight K         messages in flight per connection (1)\n"
        "  --duration SECS      measured window (4); hold: how long to hold\n"
        "  --warmup SECS        warmup before the window (1)\n"
        "  --mode MODE          raw | ws | pbframe | hold (raw)\n"
        "  --hold-proto MODE    hold mode: raw | ws | pbframe (raw)\n"
        "  --connect-timeout S  give up connecting after S seconds (30)\n"
        "  --connect-batch N    max concurrent connects in flight (256)\n"
        "  --seed N             content seed\n"
        "  --tls                speak TLS (OpenSSL; build with -DWITH_TLS)\n"
        "  --tls-ca PEM         verify the server's certificate against PEM\n"
        "  --tls-servername N   SNI and verified name (localhost)\n"
        "  --tls-version V      1.3 (default) or 1.2\n"
        "  --markers            print 'window-start'/'window-end' lines\n"
        "  --latency            record each round trip; report p50/p90/p99/p99.9/max\n"
        "  --json               print one JSON object with the results\n"
        "  --selftest           check SHA-1/base64/accept and exit\n");
}

static int parse_mode(const char *s)
{
    if (!strcmp(s, "raw")) return MODE_RAW;
    if (!strcmp(s, "ws")) return MODE_WS;
    if (!strcmp(s, "pbframe")) return MODE_PBFRAME;
    if (!strcmp(s, "hold")) return MODE_HOLD;
    fprintf(stderr, "loadgen: unknown mode '%s'\n", s);
    exit(1);
}

static double parse_num(const char *name, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "loadgen: bad value for --%s: '%s'\n", name, s);
        exit(1);
    }
    return v;
}

int main(int argc, char **argv)
{
    static const struct option lopts[] = {
        {"host", required_argument, 0, 'h'},
        {"port", required_argument, 0, 'p'},
        {"unix", required_argument, 0, 'u'},
        {"conns", required_argument, 0, 'c'},
        {"size", required_argument, 0, 's'},
        {"inflight", required_argument, 0, 'k'},
        {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},
        {"mode", required_argument, 0, 'm'},
        {"hold-proto", required_argument, 0, 'P'},
        {"connect-timeout", required_argument, 0, 'T'},
        {"connect-batch", required_argument, 0, 'B'},
        {"seed", required_argument, 0, 'S'},
        {"tls", no_argument, 0, 't'},
        {"tls-ca", required_argument, 0, 'C'},
        {"tls-servername", required_argument, 0, 'N'},
        {"tls-version", required_argument, 0, 'V'},
        {"markers", no_argument, 0, 'M'},
        {"latency", no_argument, 0, 'L'},
        {"json", no_argument, 0, 'j'},
        {"selftest", no_argument, 0, 'X'},
        {"help", no_argument, 0, 'H'},
        {0, 0, 0, 0},
    };
    int hold_proto = MODE_RAW;
    int o;
    while ((o = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        switch (o) {
        case 'h': opt_host = optarg; break;
        case 'p': opt_port = (int)parse_num("port", optarg, 1, 65535); break;
        case 'u': opt_unix = optarg; break;
        case 'c': opt_conns = (int)parse_num("conns", optarg, 1, 1000000); break;
        case 's': opt_size = (size_t)parse_num("size", optarg, 0, 1 << 26); break;
        case 'k': opt_inflight = (int)parse_num("inflight", optarg, 1, 100000); break;
        case 'd': opt_duration = parse_num("duration", optarg, 0.01, 1e6); break;
        case 'w': opt_warmup = parse_num("warmup", optarg, 0, 1e6); break;
        case 'm': opt_mode = parse_mode(optarg); break;
        case 'P':
            hold_proto = parse_mode(optarg);
            if (hold_proto == MODE_HOLD) {
                fprintf(stderr, "loadgen: --hold-proto cannot be hold\n");
                return 1;
            }
            break;
        case 'T': opt_connect_timeout = parse_num("connect-timeout", optarg, 0.1, 1e6); break;
        case 'B': opt_connect_batch = (int)parse_num("connect-batch", optarg, 1, 1000000); break;
        case 'S': opt_seed = (uint64_t)parse_num("seed", optarg, 0, 1e18); break;
        case 't': opt_tls = 1; break;
        case 'C': opt_tls_ca = optarg; break;
        case 'N': opt_tls_servername = optarg; break;
        case 'V':
            if (!strcmp(optarg, "1.3")) opt_tls_version = 13;
            else if (!strcmp(optarg, "1.2")) opt_tls_version = 12;
            else {
                fprintf(stderr, "loadgen: --tls-version must be 1.2 or 1.3\n");
                return 1;
            }
            break;
        case 'M': opt_markers = 1; break;
        case 'L': opt_latency = 1; break;
        case 'j': opt_json = 1; break;
        case 'X': return selftest();
        case 'H': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc || (opt_port == 0) == (opt_unix == NULL)) {
        usage(stderr);
        return 1;
    }
    opt_proto = opt_mode == MODE_HOLD ? hold_proto : opt_mode;
    if (opt_mode != MODE_HOLD && opt_size == 0) {
        fprintf(stderr, "loadgen: --size must be > 0\n");
        return 1;
    }
    if (opt_mode == MODE_HOLD) opt_inflight = 1;

    memset(&srv_addr, 0, sizeof srv_addr);
    if (opt_unix) {
        struct sockaddr_un *un = (struct sockaddr_un *)&srv_addr;
        size_t len = strlen(opt_unix);
        if (len == 0 || len >= sizeof un->sun_path) {
            fprintf(stderr, "loadgen: --unix path empty or too long\n");
            return 1;
        }
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, opt_unix, len);
        if (opt_unix[0] == '@') un->sun_path[0] = '\0'; /* abstract: no trailing NUL */
        srv_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                                   (opt_unix[0] == '@' ? 0 : 1));
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&srv_addr;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)opt_port);
        if (inet_pton(AF_INET, opt_host, &in->sin_addr) != 1) {
            fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
            return 1;
        }
        srv_addr_len = sizeof *in;
    }

    if (opt_tls) {
#ifdef WITH_TLS
        tls_ctx = SSL_CTX_new(TLS_client_method());
        if (!tls_ctx) fail("SSL_CTX_new: %s", tls_errors());
        int v = opt_tls_version == 12 ? TLS1_2_VERSION : TLS1_3_VERSION;
        SSL_CTX_set_min_proto_version(tls_ctx, v);
        SSL_CTX_set_max_proto_version(tls_ctx, v);
        /* The output buffer may move (realloc) between a short SSL_write and its retry. */
        SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        if (opt_tls_ca) {
            if (SSL_CTX_load_verify_locations(tls_ctx, opt_tls_ca, NULL) != 1)
                fail("--tls-ca %s: %s", opt_tls_ca, tls_errors());
            SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
        } else {
            SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
        }
#else
        fprintf(stderr, "loadgen: built without TLS (compile with -DWITH_TLS -lssl -lcrypto)\n");
        return 1;
#endif
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile((rlim_t)opt_conns + 64);
    rng_state ^= mix64((uint64_t)getpid() ^ (uint64_t)(now_s() * 1e9));
    init_content();
    scratch = xmalloc(opt_size);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) fail("epoll_create1: %s", strerror(errno));
    conns = calloc((size_t)opt_conns, sizeof *conns);
    if (!conns) fail("out of memory");
    for (int i = 0; i < opt_conns; i++) {
        if (opt_latency) conns[i].sent = calloc((size_t)opt_inflight, sizeof(double));
        conns[i].fd = -1;
        conns[i].state = ST_WAIT;
    }

    int max_ev = opt_conns < 1024 ? opt_conns : 1024;
    struct epoll_event *evs = xmalloc(sizeof *evs * (size_t)max_ev);

    /* ---- phase 1: connect (and upgrade; in hold mode also one echo) ---- */
    double t0 = now_s();
    double deadline = t0 + opt_connect_timeout;
    int next_new = 0;       /* connections never tried yet: [next_new, N) */
    for (;;) {
        double now = now_s();
        int target_done = opt_mode == MODE_HOLD ? n_idle : n_connected;
        if (target_done == opt_conns) break;
        if (now > deadline)
            fail("connect phase timed out after %.1f s: %d/%d connections "
                 "ready (%d connecting)", opt_connect_timeout, target_done,
                 opt_conns, n_connecting);
        /* retries first, then new connections, bounded concurrency */
        double next_retry = 0;
        if (n_connecting < opt_connect_batch) {
            for (int i = 0; i < next_new && n_connecting < opt_connect_batch; i++) {
                conn_t *c = &conns[i];
                if (c->state != ST_WAIT) continue;
                if (c->retry_at <= now)
                    start_connect(c, (uint32_t)i, now);
                else if (next_retry == 0 || c->retry_at < next_retry)
                    next_retry = c->retry_at;
            }
            while (next_new < opt_conns && n_connecting < opt_connect_batch) {
                start_connect(&conns[next_new], (uint32_t)next_new, now);
                next_new++;
            }
        }
        int timeout = 50;
        if (next_retry > 0) {
            int ms = (int)((next_retry - now) * 1000) + 1;
            if (ms < timeout) timeout = ms < 0 ? 0 : ms;
        }
        int n = epoll_wait(epfd, evs, max_ev, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait: %s", strerror(errno));
        }
        now = now_s();
        for (int i = 0; i < n; i++) on_event(evs[i].data.u32, evs[i].events, now);
    }
    double t_conn = now_s() - t0;

    if (opt_mode == MODE_HOLD) {
        printf("held %d\n", opt_conns);
        fflush(stdout);
        double end = now_s() + opt_duration;
        for (;;) {
            double now = now_s();
            if (now >= end) break;
            int ms = (int)((end - now) * 1000) + 1;
            if (ms > 1000) ms = 1000;
            int n = epoll_wait(epfd, evs, max_ev, ms);
            if (n < 0) {
                if (errno == EINTR) continue;
                fail("epoll_wait: %s", strerror(errno));
            }
            for (int i = 0; i < n; i++) on_event(evs[i].data.u32, evs[i].events, now);
        }
        if (opt_json)
            printf("{\"mode\": \"hold\", \"proto\": \"%s\", \"conns\": %d, "
                   "\"connect_seconds\": %.3f, \"errors\": 0}\n",
                   mode_name(opt_proto), opt_conns, t_conn);
        else
            printf("held %d connections for %.1f s (connect took %.3f s)\n",
                   opt_conns, opt_duration, t_conn);
        free(evs);
        return 0;
    }

    /* ---- phase 2: closed loop ---- */
    for (int i = 0; i < opt_conns; i++) {
        conn_t *c = &conns[i];
        c->state = ST_RUNNING;
        for (int k = 0; k < opt_inflight; k++) queue_message(c, (uint32_t)i);
        flush_out(c, (uint32_t)i);
    }
    double t_start = now_s();
    double t_win0 = t_start + opt_warmup;
    double t_win1 = t_win0 + opt_duration;
    double cpu0 = 0, cpu1 = 0, w0 = 0, w1 = 0;
    if (opt_warmup == 0) {
        counting = 1;
        w0 = now_s();
        cpu0 = cpu_s();
        if (opt_markers) {
            printf("window-start\n");
            fflush(stdout);
        }
    }
    for (;;) {
        double now = now_s();
        if (!counting && now >= t_win0) {
            counting = 1;
            w0 = now;
            cpu0 = cpu_s();
            if (opt_markers) {
                printf("window-start\n");
                fflush(stdout);
            }
        }
        if (counting && now >= t_win1) {
            w1 = now;
            cpu1 = cpu_s();
            counting = 0;
            if (opt_markers) {
                printf("window-end\n");
                fflush(stdout);
            }
            break;
        }
        double next = counting ? t_win1 : t_win0;
        int ms = (int)((next - now) * 1000) + 1;
        if (ms > 100) ms = 100;
        int n = epoll_wait(epfd, evs, max_ev, ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) on_event(evs[i].data.u32, evs[i].events, now);
    }

    double secs = w1 - w0;
    double rate = secs > 0 ? (double)window_msgs / secs : 0;
    double ccpu = secs > 0 ? (cpu1 - cpu0) / secs : 0;
    uint64_t cmin = UINT64_MAX, cmax = 0;
    for (int i = 0; i < opt_conns; i++) {
        if (conns[i].done_window < cmin) cmin = conns[i].done_window;
        if (conns[i].done_window > cmax) cmax = conns[i].done_window;
    }
    size_t wire = opt_proto == MODE_PBFRAME ? opt_size + PB_PREFIX_LEN : opt_size;
    if (opt_json) {
        printf("{\"mode\": \"%s\", \"conns\": %d, \"size\": %zu, \"inflight\": %d, "
               "\"seconds\": %.6f, \"messages\": %llu, \"msgs_per_sec\": %.1f, "
               "\"mbytes_per_sec\": %.3f, \"per_conn_min\": %llu, "
               "\"per_conn_max\": %llu, \"client_cpu\": %.4f, "
               "\"connect_seconds\": %.3f, \"total_messages\": %llu, ",
               mode_name(opt_mode), opt_conns, opt_size, opt_inflight, secs,
               (unsigned long long)window_msgs, rate,
               rate * (double)wire / 1e6, (unsigned long long)cmin,
               (unsigned long long)cmax, ccpu, t_conn,
               (unsigned long long)total_msgs);
        if (opt_latency)
            printf("\"latency_us\": {\"count\": %llu, \"mean\": %.1f, \"p50\": %.1f, "
                   "\"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f}, ",
                   (unsigned long long)hist_count,
                   hist_count ? hist_sum_ns / (double)hist_count / 1e3 : 0.0,
                   hist_quantile_us(0.50), hist_quantile_us(0.90),
                   hist_quantile_us(0.99), hist_quantile_us(0.999),
                   (double)hist_max_ns / 1e3);
        printf("\"errors\": 0}\n");
    } else {
        printf("mode %s, %d conns, %zu B, %d in flight\n", mode_name(opt_mode),
               opt_conns, opt_size, opt_inflight);
        printf("  window      %.3f s\n", secs);
        printf("  messages    %llu (all verified)\n", (unsigned long long)window_msgs);
        printf("  msgs/s      %.0f\n", rate);
        printf("  MB/s        %.2f (one direction)\n", rate * (double)wire / 1e6);
        printf("  per conn    min %llu max %llu\n", (unsigned long long)cmin,
               (unsigned long long)cmax);
        printf("  client cpu  %.0f%%\n", ccpu * 100);
        if (opt_latency)
            printf("  latency     p50 %.1f us  p90 %.1f us  p99 %.1f us  p99.9 %.1f us  "
                   "max %.1f us  mean %.1f us (%llu round trips)\n",
                   hist_quantile_us(0.50), hist_quantile_us(0.90),
                   hist_quantile_us(0.99), hist_quantile_us(0.999),
                   (double)hist_max_ns / 1e3,
                   hist_count ? hist_sum_ns / (double)hist_count / 1e3 : 0.0,
                   (unsigned long long)hist_count);
        printf("  errors      0\n");
    }
    fflush(stdout);
    free(evs);
    return 0;
}
