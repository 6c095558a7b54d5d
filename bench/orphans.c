/* orphans: the zombie-reaping child for bench/run (figure 4).
 *
 *   orphans N REPORT
 *
 * A middle process forks N children that block on a pipe, then exits: the
 * kernel re-parents all N to the init (PID 1 or subreaper) and the closed
 * pipe makes them exit in one burst. This process then polls its parent's
 * children list (/proc/PPID/task/PPID/children: a zombie stays on it until
 * it is reaped) until only itself is left, or 10 s pass, and appends
 * "zombies=Z us=U" to REPORT: U is the time from the burst until every
 * orphan was reaped, Z how many of the init's children were still in state
 * Z at that point. Then it exits 0.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 20];

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* Reads the parent's children list into buf; returns the pid count other
 * than ours, or -1. */
static int siblings(char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    int count = 0, me = getpid();
    for (char *t = strtok(buf, " \n"); t; t = strtok(NULL, " \n"))
        if (atoi(t) != me)
            count++;
    return count;
}

/* Counts the parent's children that are in state Z (list read by siblings). */
static int zombies(char *path) {
    if (siblings(path) < 0)
        return -1;
    int z = 0, me = getpid();
    char p[64], line[512];
    for (char *t = buf, *end; *t; t = end) {
        int pid = (int)strtol(t, &end, 10);
        if (end == t)
            break;
        if (pid == me)
            continue;
        snprintf(p, sizeof p, "/proc/%d/stat", pid);
        FILE *f = fopen(p, "r");
        if (f && fgets(line, sizeof line, f)) {
            char *c = strrchr(line, ')');
            if (c && c[2] == 'Z')
                z++;
        }
        if (f)
            fclose(f);
    }
    return z;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: orphans N REPORT\n");
        return 2;
    }
    int n = atoi(argv[1]);
    int fds[2];
    if (pipe(fds) < 0)
        return 1;
    pid_t middle = fork();
    if (middle == 0) {
        close(fds[0]);
        for (int i = 0; i < n; i++) {
            if (fork() == 0) {
                char b;
                close(fds[1]);
                /* Blocks until the middle exits and the write end closes. */
                if (read(fds[0], &b, 1) < 0)
                    _exit(1);
                _exit(0);
            }
        }
        _exit(0);
    }
    close(fds[0]);
    close(fds[1]);
    waitpid(middle, NULL, 0);
    long long t0 = now_us();
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", getppid(), getppid());
    int left;
    while ((left = siblings(path)) != 0 && now_us() - t0 < 10000000) {
        struct timespec d = {0, 100000};
        nanosleep(&d, NULL);
    }
    long long us = now_us() - t0;
    int z = zombies(path);
    FILE *r = fopen(argv[2], "a");
    if (!r)
        return 1;
    fprintf(r, "zombies=%d us=%lld left=%d\n", z, us, left);
    fclose(r);
    return 0;
}
