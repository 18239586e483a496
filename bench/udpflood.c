/*
 * udpflood: a fixed-count, rate-limited UDP generator for
 * scripts/bench-netns.sh.
 *
 * Sends COUNT datagrams of PAYLOAD bytes to DST:PORT from FLOWS connected
 * UDP sockets bound to source ports BASE..BASE+FLOWS-1 (one flow each),
 * round robin, in sendmmsg batches of 32, at most RATE datagrams per
 * second (0: as fast as the socket takes them), and stops after MAXSECS
 * seconds whatever was sent. Prints one line:
 *   sent=<n> errors=<n> elapsed_ns=<n> utime_us=<n> stime_us=<n>
 * Touches nothing but its own sockets.
 *
 * usage: udpflood DST PORT COUNT FLOWS BASE RATE PAYLOAD MAXSECS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define MAX_FLOWS 1024

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 9) {
		fprintf(stderr, "usage: %s DST PORT COUNT FLOWS BASE RATE PAYLOAD MAXSECS\n", argv[0]);
		return 2;
	}
	const char *dst = argv[1];
	int port = atoi(argv[2]);
	long long count = atoll(argv[3]);
	int flows = atoi(argv[4]);
	int base = atoi(argv[5]);
	long long rate = atoll(argv[6]);
	int payload = atoi(argv[7]);
	long long maxsecs = atoll(argv[8]);
	if (flows < 1 || flows > MAX_FLOWS || payload < 1 || payload > 1400 || count < 1 || maxsecs < 1) {
		fprintf(stderr, "bad arguments\n");
		return 2;
	}
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (inet_pton(AF_INET, dst, &to.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", dst);
		return 2;
	}
	int fds[MAX_FLOWS];
	for (int i = 0; i < flows; i++) {
		fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in from = { .sin_family = AF_INET, .sin_port = htons(base + i) };
		if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&from, sizeof from) < 0 ||
		    connect(fds[i], (struct sockaddr *)&to, sizeof to) < 0) {
			perror("socket/bind/connect");
			return 1;
		}
	}
	static char buf[1400];
	memset(buf, 'x', sizeof buf);
	struct iovec iov = { .iov_base = buf, .iov_len = payload };
	struct mmsghdr msgs[BATCH];
	memset(msgs, 0, sizeof msgs);
	for (int i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	long long sent = 0, errors = 0;
	long long start = now_ns(), deadline = start + maxsecs * 1000000000LL;
	int flow = 0;
	while (sent < count) {
		long long t = now_ns();
		if (t > deadline)
			break;
		if (rate > 0) {
			long long due = start + sent * 1000000000LL / rate;
			if (due > t) {
				struct timespec ts = { .tv_sec = (due - t) / 1000000000LL,
						       .tv_nsec = (due - t) % 1000000000LL };
				nanosleep(&ts, NULL);
			}
		}
		int n = count - sent < BATCH ? (int)(count - sent) : BATCH;
		int r = sendmmsg(fds[flow], msgs, n, 0);
		if (r < 0) {
			errors++;
			if (errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED)
				break;
		} else {
			sent += r;
		}
		flow = (flow + 1) % flows;
	}
	long long elapsed = now_ns() - start;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("sent=%lld errors=%lld elapsed_ns=%lld utime_us=%lld stime_us=%lld\n", sent, errors,
	       elapsed, (long long)ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec,
	       (long long)ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec);
	return 0;
}
