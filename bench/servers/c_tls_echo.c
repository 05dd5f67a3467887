/*
 * c_tls_echo.c - bare C epoll + OpenSSL TLS echo server (the TLS floor).
 *
 * Single thread, level-triggered epoll, non-blocking sockets with OpenSSL's
 * socket BIO: a non-blocking handshake, then every SSL_read is echoed with
 * SSL_write.  OpenSSL buffers a whole record, so after a read event the
 * connection is read until SSL_ERROR_WANT_READ (a buffered record raises no
 * epoll event).  If SSL_write cannot take everything, the rest is kept,
 * reading pauses and EPOLLOUT waits for the socket to drain.  The server's
 * defaults are OpenSSL's (TLS 1.2 and 1.3, its cipher order): what the
 * Python servers of the benchmark get from ssl.create_default_context.
 *
 * usage: c_tls_echo --port P --certfile PEM --keyfile PEM [--host 127.0.0.1]
 * Build: gcc -O2 -Wall -Wextra -o c_tls_echo c_tls_echo.c -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    SSL *ssl;
    int handshaking;
    int want_out;        /* EPOLLOUT registered */
    unsigned char *buf;  /* plaintext SSL_write has not taken yet */
    size_t len, off, cap;
} conn_t;

static conn_t *conns;
static size_t nconns;
static int epfd;
static SSL_CTX *ctx;
static unsigned char rbuf[1 << 16];

static conn_t *conn_for(int fd)
{
    if ((size_t)fd >= nconns) {
        size_t n = nconns ? nconns : 1024;
        while (n <= (size_t)fd) n *= 2;
        conns = realloc(conns, n * sizeof *conns);
        if (!conns) {
            perror("realloc");
            exit(1);
        }
        memset(conns + nconns, 0, (n - nconns) * sizeof *conns);
        nconns = n;
    }
    return &conns[fd];
}

static void set_events(int fd, conn_t *c, int want_out)
{
    struct epoll_event e = {.events = want_out ? EPOLLOUT : EPOLLIN, .data.fd = fd};
    epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &e);
    c->want_out = want_out;
}

static void drop(int fd)
{
    conn_t *c = conn_for(fd);
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    if (c->ssl) {
        if (!c->handshaking) SSL_shutdown(c->ssl); /* close_notify, best effort */
        SSL_free(c->ssl);
    }
    close(fd);
    free(c->buf);
    memset(c, 0, sizeof *c);
}

/* Keeps n bytes SSL_write did not take. */
static void keep(conn_t *c, const unsigned char *p, size_t n)
{
    if (c->cap < n) {
        c->buf = realloc(c->buf, n);
        if (!c->buf) {
            perror("realloc");
            exit(1);
        }
        c->cap = n;
    }
    memcpy(c->buf, p, n);
    c->len = n;
    c->off = 0;
}

/* SSL_write everything or keep the rest; 0 ok (maybe kept), -1 drop. */
static int write_all(int fd, conn_t *c, const unsigned char *p, size_t n)
{
    while (n > 0) {
        int w = SSL_write(c->ssl, p, (int)n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        int e = SSL_get_error(c->ssl, w);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            keep(c, p, n);
            set_events(fd, c, 1);
            return 0;
        }
        return -1;
    }
    return 0;
}

static void on_readable(int fd, conn_t *c)
{
    for (;;) {
        int n = SSL_read(c->ssl, rbuf, sizeof rbuf);
        if (n > 0) {
            if (write_all(fd, c, rbuf, (size_t)n) < 0) {
                drop(fd);
                return;
            }
            if (c->len) return; /* paused until the output drains */
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ) return;
        if (e == SSL_ERROR_WANT_WRITE) {
            set_events(fd, c, 1);
            return;
        }
        drop(fd); /* close_notify, EOF, reset or a TLS error */
        ERR_clear_error();
        return;
    }
}

static void on_writable(int fd, conn_t *c)
{
    size_t n = c->len - c->off;
    unsigned char *p = c->buf + c->off;
    c->len = c->off = 0;
    if (write_all(fd, c, p, n) < 0) {
        drop(fd);
        return;
    }
    if (c->len) return;
    set_events(fd, c, 0);
    on_readable(fd, c); /* records OpenSSL buffered while we were paused */
}

static void handshake(int fd, conn_t *c)
{
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->handshaking = 0;
        if (c->want_out) set_events(fd, c, 0);
        on_readable(fd, c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        if (c->want_out) set_events(fd, c, 0);
    } else if (e == SSL_ERROR_WANT_WRITE) {
        if (!c->want_out) set_events(fd, c, 1);
    } else {
        ERR_clear_error();
        drop(fd);
    }
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return; /* EAGAIN, or out of fds: the backlog waits */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = conn_for(fd);
        c->ssl = SSL_new(ctx);
        if (!c->ssl || !SSL_set_fd(c->ssl, fd)) {
            close(fd);
            continue;
        }
        SSL_set_accept_state(c->ssl);
        c->handshaking = 1;
        struct epoll_event e = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *certfile = NULL, *keyfile = NULL;
    int port = 0, o;
    static const struct option lopts[] = {
        {"host", required_argument, 0, 'h'},
        {"port", required_argument, 0, 'p'},
        {"certfile", required_argument, 0, 'c'},
        {"keyfile", required_argument, 0, 'k'},
        {0, 0, 0, 0},
    };
    while ((o = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        switch (o) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': certfile = optarg; break;
        case 'k': keyfile = optarg; break;
        default: return 2;
        }
    }
    if (!port || !certfile) {
        fprintf(stderr, "usage: c_tls_echo --port P --certfile PEM [--keyfile PEM]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, keyfile ? keyfile : certfile, SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 ||
        bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) {
        perror("listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &le);
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(epfd, evs, 512, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                accept_all(lfd);
                continue;
            }
            conn_t *c = conn_for(fd);
            if (!c->ssl) continue; /* dropped earlier in this batch */
            if (c->handshaking)
                handshake(fd, c);
            else if (c->want_out)
                on_writable(fd, c);
            else
                on_readable(fd, c);
        }
    }
}
