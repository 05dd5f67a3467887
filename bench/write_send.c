// write(2) vs send(2) of 66 B (a 64 B WebSocket message) to 1,000 loopback TCP sockets: the
// writer thread's system time per call, the two alternating round by round. A reader thread on
// CPU 1 drains the other ends. gev writes with os.write (write(2)); picows/uvloop with send(2).
//
//   gcc -O2 -o bench/.build/write_send bench/write_send.c -lpthread && bench/.build/write_send 300
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>
#include <sched.h>
#define N 1000
static int wfd[N], rfd[N];
static volatile int stop;
static void *reader(void *arg) {
    (void)arg;
    cpu_set_t s; CPU_ZERO(&s); CPU_SET(1, &s); pthread_setaffinity_np(pthread_self(), sizeof s, &s);
    int ep = epoll_create1(0);
    for (int i = 0; i < N; i++) { struct epoll_event e = {.events = EPOLLIN, .data.fd = rfd[i]}; epoll_ctl(ep, EPOLL_CTL_ADD, rfd[i], &e); }
    char buf[65536]; struct epoll_event ev[256];
    while (!stop) { int n = epoll_wait(ep, ev, 256, 100); for (int i = 0; i < n; i++) while (read(ev[i].data.fd, buf, sizeof buf) > 0); }
    return 0;
}
static double sys_s(void) { struct rusage r; getrusage(RUSAGE_THREAD, &r); return r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6; }
int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    cpu_set_t s; CPU_ZERO(&s); CPU_SET(0, &s); sched_setaffinity(0, sizeof s, &s);
    int l = socket(AF_INET, SOCK_STREAM, 0); struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(l, (void *)&a, sizeof a); listen(l, 4096); socklen_t al = sizeof a; getsockname(l, (void *)&a, &al);
    for (int i = 0; i < N; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0); connect(c, (void *)&a, sizeof a);
        int acc = accept(l, 0, 0); int one = 1; setsockopt(acc, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(acc, F_SETFL, O_NONBLOCK); fcntl(c, F_SETFL, O_NONBLOCK); wfd[i] = acc; rfd[i] = c;
    }
    pthread_t t; pthread_create(&t, 0, reader, 0);
    char msg[66]; memset(msg, 'x', sizeof msg);
    double tw = 0, ts = 0;
    for (int r = 0; r < rounds; r++) {
        for (int mode = 0; mode < 2; mode++) {
            double s0 = sys_s();
            for (int i = 0; i < N; i++) { if (mode == 0) (void)!write(wfd[i], msg, sizeof msg); else (void)!send(wfd[i], msg, sizeof msg, 0); }
            double d = sys_s() - s0;
            if (mode == 0) tw += d; else ts += d;
            usleep(2000);
        }
    }
    stop = 1; pthread_join(t, 0);
    printf("write: %.3f us sys/call   send: %.3f us sys/call   send/write %.3f\n", tw / rounds / N * 1e6, ts / rounds / N * 1e6, ts / tw);
    return 0;
}
