/* Replays every fuzz input kept in the tree through its target: the seed
 * corpus (tests/fuzz/corpus/<target>/) and each input that once broke
 * something (tests/fuzz/regressions/<target>/). The targets are compiled in
 * with their entry points renamed, so this runs in every build, sanitized or
 * not, with or without clang. A target that aborts fails its test case; the
 * input being replayed is the last "replay:" line printed. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"

int fuzz_framing_entry(const uint8_t *data, size_t size);
int fuzz_config_entry(const uint8_t *data, size_t size);
int fuzz_admin_entry(const uint8_t *data, size_t size);
int fuzz_ws_entry(const uint8_t *data, size_t size);
int fuzz_ws_http_entry(const uint8_t *data, size_t size);

static const struct target {
  const char *name;
  int (*entry)(const uint8_t *data, size_t size);
} targets[] = {
    {"fuzz_framing", fuzz_framing_entry},
    {"fuzz_config", fuzz_config_entry},
    {"fuzz_admin", fuzz_admin_entry},
    {"fuzz_ws", fuzz_ws_entry},
    {"fuzz_ws_http", fuzz_ws_http_entry},
};
#define NTARGETS ((int)(sizeof(targets) / sizeof(targets[0])))

#define REPLAY_MAX_INPUT (1024 * 1024)

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file in dir (in name order) through t; returns how many,
 * or -1 when dir does not exist. */
static int replay_dir(const struct target *t, const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char **names = NULL;
  size_t n = 0, cap = 0;

  if (!d)
    return -1;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.')
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      names = realloc(names, cap * sizeof(*names));
      ck_assert_ptr_nonnull(names);
    }
    names[n] = strdup(e->d_name);
    ck_assert_ptr_nonnull(names[n]);
    n++;
  }
  closedir(d);
  if (n)
    qsort(names, n, sizeof(*names), by_name);

  int ran = 0;
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
    free(names[i]);
    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
      continue;
    ck_assert_msg(st.st_size <= REPLAY_MAX_INPUT, "%s: larger than %d bytes", path, REPLAY_MAX_INPUT);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s: cannot open", path);
    uint8_t *buf = malloc((size_t)st.st_size + 1); /* +1: never malloc(0) */
    ck_assert_ptr_nonnull(buf);
    size_t got = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    ck_assert_msg(got == (size_t)st.st_size, "%s: short read", path);
    fprintf(stderr, "replay: %s\n", path);
    t->entry(buf, got);
    free(buf);
    ran++;
  }
  free(names);
  return ran;
}

START_TEST(replay) {
  const struct target *t = &targets[_i];
  char dir[4096];
  int seeds, regressions;

  snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", PIER_SOURCE_DIR, t->name);
  seeds = replay_dir(t, dir);
  ck_assert_msg(seeds > 0, "%s: no seed inputs", dir);
  snprintf(dir, sizeof(dir), "%s/tests/fuzz/regressions/%s", PIER_SOURCE_DIR, t->name);
  regressions = replay_dir(t, dir);
  fprintf(stderr, "%s: %d seed inputs, %d regression inputs\n", t->name, seeds,
          regressions < 0 ? 0 : regressions);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fuzz_replay");
  TCase *tc = tcase_create("replay");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, replay, 0, NTARGETS);
  suite_add_tcase(s, tc);
  return test_run(s);
}
