/*
 * c_echo.c - bare C epoll echo server (reference ceiling).
 *
 * Single thread, level-triggered epoll.  One recv + one send per readiness
 * event.  If send is short the leftover is buffered, reading from that
 * connection pauses and EPOLLOUT is used until the buffer drains.
 *
 * usage: c_echo --port P [--host 127.0.0.1] | --unix PATH
 * Build: gcc -O2 -Wall -Wextra -o c_echo c_echo.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct {
    char *buf;      /* unsent bytes (only after a short send) */
    size_t len, off;
} pending_t;

static pending_t *pend;
static size_t npend;
static int epfd;

static void set_events(int fd, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.fd = fd};
    epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &e);
}

static void drop(int fd)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    if ((size_t)fd < npend) {
        free(pend[fd].buf);
        pend[fd].buf = NULL;
        pend[fd].len = pend[fd].off = 0;
    }
}

static pending_t *pending_for(int fd)
{
    if ((size_t)fd >= npend) {
        size_t n = npend ? npend : 1024;
        while (n <= (size_t)fd) n *= 2;
        pend = realloc(pend, n * sizeof *pend);
        if (!pend) {
            perror("realloc");
            exit(1);
        }
        memset(pend + npend, 0, (n - npend) * sizeof *pend);
        npend = n;
    }
    return &pend[fd];
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    const char *unix_path = NULL;
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--host") && i + 1 < argc)
            host = argv[++i];
        else if (!strcmp(argv[i], "--unix") && i + 1 < argc)
            unix_path = argv[++i];
        else {
            fprintf(stderr, "usage: %s --port P [--host ADDR] | --unix PATH\n", argv[0]);
            return 1;
        }
    }
    if ((port <= 0) == (unix_path == NULL)) {
        fprintf(stderr, "usage: %s --port P [--host ADDR] | --unix PATH\n", argv[0]);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    int one = 1;
    int ls;
    if (unix_path) {
        struct sockaddr_un u = {.sun_family = AF_UNIX};
        if (strlen(unix_path) >= sizeof u.sun_path) {
            fprintf(stderr, "--unix path too long\n");
            return 1;
        }
        strcpy(u.sun_path, unix_path);
        unlink(unix_path);
        ls = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (bind(ls, (struct sockaddr *)&u, sizeof u) < 0 || listen(ls, 4096) < 0) {
            perror("bind/listen");
            return 1;
        }
    } else {
        ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
            fprintf(stderr, "bad --host\n");
            return 1;
        }
        if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0) {
            perror("bind/listen");
            return 1;
        }
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(epfd, EPOLL_CTL_ADD, ls, &e);

    static char buf[65536];
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
            uint32_t ev = evs[i].events;
            if (fd == ls) {
                for (;;) {
                    int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) {
                        if (errno == EINTR || errno == ECONNABORTED) continue;
                        break; /* EAGAIN, or EMFILE: retried on next event */
                    }
                    if (!unix_path)
                        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            pending_t *p = pending_for(fd);
            if (p->len > p->off) {
                /* writable again: drain the leftover, then resume reading */
                if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) continue;
                ssize_t w = send(fd, p->buf + p->off, p->len - p->off, MSG_NOSIGNAL);
                if (w < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (w < 0) {
                    drop(fd);
                    continue;
                }
                p->off += (size_t)w;
                if (p->off == p->len) {
                    p->off = p->len = 0;
                    set_events(fd, EPOLLIN);
                }
                continue;
            }
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                drop(fd);
                continue;
            }
            if (r < 0) continue;
            ssize_t w = send(fd, buf, (size_t)r, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EINTR) {
                drop(fd);
                continue;
            }
            if (w < 0) w = 0;
            if (w < r) {
                size_t left = (size_t)(r - w);
                char *nb = realloc(p->buf, left);
                if (!nb) {
                    drop(fd);
                    continue;
                }
                p->buf = nb;
                memcpy(p->buf, buf + w, left);
                p->len = left;
                p->off = 0;
                set_events(fd, EPOLLOUT);
            }
        }
    }
}
