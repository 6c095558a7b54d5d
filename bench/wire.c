/* bench/wire: a userspace `netem delay` for `bench/run latency`.
 *
 * This machine's kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not set
 * and there are no modules), so `tc qdisc ... netem` fails. This does the
 * same job at the same layer: two TUN devices, one in the root network
 * namespace and one in a namespace the bench made, and every IP packet read
 * from one side is written to the other side DELAY microseconds later.
 * Everything crosses it as real packets (the TCP handshake, data, ACKs), so
 * TCP sees the round trip a real network would give it. One direction is a
 * FIFO: a constant delay keeps the order.
 *
 *   wire NETNS_PATH ROOT_IF NS_IF DELAY_FILE
 *
 * DELAY_FILE holds the one-way delay in microseconds; SIGHUP re-reads it.
 * Prints "ready" once both devices exist (the bench then gives them their
 * addresses); on SIGTERM prints the packet and drop counts and exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 32768 /* per direction: ~200 ms of 100k packets/s */
#define SLOT_BYTES 2048 /* MTU 1500 plus room */

struct slot {
	uint64_t due;
	uint32_t len;
	unsigned char data[SLOT_BYTES];
};

struct ring {
	struct slot *s;
	uint32_t head, tail; /* head: next to send; tail: next free */
	uint64_t packets, dropped;
};

static volatile sig_atomic_t reload = 1, stop;

static void on_hup(int sig) { (void)sig; reload = 1; }
static void on_term(int sig) { (void)sig; stop = 1; }

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int tun(const char *name)
{
	struct ifreq ifr;
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -1;
	memset(&ifr, 0, sizeof ifr);
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads every packet waiting on fd into r, each due `delay` from now. */
static void take(int fd, struct ring *r, uint64_t delay)
{
	for (;;) {
		struct slot *s = &r->s[r->tail % SLOTS];
		unsigned char scratch[SLOT_BYTES];
		int full = r->tail - r->head >= SLOTS;
		ssize_t n = read(fd, full ? scratch : s->data, SLOT_BYTES);
		if (n <= 0)
			return;
		r->packets++;
		if (full) { /* as netem's `limit`: drop */
			r->dropped++;
			continue;
		}
		s->len = (uint32_t)n;
		s->due = now_ns() + delay;
		r->tail++;
	}
}

/* Writes the packets of r that are due to fd. */
static void give(int fd, struct ring *r, uint64_t now)
{
	while (r->head != r->tail && r->s[r->head % SLOTS].due <= now) {
		struct slot *s = &r->s[r->head % SLOTS];
		if (write(fd, s->data, s->len) < 0)
			r->dropped++;
		r->head++;
	}
}

static uint64_t read_delay(const char *path, uint64_t old)
{
	FILE *f = fopen(path, "r");
	unsigned long long us;
	if (!f)
		return old;
	if (fscanf(f, "%llu", &us) != 1)
		us = old / 1000;
	fclose(f);
	return (uint64_t)us * 1000;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: wire NETNS_PATH ROOT_IF NS_IF DELAY_FILE\n");
		return 2;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	prctl(PR_SET_TIMERSLACK, 1UL); /* wake when a packet is due, not 50 µs later */

	int fd[2];
	fd[0] = tun(argv[2]);
	int ns = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd[0] < 0 || ns < 0 || setns(ns, CLONE_NEWNET) < 0 || (fd[1] = tun(argv[3])) < 0) {
		perror("wire: setting up the TUN devices");
		return 1;
	}
	struct ring r[2]; /* r[i]: read from fd[i], written to fd[1 - i] */
	for (int i = 0; i < 2; i++) {
		memset(&r[i], 0, sizeof r[i]);
		r[i].s = malloc(sizeof(struct slot) * SLOTS);
		if (!r[i].s) {
			perror("wire: malloc");
			return 1;
		}
	}
	printf("ready\n");
	fflush(stdout);

	uint64_t delay = 0;
	while (!stop) {
		if (reload) {
			reload = 0;
			delay = read_delay(argv[4], delay);
		}
		uint64_t now = now_ns(), next = UINT64_MAX;
		for (int i = 0; i < 2; i++) {
			give(fd[1 - i], &r[i], now);
			if (r[i].head != r[i].tail && r[i].s[r[i].head % SLOTS].due < next)
				next = r[i].s[r[i].head % SLOTS].due;
		}
		struct pollfd p[2] = {{fd[0], POLLIN, 0}, {fd[1], POLLIN, 0}};
		struct timespec ts, *tsp = NULL;
		if (next != UINT64_MAX) {
			uint64_t wait = next > now ? next - now : 0;
			ts.tv_sec = (time_t)(wait / 1000000000u);
			ts.tv_nsec = (long)(wait % 1000000000u);
			tsp = &ts;
		}
		if (ppoll(p, 2, tsp, NULL) < 0 && errno != EINTR) {
			perror("wire: ppoll");
			return 1;
		}
		for (int i = 0; i < 2; i++)
			if (p[i].revents & POLLIN)
				take(fd[i], &r[i], delay);
	}
	fprintf(stderr, "wire: %s->%s %llu packets, %llu dropped; %s->%s %llu packets, %llu dropped\n",
		argv[2], argv[3], (unsigned long long)r[0].packets, (unsigned long long)r[0].dropped,
		argv[3], argv[2], (unsigned long long)r[1].packets, (unsigned long long)r[1].dropped);
	return 0;
}
