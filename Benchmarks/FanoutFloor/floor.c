// The floor under the fan-out benchmark: what this machine's kernel costs for the same traffic
// with no server logic at all. A writer thread per "event loop" writes one WebSocket-sized frame
// to each of its loopback TCP sockets per event; reader threads epoll and read them, as the
// fan-out clients do, and record send-to-read latency. Nothing else runs: no HTTP, no database,
// no JSON. If this cannot keep p99 under a target, no server on this machine can.
//
//   cc -O2 -pthread -o /tmp/fanout-floor Benchmarks/FanoutFloor/floor.c
//   nice -n -20 /tmp/fanout-floor --clients 1000 --rate 100 --seconds 10 --frame 260
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int clients = 1000, writers = 2, readers = 2, frame = 260;
static double rate = 100, seconds = 10;
static const char *cc = NULL;  // --cc cubic: the server sockets' congestion control
static int *server_fds, *client_fds;
static volatile int done = 0;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static uint64_t *lat;  // microseconds, one per delivery
static long lat_n, lat_cap;
static pthread_mutex_t lat_lock = PTHREAD_MUTEX_INITIALIZER;

static void *writer(void *arg) {
    int w = (int)(long)arg;
    long events = (long)(rate * seconds);
    uint64_t start = now_ns();
    char *buf = malloc(frame);
    memset(buf, 'x', frame);
    buf[0] = (char)0x81;  // a text frame of 126+ bytes: 2-byte length
    buf[1] = 126;
    buf[2] = (char)((frame - 4) >> 8);
    buf[3] = (char)((frame - 4) & 0xff);
    for (long e = 0; e < events; e++) {
        uint64_t due = start + (uint64_t)(e * 1e9 / rate);
        uint64_t t;
        while ((t = now_ns()) < due) {
            struct timespec d = {0, (long)(due - t)};
            nanosleep(&d, NULL);
        }
        uint64_t sent = now_ns();
        memcpy(buf + 4, &sent, sizeof sent);
        for (int i = w; i < clients; i += writers) {
            ssize_t n = write(server_fds[i], buf, frame);
            if (n != frame) { perror("write"); exit(1); }
        }
    }
    free(buf);
    return NULL;
}

static void *reader(void *arg) {
    int r = (int)(long)arg;
    int ep = epoll_create1(0);
    int mine = 0;
    for (int i = r; i < clients; i += readers, mine++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, client_fds[i], &ev);
    }
    // Per-socket reassembly: a frame may arrive in pieces.
    char (*pending)[64] = calloc(clients, 64);
    int *have = calloc(clients, sizeof(int));
    uint64_t *local = malloc(sizeof(uint64_t) * 1 << 20);
    long local_n = 0;
    char buf[65536];
    struct epoll_event evs[256];
    while (!done) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            ssize_t got = read(client_fds[i], buf, sizeof buf);
            if (got <= 0) continue;
            uint64_t t = now_ns();
            // Frames are `frame` bytes; the send time is at offset 4 of each.
            for (ssize_t off = 0; off < got; off++) {
                int pos = have[i] % frame;
                if (pos >= 4 && pos < 12) pending[i][pos - 4] = buf[off];
                have[i]++;
                if (have[i] % frame == 0) {
                    uint64_t sent;
                    memcpy(&sent, pending[i], sizeof sent);
                    local[local_n++] = (t - sent) / 1000;
                    if (local_n == 1 << 20) {
                        pthread_mutex_lock(&lat_lock);
                        memcpy(lat + lat_n, local, sizeof(uint64_t) * local_n); lat_n += local_n;
                        pthread_mutex_unlock(&lat_lock);
                        local_n = 0;
                    }
                }
            }
        }
    }
    pthread_mutex_lock(&lat_lock);
    memcpy(lat + lat_n, local, sizeof(uint64_t) * local_n); lat_n += local_n;
    pthread_mutex_unlock(&lat_lock);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--clients")) clients = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rate")) rate = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--frame")) frame = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--writers")) writers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--readers")) readers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--cc")) cc = argv[i + 1];
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(lfd, (struct sockaddr *)&a, sizeof a);
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    listen(lfd, 4096);
    server_fds = calloc(clients, sizeof(int));
    client_fds = calloc(clients, sizeof(int));
    int one = 1;
    for (int i = 0; i < clients; i++) {
        client_fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(client_fds[i], (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
        server_fds[i] = accept(lfd, NULL, NULL);
        setsockopt(server_fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (cc && setsockopt(server_fds[i], IPPROTO_TCP, TCP_CONGESTION, cc, strlen(cc))) { perror("TCP_CONGESTION"); return 1; }
        setsockopt(client_fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    lat_cap = (long)(rate * seconds) * clients + 16;
    lat = malloc(sizeof(uint64_t) * lat_cap);
    pthread_t w[16], r[16];
    double cpu0 = cpu_seconds();
    for (long i = 0; i < readers; i++) pthread_create(&r[i], NULL, reader, (void *)i);
    for (long i = 0; i < writers; i++) pthread_create(&w[i], NULL, writer, (void *)i);
    for (int i = 0; i < writers; i++) pthread_join(w[i], NULL);
    usleep(500000);
    done = 1;
    for (int i = 0; i < readers; i++) pthread_join(r[i], NULL);
    double cpu = cpu_seconds() - cpu0;
    qsort(lat, lat_n, sizeof(uint64_t), cmp);
    #define P(q) (lat_n ? lat[(long)((q) * (lat_n - 1))] / 1000.0 : 0)
    printf("| %d | %.0f msg/s | %d writers, %d readers | %ld/%ld | p50 %.2f | p99 %.2f | p99.9 %.2f | max %.2f ms | %.1f us CPU per delivery (both sides) |\n",
           clients, rate, writers, readers, lat_n, (long)(rate * seconds) * clients, P(0.5), P(0.99), P(0.999),
           lat_n ? lat[lat_n - 1] / 1000.0 : 0, cpu * 1e6 / (lat_n ? lat_n : 1));
    return 0;
}
