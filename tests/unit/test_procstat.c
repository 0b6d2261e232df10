/* Unit tests for pier-bench's process figures (tools/bench/procstat.c): the
 * server CPU time that every "server CPU per message" in bench/compare is
 * made of. A child process spends a known amount of CPU, in two threads, and
 * reports its own CPU-time clock; what pier-bench reads for it from outside
 * must agree to well under a clock tick. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "procstat.h"
#include "testlib.h"

static double process_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Spins until this process has used `until` seconds of CPU. */
static void burn_until(double until) {
  volatile uint64_t x = 0;
  while (process_cpu_s() < until)
    for (int i = 0; i < 10000; i++)
      x += (uint64_t)i;
}

static void *burn_thread(void *arg) {
  burn_until(*(const double *)arg);
  return NULL;
}

/* The child: a thread that spends CPU and exits, then the main thread up to
 * 55 ms in all (half a clock tick past a tick's edge, so a figure rounded to
 * ticks is 5 ms off); it writes its own reading to `out` and then waits, using
 * no CPU, until its parent closes `hold`. */
static void child(int out, int hold) {
  double first = 0.025, total = 0.055, seen;
  pthread_t t;
  char c;
  if (pthread_create(&t, NULL, burn_thread, &first) != 0 || pthread_join(t, NULL) != 0)
    _exit(2);
  burn_until(total);
  seen = process_cpu_s();
  if (write(out, &seen, sizeof(seen)) != (ssize_t)sizeof(seen))
    _exit(3);
  while (read(hold, &c, 1) > 0) {
  }
  _exit(0);
}

START_TEST(test_procstat_reads_another_process_cpu_to_well_under_a_tick) {
  int out[2], hold[2], status = 0;
  double seen = 0, got = -1;
  pid_t pid;

  ck_assert_int_eq(pipe(out), 0);
  ck_assert_int_eq(pipe(hold), 0);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(out[0]);
    close(hold[1]);
    child(out[1], hold[0]);
  }
  close(out[1]);
  close(hold[0]);
  ck_assert_int_eq(read(out[0], &seen, sizeof(seen)), (ssize_t)sizeof(seen));
  ck_assert_int_eq(proc_cpu_seconds(pid, &got), 0);
  close(hold[1]);
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(out[0]);
  /* At least what the child had used when it looked, its exited thread's
   * share included, and no more than the write and the wait it did after. */
  ck_assert_msg(seen >= 0.055, "the child reported %.6f s", seen);
  ck_assert_msg(got >= seen - 1e-6 && got < seen + 0.001,
                "read %.6f s of CPU for a child that had used %.6f s", got, seen);
}
END_TEST

START_TEST(test_procstat_a_process_that_is_gone_is_an_error) {
  pid_t pid = fork();
  int status = 0;
  double got = -1;
  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    _exit(0);
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_int_lt(proc_cpu_seconds(pid, &got), 0);
  ck_assert(got == -1);
}
END_TEST

static Suite *procstat_suite(void) {
  Suite *s = suite_create("procstat");
  TCase *tc = tcase_create("procstat");
  tcase_add_test(tc, test_procstat_reads_another_process_cpu_to_well_under_a_tick);
  tcase_add_test(tc, test_procstat_a_process_that_is_gone_is_an_error);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run(procstat_suite()); }
