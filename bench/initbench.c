/* initbench: the timing driver behind bench/run.
 *
 * Runs commands with fork/exec (or clone into a new PID namespace, so the
 * command is PID 1 as in a container) and times them with CLOCK_MONOTONIC.
 * Commands are given after the options, separated by "::"; every mode
 * interleaves them (A B C A B C ..., the starting command rotating each
 * round) and prints one line per measurement for bench/run to summarise.
 * Every command's stdin, stdout and stderr are /dev/null.
 *
 *   initbench startup N PID1 CMD :: CMD ...
 *       N rounds; prints "I NS": wall time from clone to waitpid.
 *       PID1=1 runs each command as PID 1 of a fresh PID namespace.
 *   initbench signal N DIR CMD :: CMD ...
 *       Command I runs as PID 1 (new PID and mount namespace, fresh /proc);
 *       its child must write DIR/ready.I when it is ready and DIR/stamp.I
 *       (CLOCK_MONOTONIC ns) when it gets SIGTERM. Sends SIGTERM to the PID 1
 *       from outside and prints "I STAMP-T0 EXIT-T0" in ns.
 *   initbench idle SECS DIR CMD :: CMD ...
 *       Starts every command at once as PID 1, waits for DIR/ready.I, settles
 *       1 s, then samples the PID 1's context switches, CPU time and memory
 *       over SECS seconds. Prints "I CSW TICKS RUN_NS VMHWM_KB RSSANON_KB".
 *   initbench run N CMD :: CMD ...
 *       Runs each command as PID 1 (fresh /proc) to completion; prints "I NS".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXCMD 16

static char **cmds[MAXCMD];
static int ncmd;
static int devnull;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Splits argv at "::" into cmds[]. */
static void split(int argc, char **argv) {
    cmds[ncmd++] = argv;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "::") == 0) {
            argv[i] = NULL;
            if (ncmd == MAXCMD) {
                fprintf(stderr, "initbench: too many commands\n");
                exit(2);
            }
            cmds[ncmd++] = argv + i + 1;
        }
    }
}

/* Starts cmd; pid1: in a new PID namespace; proc: with its own /proc too. */
static pid_t start(char **cmd, int pid1, int proc) {
    long flags = SIGCHLD;
    if (pid1)
        flags |= CLONE_NEWPID;
    if (proc)
        flags |= CLONE_NEWNS;
    /* Raw clone with no new stack: fork semantics, plus the namespaces. */
    pid_t pid = (pid_t)syscall(SYS_clone, flags, NULL, NULL, NULL, NULL);
    if (pid < 0)
        die("clone");
    if (pid == 0) {
        if (proc) {
            if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
                mount("proc", "/proc", "proc", 0, NULL) < 0)
                _exit(126);
        }
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execv(cmd[0], cmd);
        _exit(127);
    }
    return pid;
}

static int reap(pid_t pid) {
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die("waitpid");
    return st;
}

static void path(char *buf, const char *dir, const char *name, int i) {
    snprintf(buf, 4096, "%s/%s.%d", dir, name, i);
}

/* Waits up to 5 s for a file to exist and be non-empty. */
static int wait_file(const char *p) {
    struct stat s;
    for (int i = 0; i < 100000; i++) {
        if (stat(p, &s) == 0 && s.st_size > 0)
            return 0;
        struct timespec d = {0, 50000};
        nanosleep(&d, NULL);
    }
    return -1;
}

static uint64_t read_u64(const char *p) {
    FILE *f = fopen(p, "r");
    unsigned long long v = 0;
    if (!f || fscanf(f, "%llu", &v) != 1)
        v = 0;
    if (f)
        fclose(f);
    return v;
}

static void settle(long us) {
    struct timespec d = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&d, NULL);
}

static int mode_startup(int n, int pid1) {
    for (int r = 0; r < n; r++)
        for (int k = 0; k < ncmd; k++) {
            int i = (r + k) % ncmd;
            uint64_t t0 = now_ns();
            pid_t pid = start(cmds[i], pid1, 0);
            int st = reap(pid);
            uint64_t t1 = now_ns();
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "initbench: command %d failed (status %#x)\n", i, st);
                return 1;
            }
            printf("%d %llu\n", i, (unsigned long long)(t1 - t0));
        }
    return 0;
}

static int mode_signal(int n, const char *dir) {
    char ready[4096], stamp[4096];
    for (int r = 0; r < n; r++)
        for (int k = 0; k < ncmd; k++) {
            int i = (r + k) % ncmd;
            path(ready, dir, "ready", i);
            path(stamp, dir, "stamp", i);
            unlink(ready);
            unlink(stamp);
            pid_t pid = start(cmds[i], 1, 1);
            if (wait_file(ready) < 0) {
                fprintf(stderr, "initbench: command %d never got ready\n", i);
                kill(pid, SIGKILL);
                reap(pid);
                return 1;
            }
            settle(2000); /* let the init reach its wait */
            uint64_t t0 = now_ns();
            kill(pid, SIGTERM);
            reap(pid);
            uint64_t t1 = now_ns();
            uint64_t ts = read_u64(stamp);
            if (ts == 0) {
                fprintf(stderr, "initbench: command %d: child never stamped SIGTERM\n", i);
                return 1;
            }
            printf("%d %lld %llu\n", i, (long long)(ts - t0), (unsigned long long)(t1 - t0));
            fflush(stdout);
        }
    return 0;
}

struct sample {
    unsigned long long csw, ticks, run_ns, hwm, rss_anon;
};

static void sample(pid_t pid, struct sample *s) {
    char p[64], line[512];
    memset(s, 0, sizeof *s);
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    FILE *f = fopen(p, "r");
    if (f) {
        unsigned long long v;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1 ||
                sscanf(line, "nonvoluntary_ctxt_switches: %llu", &v) == 1)
                s->csw += v;
            else if (sscanf(line, "VmHWM: %llu", &v) == 1)
                s->hwm = v;
            else if (sscanf(line, "RssAnon: %llu", &v) == 1)
                s->rss_anon = v;
        }
        fclose(f);
    }
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    f = fopen(p, "r");
    if (f && fgets(line, sizeof line, f)) {
        char *c = strrchr(line, ')');
        unsigned long long ut = 0, st = 0;
        /* Fields after the comm: state is 3, utime 14, stime 15. */
        if (c && sscanf(c + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
            s->ticks = ut + st;
    }
    if (f)
        fclose(f);
    snprintf(p, sizeof p, "/proc/%d/schedstat", pid);
    s->run_ns = read_u64(p);
}

static int mode_idle(int secs, const char *dir) {
    pid_t pids[MAXCMD];
    struct sample a[MAXCMD], b[MAXCMD];
    char ready[4096];
    for (int i = 0; i < ncmd; i++) {
        path(ready, dir, "ready", i);
        unlink(ready);
        pids[i] = start(cmds[i], 1, 1);
    }
    for (int i = 0; i < ncmd; i++) {
        path(ready, dir, "ready", i);
        if (wait_file(ready) < 0) {
            fprintf(stderr, "initbench: command %d never got ready\n", i);
            return 1;
        }
    }
    settle(1000000);
    for (int i = 0; i < ncmd; i++)
        sample(pids[i], &a[i]);
    settle((long)secs * 1000000);
    for (int i = 0; i < ncmd; i++)
        sample(pids[i], &b[i]);
    for (int i = 0; i < ncmd; i++) {
        printf("%d %llu %llu %llu %llu %llu\n", i, b[i].csw - a[i].csw, b[i].ticks - a[i].ticks,
               b[i].run_ns - a[i].run_ns, b[i].hwm, b[i].rss_anon);
        kill(pids[i], SIGKILL); /* PID 1 gone: the kernel kills the namespace */
        reap(pids[i]);
    }
    return 0;
}

static int mode_run(int n) {
    for (int r = 0; r < n; r++)
        for (int k = 0; k < ncmd; k++) {
            int i = (r + k) % ncmd;
            uint64_t t0 = now_ns();
            reap(start(cmds[i], 1, 1));
            printf("%d %llu\n", i, (unsigned long long)(now_ns() - t0));
            fflush(stdout);
        }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: see the comment at the top of initbench.c\n");
        return 2;
    }
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        die("/dev/null");
    const char *mode = argv[1];
    if (strcmp(mode, "startup") == 0) {
        split(argc - 4, argv + 4);
        return mode_startup(atoi(argv[2]), atoi(argv[3]));
    }
    if (strcmp(mode, "signal") == 0) {
        split(argc - 4, argv + 4);
        return mode_signal(atoi(argv[2]), argv[3]);
    }
    if (strcmp(mode, "idle") == 0) {
        split(argc - 4, argv + 4);
        return mode_idle(atoi(argv[2]), argv[3]);
    }
    if (strcmp(mode, "run") == 0) {
        split(argc - 3, argv + 3);
        return mode_run(atoi(argv[2]));
    }
    fprintf(stderr, "initbench: unknown mode %s\n", mode);
    return 2;
}
