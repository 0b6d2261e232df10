/* Unit tests for address parsing and printing: IPv4 and IPv6 literals, the
 * host:port forms an operator writes, the inputs that must be refused, and
 * format/parse round trips. */
#include <errno.h>
#include <string.h>

#include "net/addr.h"
#include "testlib.h"

static const char *fmt(const net_addr *a) {
  static char buf[NET_ADDR_STRLEN];
  return net_addr_format(a, buf, sizeof(buf));
}

START_TEST(test_addr_parse_ipv4) {
  net_addr a;
  struct in_addr want;

  ck_assert_int_eq(net_addr_parse("127.0.0.1", 7777, &a), 0);
  ck_assert_int_eq(a.u.sa.sa_family, AF_INET);
  ck_assert_uint_eq(ntohs(a.u.in4.sin_port), 7777);
  ck_assert_uint_eq(ntohl(a.u.in4.sin_addr.s_addr), 0x7f000001u);
  ck_assert_uint_eq(net_addr_port(&a), 7777);
  ck_assert_uint_eq(net_addr_len(&a), sizeof(struct sockaddr_in));
  ck_assert_str_eq(fmt(&a), "127.0.0.1:7777");

  ck_assert_int_eq(net_addr_parse("0.0.0.0", 0, &a), 0);
  ck_assert_str_eq(fmt(&a), "0.0.0.0:0");
  ck_assert_int_eq(net_addr_parse("255.255.255.255", 65535, &a), 0);
  ck_assert_str_eq(fmt(&a), "255.255.255.255:65535");
  ck_assert_int_eq(net_addr_parse("10.1.2.3", 80, &a), 0);
  inet_pton(AF_INET, "10.1.2.3", &want);
  ck_assert_uint_eq(a.u.in4.sin_addr.s_addr, want.s_addr);
}
END_TEST

START_TEST(test_addr_parse_ipv6_with_and_without_brackets) {
  net_addr a, b;

  ck_assert_int_eq(net_addr_parse("::1", 80, &a), 0);
  ck_assert_int_eq(a.u.sa.sa_family, AF_INET6);
  ck_assert_uint_eq(net_addr_port(&a), 80);
  ck_assert_uint_eq(net_addr_len(&a), sizeof(struct sockaddr_in6));
  ck_assert_int_eq(memcmp(&a.u.in6.sin6_addr, &in6addr_loopback, 16), 0);
  ck_assert_str_eq(fmt(&a), "[::1]:80");

  ck_assert_int_eq(net_addr_parse("[::1]", 80, &b), 0);
  ck_assert_int_eq(b.u.sa.sa_family, AF_INET6);
  ck_assert_int_eq(memcmp(&a, &b, sizeof(a)), 0);
  ck_assert_str_eq(fmt(&b), "[::1]:80");

  ck_assert_int_eq(net_addr_parse("2001:db8::42", 443, &a), 0);
  ck_assert_str_eq(fmt(&a), "[2001:db8::42]:443");
  ck_assert_int_eq(net_addr_parse("[2001:DB8:0:0:0:0:0:42]", 443, &b), 0);
  ck_assert_int_eq(memcmp(&a, &b, sizeof(a)), 0);
  ck_assert_int_eq(net_addr_parse("::", 0, &a), 0);
  ck_assert_str_eq(fmt(&a), "[::]:0");
  ck_assert_int_eq(net_addr_parse("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]", 65535, &a), 0);
  ck_assert_str_eq(fmt(&a), "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
  /* A v4-mapped address stays IPv6. */
  ck_assert_int_eq(net_addr_parse("::ffff:1.2.3.4", 9, &a), 0);
  ck_assert_int_eq(a.u.sa.sa_family, AF_INET6);
  ck_assert_str_eq(fmt(&a), "[::ffff:1.2.3.4]:9");
}
END_TEST

START_TEST(test_addr_parse_rejects) {
  static const char *bad[] = {"",        "1.2.3",        "1.2.3.4.5", "256.0.0.1",  "localhost",
                              "[::1",    "::1]",         "[]",        "[127.0.0.1]", ":::",
                              "1.2.3.4 ", " 1.2.3.4",    "[::1]x",    "::g"};
  net_addr a;

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    ck_assert_msg(net_addr_parse(bad[i], 80, &a) == -EINVAL, "accepted \"%s\"", bad[i]);
  ck_assert_int_eq(net_addr_parse(NULL, 80, &a), -EINVAL);
}
END_TEST

START_TEST(test_addr_hostport_parses) {
  net_addr a;

  ck_assert_int_eq(net_addr_parse_hostport("127.0.0.1:7777", &a), 0);
  ck_assert_int_eq(a.u.sa.sa_family, AF_INET);
  ck_assert_uint_eq(ntohl(a.u.in4.sin_addr.s_addr), 0x7f000001u);
  ck_assert_uint_eq(net_addr_port(&a), 7777);

  ck_assert_int_eq(net_addr_parse_hostport("[::1]:80", &a), 0);
  ck_assert_int_eq(a.u.sa.sa_family, AF_INET6);
  ck_assert_int_eq(memcmp(&a.u.in6.sin6_addr, &in6addr_loopback, 16), 0);
  ck_assert_uint_eq(net_addr_port(&a), 80);

  ck_assert_int_eq(net_addr_parse_hostport("0.0.0.0:0", &a), 0);
  ck_assert_uint_eq(net_addr_port(&a), 0);
  ck_assert_int_eq(net_addr_parse_hostport("1.2.3.4:65535", &a), 0);
  ck_assert_uint_eq(net_addr_port(&a), 65535);
  ck_assert_int_eq(net_addr_parse_hostport("[::]:65535", &a), 0);
  ck_assert_uint_eq(net_addr_port(&a), 65535);
  ck_assert_int_eq(net_addr_parse_hostport("1.2.3.4:007", &a), 0);
  ck_assert_uint_eq(net_addr_port(&a), 7);
}
END_TEST

START_TEST(test_addr_hostport_rejects) {
  static const char *bad[] = {"",
                              "1.2.3",
                              "::1:80",
                              "127.0.0.1:",
                              "127.0.0.1:65536",
                              "127.0.0.1:-1",
                              "localhost:80",
                              "[::1]80",
                              "127.0.0.1",
                              ":80",
                              "[::1]",
                              "[::1]:",
                              "[]:80",
                              "[::1:80",
                              "127.0.0.1:+80",
                              "127.0.0.1:80x",
                              "127.0.0.1:0x50",
                              "127.0.0.1:99999999999999999999999",
                              "1.2.3:80",
                              "[127.0.0.1]:80"};
  net_addr a;

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    ck_assert_msg(net_addr_parse_hostport(bad[i], &a) == -EINVAL, "accepted \"%s\"", bad[i]);
  ck_assert_int_eq(net_addr_parse_hostport(NULL, &a), -EINVAL);
}
END_TEST

START_TEST(test_addr_hostport_rejects_space_in_port) {
  net_addr a;

  /* A port is digits only: whitespace is not skipped. */
  ck_assert_int_eq(net_addr_parse_hostport("127.0.0.1: 80", &a), -EINVAL);
  ck_assert_int_eq(net_addr_parse_hostport("[::1]: 80", &a), -EINVAL);
}
END_TEST

START_TEST(test_addr_format_round_trip) {
  static const char *texts[] = {"127.0.0.1:7777", "0.0.0.0:0",           "192.168.100.200:65535",
                                "[::1]:80",       "[::]:1",              "[2001:db8::1:2]:27015",
                                "[fe80::1]:443",  "[::ffff:10.0.0.1]:5"};
  for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
    net_addr a, b;
    char once[NET_ADDR_STRLEN];

    ck_assert_msg(net_addr_parse_hostport(texts[i], &a) == 0, "refused \"%s\"", texts[i]);
    net_addr_format(&a, once, sizeof(once));
    ck_assert_str_eq(once, texts[i]);
    ck_assert_int_eq(net_addr_parse_hostport(once, &b), 0);
    ck_assert_int_eq(memcmp(&a, &b, sizeof(a)), 0);
  }
}
END_TEST

START_TEST(test_addr_format_truncates_and_unset) {
  net_addr a;
  char small[8];

  memset(&a, 0, sizeof(a));
  ck_assert_str_eq(fmt(&a), "(none)");
  ck_assert_int_eq(net_addr_parse("127.0.0.1", 7777, &a), 0);
  ck_assert_ptr_eq(net_addr_format(&a, small, sizeof(small)), small);
  ck_assert_str_eq(small, "127.0.0");
}
END_TEST

START_TEST(test_addr_from_sockaddr) {
  struct sockaddr_in in4 = {.sin_family = AF_INET, .sin_port = htons(1234)};
  struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(4321)};
  /* A family pier does not serve (a unix socket's; both platforms define
   * AF_UNIX), at its full length. */
  struct sockaddr_storage un = {.ss_family = AF_UNIX};
  net_addr a;

  in4.sin_addr.s_addr = htonl(0x0a000001);
  ck_assert_int_eq(net_addr_from_sockaddr((struct sockaddr *)&in4, sizeof(in4), &a), 0);
  ck_assert_str_eq(fmt(&a), "10.0.0.1:1234");
  in6.sin6_addr = in6addr_loopback;
  ck_assert_int_eq(net_addr_from_sockaddr((struct sockaddr *)&in6, sizeof(in6), &a), 0);
  ck_assert_str_eq(fmt(&a), "[::1]:4321");
  ck_assert_int_eq(net_addr_from_sockaddr((struct sockaddr *)&un, sizeof(un), &a), -EAFNOSUPPORT);
  ck_assert_int_eq(net_addr_from_sockaddr((struct sockaddr *)&in6, sizeof(in4), &a), -EAFNOSUPPORT);
  ck_assert_int_eq(net_addr_from_sockaddr((struct sockaddr *)&in4, sizeof(in4) - 1, &a),
                   -EAFNOSUPPORT);
}
END_TEST

int main(void) {
  Suite *s = suite_create("addr");
  TCase *tc = tcase_create("addr");

  tcase_add_test(tc, test_addr_parse_ipv4);
  tcase_add_test(tc, test_addr_parse_ipv6_with_and_without_brackets);
  tcase_add_test(tc, test_addr_parse_rejects);
  tcase_add_test(tc, test_addr_hostport_parses);
  tcase_add_test(tc, test_addr_hostport_rejects);
  tcase_add_test(tc, test_addr_hostport_rejects_space_in_port);
  tcase_add_test(tc, test_addr_format_round_trip);
  tcase_add_test(tc, test_addr_format_truncates_and_unset);
  tcase_add_test(tc, test_addr_from_sockaddr);
  suite_add_tcase(s, tc);
  return test_run(s);
}
