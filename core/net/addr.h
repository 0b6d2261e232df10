/* Network addresses: IPv4 and IPv6 literals with a port, parsed from and
 * printed to the forms an operator writes ("127.0.0.1:7777", "[::1]:7777"). */
#ifndef PIER_NET_ADDR_H
#define PIER_NET_ADDR_H

#include "os/os.h"
#include <stddef.h>
#include <stdint.h>

typedef struct net_addr {
  union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
  } u;
} net_addr;

#define NET_ADDR_STRLEN 64 /* "[ffff:...:ffff%scope]:65535" fits */

/* host is an IPv4 or IPv6 literal (brackets allowed for IPv6). Returns 0 or
 * -EINVAL. */
int net_addr_parse(const char *host, uint16_t port, net_addr *out);
/* "host:port" or "[v6]:port". Returns 0 or -EINVAL. */
int net_addr_parse_hostport(const char *text, net_addr *out);
/* Writes "1.2.3.4:80" or "[::1]:80"; returns buf. */
char *net_addr_format(const net_addr *a, char *buf, size_t len);
socklen_t net_addr_len(const net_addr *a);
uint16_t net_addr_port(const net_addr *a);
int net_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, net_addr *out);

#endif
