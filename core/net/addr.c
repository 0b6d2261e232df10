/* Address parsing and printing on top of inet_pton/inet_ntop. */
#include "net/addr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int net_addr_parse(const char *host, uint16_t port, net_addr *out) {
  char buf[INET6_ADDRSTRLEN + 2];
  size_t n;

  memset(out, 0, sizeof(*out));
  if (!host)
    return -EINVAL;
  n = strlen(host);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
    if (n - 2 >= sizeof(buf))
      return -EINVAL;
    memcpy(buf, host + 1, n - 2);
    buf[n - 2] = '\0';
    host = buf;
    if (inet_pton(AF_INET6, host, &out->u.in6.sin6_addr) != 1)
      return -EINVAL;
    out->u.in6.sin6_family = AF_INET6;
    out->u.in6.sin6_port = htons(port);
    return 0;
  }
  if (inet_pton(AF_INET, host, &out->u.in4.sin_addr) == 1) {
    out->u.in4.sin_family = AF_INET;
    out->u.in4.sin_port = htons(port);
    return 0;
  }
  if (inet_pton(AF_INET6, host, &out->u.in6.sin6_addr) == 1) {
    out->u.in6.sin6_family = AF_INET6;
    out->u.in6.sin6_port = htons(port);
    return 0;
  }
  return -EINVAL;
}

int net_addr_parse_hostport(const char *text, net_addr *out) {
  char host[INET6_ADDRSTRLEN + 2];
  const char *colon;
  char *end;
  unsigned long port;
  size_t hlen;

  if (!text)
    return -EINVAL;
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (!close || close[1] != ':')
      return -EINVAL;
    colon = close + 1;
  } else {
    colon = strrchr(text, ':');
    if (!colon || memchr(text, ':', (size_t)(colon - text)))
      return -EINVAL; /* bare IPv6 needs brackets when a port follows */
  }
  hlen = (size_t)(colon - text);
  if (hlen == 0 || hlen >= sizeof(host) || colon[1] == '\0')
    return -EINVAL;
  memcpy(host, text, hlen);
  host[hlen] = '\0';
  for (const char *d = colon + 1; *d; d++)
    if (*d < '0' || *d > '9' || d - colon > 5)
      return -EINVAL; /* digits only: no sign, blanks or junk */
  port = strtoul(colon + 1, &end, 10);
  if (port > 65535)
    return -EINVAL;
  return net_addr_parse(host, (uint16_t)port, out);
}

char *net_addr_format(const net_addr *a, char *buf, size_t len) {
  char host[INET6_ADDRSTRLEN];
  if (a->u.sa.sa_family == AF_INET) {
    inet_ntop(AF_INET, &a->u.in4.sin_addr, host, sizeof(host));
    snprintf(buf, len, "%s:%u", host, ntohs(a->u.in4.sin_port));
  } else if (a->u.sa.sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &a->u.in6.sin6_addr, host, sizeof(host));
    snprintf(buf, len, "[%s]:%u", host, ntohs(a->u.in6.sin6_port));
  } else {
    snprintf(buf, len, "(none)");
  }
  return buf;
}

socklen_t net_addr_len(const net_addr *a) {
  return a->u.sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

uint16_t net_addr_port(const net_addr *a) {
  return ntohs(a->u.sa.sa_family == AF_INET6 ? a->u.in6.sin6_port : a->u.in4.sin_port);
}

int net_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, net_addr *out) {
  memset(out, 0, sizeof(*out));
  if (sa->sa_family == AF_INET && (size_t)len >= sizeof(struct sockaddr_in)) {
    memcpy(&out->u.in4, sa, sizeof(struct sockaddr_in));
    return 0;
  }
  if (sa->sa_family == AF_INET6 && (size_t)len >= sizeof(struct sockaddr_in6)) {
    memcpy(&out->u.in6, sa, sizeof(struct sockaddr_in6));
    return 0;
  }
  return -EAFNOSUPPORT;
}
