/* ref_echo: the reference TCP echo server that bench/compare measures pierd
 * against, as close to the floor of overhead as a portable server gets: one
 * thread, level-triggered epoll, nonblocking sockets, read then write back;
 * bytes the socket will not take wait in a per-connection buffer (and reading
 * pauses) until it is writable. Usage: ref_echo PORT (0 = any free port). */
#define _GNU_SOURCE
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

typedef struct { char *buf; size_t off, len; } pend; /* unsent bytes of one fd */

int main(int argc, char **argv) {
  static char buf[16384];
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof(sa);
  struct epoll_event ev = {.events = EPOLLIN}, evs[256];
  int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), ep = epoll_create1(0);
  pend *p = calloc(1 << 20, sizeof(*p)); /* by fd */
  if (argc != 2 || lfd < 0 || ep < 0 || !p)
    return fprintf(stderr, "usage: ref_echo PORT\n"), 2;
  signal(SIGPIPE, SIG_IGN);
  sa.sin_port = htons((unsigned short)atoi(argv[1]));
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0)
    return perror("ref_echo: listen"), 1;
  fprintf(stderr, "ref_echo listening on 127.0.0.1:%u\n", ntohs(sa.sin_port));
  ev.data.fd = lfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd, c;
      ssize_t r, w;
      if (fd == lfd) {
        while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0 && c < (1 << 20)) {
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          ev = (struct epoll_event){.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
        }
        continue;
      }
      if (p[fd].len) { /* writable again: send what waited, then read again */
        w = write(fd, p[fd].buf + p[fd].off, p[fd].len);
        if (w > 0 && (p[fd].off += (size_t)w, p[fd].len -= (size_t)w) == 0) {
          ev = (struct epoll_event){.events = EPOLLIN, .data.fd = fd};
          epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        }
        if (w >= 0 || errno == EAGAIN)
          continue;
      } else if ((r = read(fd, buf, sizeof(buf))) > 0) {
        w = write(fd, buf, (size_t)r);
        if (w == r)
          continue;
        if (w < 0)
          w = 0;
        p[fd].buf = realloc(p[fd].buf, (size_t)(r - w));
        memcpy(p[fd].buf, buf + w, (size_t)(r - w));
        p[fd].off = 0;
        p[fd].len = (size_t)(r - w);
        ev = (struct epoll_event){.events = EPOLLOUT, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        continue;
      } else if (r < 0 && errno == EAGAIN) {
        continue;
      }
      free(p[fd].buf); /* EOF or error */
      p[fd] = (pend){0};
      close(fd);
    }
  }
}
