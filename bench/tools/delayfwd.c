/*
 * delayfwd: a userspace stand-in for `tc netem delay`, which this kernel
 * lacks. Forwards every Ethernet frame between two interfaces (raw
 * AF_PACKET sockets), holding each one DELAY_US microseconds before sending
 * it on, in order, in both directions. Used by bench/tftp.sh between two
 * veth pairs inside network namespaces the script creates.
 *
 *   delayfwd IFACE_A IFACE_B DELAY_US
 *
 * Runs until SIGTERM or SIGINT, then prints per-direction counts (frames,
 * drops, truncations) and how late past their due time frames were sent,
 * so the caller can tell whether the forwarder kept up.
 *
 * Build: cc -O2 -Wall -o delayfwd delayfwd.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_MAX 2048   /* MTU 1500 + header; GRO is off on both ports */
#define QUEUE_LEN 16384  /* frames held per direction (1 ms at ~16 M frames/s) */

struct frame {
	uint64_t due_ns;
	uint16_t len;
	unsigned char data[FRAME_MAX];
};

struct port {
	const char *name;
	int fd;
	/* frames received on this port, waiting to go out of the other one */
	struct frame *ring;
	size_t head, count;
	uint64_t rx, tx, dropped, truncated, send_errors;
	uint64_t late_sum_ns, late_max_ns;
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int open_port(struct port *p, const char *name)
{
	p->name = name;
	p->fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
	if (p->fd < 0) { perror("delayfwd: socket(AF_PACKET)"); return -1; }
	unsigned ifindex = if_nametoindex(name);
	if (!ifindex) { fprintf(stderr, "delayfwd: no interface %s\n", name); return -1; }
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ETH_P_ALL),
		.sll_ifindex = (int)ifindex,
	};
	if (bind(p->fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
		perror("delayfwd: bind");
		return -1;
	}
	int buf = 8 << 20;
	setsockopt(p->fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
	setsockopt(p->fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
	p->ring = calloc(QUEUE_LEN, sizeof *p->ring);
	if (!p->ring) { perror("delayfwd: calloc"); return -1; }
	return 0;
}

/* Reads everything waiting on `in`, stamping each frame due at now + delay. */
static void receive_all(struct port *in, uint64_t delay_ns)
{
	for (;;) {
		struct sockaddr_ll from;
		socklen_t fromlen = sizeof from;
		unsigned char scratch[FRAME_MAX];
		struct frame *slot = in->count < QUEUE_LEN
			? &in->ring[(in->head + in->count) % QUEUE_LEN] : NULL;
		unsigned char *dst = slot ? slot->data : scratch;
		ssize_t n = recvfrom(in->fd, dst, FRAME_MAX, MSG_TRUNC,
				     (struct sockaddr *)&from, &fromlen);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				perror("delayfwd: recvfrom");
			return;
		}
		if (from.sll_pkttype == PACKET_OUTGOING)
			continue; /* our own transmissions on this port */
		in->rx++;
		if (n > FRAME_MAX) { in->truncated++; continue; }
		if (!slot) { in->dropped++; continue; }
		slot->len = (uint16_t)n;
		slot->due_ns = now_ns() + delay_ns;
		in->count++;
	}
}

/* Sends every frame of `in`'s queue that is due, out of `out`. */
static void send_due(struct port *in, struct port *out, uint64_t now)
{
	while (in->count) {
		struct frame *f = &in->ring[in->head];
		if (f->due_ns > now)
			return;
		if (send(out->fd, f->data, f->len, 0) < 0)
			in->send_errors++;
		else
			in->tx++;
		uint64_t late = now - f->due_ns;
		in->late_sum_ns += late;
		if (late > in->late_max_ns)
			in->late_max_ns = late;
		in->head = (in->head + 1) % QUEUE_LEN;
		in->count--;
	}
}

static void report(const struct port *in, const struct port *out)
{
	fprintf(stderr,
		"delayfwd %s->%s: frames %llu forwarded %llu dropped %llu truncated %llu "
		"send_errors %llu late_mean_us %.1f late_max_us %.1f\n",
		in->name, out->name, (unsigned long long)in->rx,
		(unsigned long long)in->tx, (unsigned long long)in->dropped,
		(unsigned long long)in->truncated, (unsigned long long)in->send_errors,
		in->tx ? (double)in->late_sum_ns / (double)in->tx / 1000.0 : 0.0,
		(double)in->late_max_ns / 1000.0);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: delayfwd IFACE_A IFACE_B DELAY_US\n");
		return 2;
	}
	uint64_t delay_ns = strtoull(argv[3], NULL, 10) * 1000u;
	struct port ports[2] = {0};
	if (open_port(&ports[0], argv[1]) || open_port(&ports[1], argv[2]))
		return 1;
	/* Wake-ups within a microsecond, not the default 50 us slack. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

	sigset_t blocked, during_poll;
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGTERM);
	sigaddset(&blocked, SIGINT);
	sigprocmask(SIG_BLOCK, &blocked, &during_poll);
	sigdelset(&during_poll, SIGTERM);
	sigdelset(&during_poll, SIGINT);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	fprintf(stderr, "delayfwd: forwarding %s <-> %s, %llu us each way\n",
		argv[1], argv[2], (unsigned long long)(delay_ns / 1000));
	struct pollfd fds[2] = {
		{.fd = ports[0].fd, .events = POLLIN},
		{.fd = ports[1].fd, .events = POLLIN},
	};
	while (!stopping) {
		uint64_t now = now_ns();
		send_due(&ports[0], &ports[1], now);
		send_due(&ports[1], &ports[0], now);
		uint64_t wait_ns = 1000000000u;
		for (int i = 0; i < 2; i++) {
			if (ports[i].count) {
				uint64_t due = ports[i].ring[ports[i].head].due_ns;
				uint64_t w = due > now ? due - now : 0;
				if (w < wait_ns)
					wait_ns = w;
			}
		}
		struct timespec timeout = {
			.tv_sec = (time_t)(wait_ns / 1000000000u),
			.tv_nsec = (long)(wait_ns % 1000000000u),
		};
		int ready = ppoll(fds, 2, &timeout, &during_poll);
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			perror("delayfwd: ppoll");
			return 1;
		}
		if (fds[0].revents & POLLIN)
			receive_all(&ports[0], delay_ns);
		if (fds[1].revents & POLLIN)
			receive_all(&ports[1], delay_ns);
	}
	report(&ports[0], &ports[1]);
	report(&ports[1], &ports[0]);
	return 0;
}
