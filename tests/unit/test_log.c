/* base/log: JSON lines (escaping, a cut that keeps UTF-8 whole), the log
 * file and its reopen while other threads write (every line lands whole in
 * one file or the other, none is lost), and log_limited's budget. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "testlib.h"

static char dir[256], path[300];

static void setup(void) {
  test_mkdtemp(dir, sizeof(dir), "pier-log-");
  snprintf(path, sizeof(path), "%s/pierd.log", dir);
}

static char *slurp(const char *p) {
  FILE *f = fopen(p, "r");
  static char buf[1 << 22];
  size_t n;
  ck_assert_ptr_nonnull(f);
  n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

/* Whether s is valid UTF-8 (no cut sequence). */
static int valid_utf8(const unsigned char *s) {
  while (*s) {
    int need = *s < 0x80 ? 0 : *s >= 0xf0 ? 3 : *s >= 0xe0 ? 2 : *s >= 0xc0 ? 1 : -1;
    if (need < 0)
      return 0;
    s++;
    for (int i = 0; i < need; i++, s++)
      if ((*s & 0xc0) != 0x80)
        return 0;
  }
  return 1;
}

START_TEST(test_log_json_lines) {
  char big[4000];
  char *text, *nl;
  cJSON *j;
  setup();
  ck_assert_int_eq(log_open_file(path), 0);
  ck_assert_str_eq(log_file_path(), path);
  log_set_json(1);
  log_warn("a \"quote\", a \\ and \x01\t\n, caf\xc3\xa9");
  /* 'é' (2 bytes) repeated past the line's size: the cut keeps it whole. */
  for (size_t i = 0; i + 2 < sizeof(big); i += 2)
    memcpy(big + i, "\xc3\xa9", 2);
  big[sizeof(big) - 1 - (sizeof(big) - 1) % 2] = '\0';
  log_info("x%s", big);
  log_info("%s", big);
  text = slurp(path);

  nl = strchr(text, '\n');
  *nl = '\0';
  j = cJSON_Parse(text);
  ck_assert_msg(j != NULL, "%s", text);
  ck_assert_str_eq(cJSON_GetObjectItem(j, "level")->valuestring, "warn");
  ck_assert_str_eq(cJSON_GetObjectItem(j, "msg")->valuestring,
                   "a \"quote\", a \\ and \x01\t\n, caf\xc3\xa9");
  ck_assert_ptr_nonnull(strstr(text, "\\u0001\\t\\n"));
  cJSON_Delete(j);
  for (int k = 0; k < 2; k++) {
    text = nl + 1;
    nl = strchr(text, '\n');
    ck_assert_ptr_nonnull(nl);
    *nl = '\0';
    ck_assert(valid_utf8((const unsigned char *)text));
    j = cJSON_Parse(text);
    ck_assert_msg(j != NULL, "%s", text);
    ck_assert_int_gt(strlen(cJSON_GetObjectItem(j, "msg")->valuestring), 1000);
    cJSON_Delete(j);
  }
  test_rm_rf(dir);
}
END_TEST

#define WRITERS 4
#define LINES 5000

static void *writer(void *arg) {
  long id = (long)arg;
  for (int i = 0; i < LINES; i++)
    log_info("writer %ld line %d end", id, i);
  return NULL;
}

START_TEST(test_log_reopen_while_writing) {
  pthread_t t[WRITERS];
  char old[320];
  int rotations = 0, seen[WRITERS][LINES];
  setup();
  ck_assert_int_eq(log_open_file(path), 0);
  for (long i = 0; i < WRITERS; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, writer, (void *)i), 0);
  /* Rotate while they write: rename, reopen, a few times. */
  for (int r = 1; r <= 20; r++) {
    snprintf(old, sizeof(old), "%s.%d", path, r);
    ck_assert_int_eq(rename(path, old), 0);
    ck_assert_int_eq(log_reopen(), 0);
    rotations++;
    usleep(1000);
  }
  for (int i = 0; i < WRITERS; i++)
    pthread_join(t[i], NULL);

  /* Every line exactly once, whole, over all the files. */
  memset(seen, 0, sizeof(seen));
  for (int r = 0; r <= rotations; r++) {
    char *text;
    if (r == 0)
      snprintf(old, sizeof(old), "%s", path);
    else
      snprintf(old, sizeof(old), "%s.%d", path, r);
    text = slurp(old);
    for (char *line = text, *nl; *line; line = nl + 1) {
      long id;
      int n, end = 0;
      nl = strchr(line, '\n');
      ck_assert_ptr_nonnull(nl);
      *nl = '\0';
      ck_assert_msg(sscanf(line + 24, " info  writer %ld line %d end%n", &id, &n, &end) == 2 &&
                        end > 0 && line[24 + end] == '\0',
                    "torn line: %s", line);
      seen[id][n]++;
    }
  }
  for (int i = 0; i < WRITERS; i++)
    for (int k = 0; k < LINES; k++)
      ck_assert_int_eq(seen[i][k], 1);
  test_rm_rf(dir);
}
END_TEST

START_TEST(test_log_reopen_without_file_or_failing) {
  char moved[320];
  ck_assert_int_eq(log_reopen(), -ENOENT);
  ck_assert_ptr_null(log_file_path());
  setup();
  ck_assert_int_eq(log_open_file(path), 0);
  /* A directory where the file was: the reopen fails, the old file stays. */
  snprintf(moved, sizeof(moved), "%s.1", path);
  ck_assert_int_eq(rename(path, moved), 0);
  ck_assert_int_eq(test_mkdir(path), 0);
  ck_assert_int_eq(log_reopen(), -EISDIR);
  log_info("still here");
  ck_assert_ptr_nonnull(strstr(slurp(moved), " info  still here\n"));
  test_rm_rf(dir);
}
END_TEST

START_TEST(test_log_limited_drops_and_says_so) {
  log_rate rate = {0};
  char *text;
  setup();
  ck_assert_int_eq(log_open_file(path), 0);
  /* 15 lines at once: 10 pass. The window is a second; these take far less. */
  for (int i = 0; i < 15; i++)
    log_limited(&rate, LOG_INFO, "bad client %d", i);
  /* The next window's first line says how many were dropped. */
  usleep(1100 * 1000);
  log_limited(&rate, LOG_INFO, "bad client %d", 15);
  text = slurp(path);
  ck_assert_int_eq(test_count(text, " info  bad client "), 10);
  ck_assert_ptr_nonnull(strstr(text, " info  bad client 9\n"));
  ck_assert_ptr_null(strstr(text, "bad client 10\n"));
  ck_assert_ptr_nonnull(strstr(text, " info  (5 similar lines dropped) bad client 15\n"));
  test_rm_rf(dir);
}
END_TEST

int main(void) {
  Suite *s = suite_create("log");
  TCase *tc = tcase_create("log");
  tcase_add_test(tc, test_log_json_lines);
  tcase_add_test(tc, test_log_reopen_while_writing);
  tcase_add_test(tc, test_log_reopen_without_file_or_failing);
  tcase_add_test(tc, test_log_limited_drops_and_says_so);
  suite_add_tcase(s, tc);
  return test_run(s);
}
