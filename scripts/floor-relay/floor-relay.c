/*
 * floor-relay: the least a relay can do, in C. It listens for UDP and
 * TCP on 127.0.0.1:PORT and relays to SERVER:SPORT over host sockets,
 * from one level-triggered epoll loop: one datagram or one read per
 * wake-up, straight to the other side. No TAP, no headers, no flow
 * table: a request/response through it costs two waits, two reads and
 * two writes, the system calls a relay's exchange costs, and nothing
 * else. scripts/rr-interleaved.sh (FLOOR=1) runs it beside its Go twin
 * (go/main.go beside this file) to show what the language costs a relay on
 * the machine at hand.
 *
 *   cc -O2 -o floor-relay-c floor-relay.c
 *   ./floor-relay-c PORT SERVER SPORT
 *
 * It serves one TCP connection at a time (the script opens one) and
 * answers UDP from the last client that sent. It ends on SIGINT/SIGTERM.
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void add(int ep, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
}

static int sock(int type)
{
	int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	return fd;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: floor-relay-c PORT SERVER SPORT\n");
		return 2;
	}
	struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
	struct sockaddr_in srv = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
	inet_pton(AF_INET, "127.0.0.1", &me.sin_addr);
	if (inet_pton(AF_INET, argv[2], &srv.sin_addr) != 1) {
		fprintf(stderr, "floor-relay-c: %s is not an IPv4 address\n", argv[2]);
		return 2;
	}
	int one = 1;
	int u = sock(SOCK_DGRAM), uo = sock(SOCK_DGRAM), l = sock(SOCK_STREAM);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(u, (void *)&me, sizeof me) < 0 || bind(l, (void *)&me, sizeof me) < 0)
		die("bind");
	if (connect(uo, (void *)&srv, sizeof srv) < 0)
		die("connect udp");
	if (listen(l, 16) < 0)
		die("listen");
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	add(ep, u);
	add(ep, uo);
	add(ep, l);
	struct sockaddr_in client;
	socklen_t clen = 0;
	int c = -1, co = -1; /* the TCP connection's two sides */
	static char buf[65536];
	struct epoll_event evs[8];
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int n = epoll_wait(ep, evs, 8, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			ssize_t m;
			if (fd == u) {
				clen = sizeof client;
				m = recvfrom(u, buf, sizeof buf, 0, (void *)&client, &clen);
				if (m >= 0)
					send(uo, buf, m, 0);
			} else if (fd == uo) {
				m = recv(uo, buf, sizeof buf, 0);
				if (m >= 0 && clen)
					sendto(u, buf, m, 0, (void *)&client, clen);
			} else if (fd == l) {
				int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
				if (a < 0)
					continue;
				if (c >= 0) { /* one at a time */
					close(a);
					continue;
				}
				int o = sock(SOCK_STREAM);
				if (connect(o, (void *)&srv, sizeof srv) < 0) {
					close(a);
					close(o);
					continue;
				}
				setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
				setsockopt(o, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
				c = a;
				co = o;
				add(ep, c);
				add(ep, co);
			} else if (fd == c || fd == co) {
				int to = fd == c ? co : c;
				m = recv(fd, buf, sizeof buf, 0);
				if (m <= 0) { /* the end of either side ends both */
					close(c);
					close(co);
					c = co = -1;
					break;
				}
				send(to, buf, m, 0);
			}
		}
	}
}
