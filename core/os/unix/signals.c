/* Signals on POSIX: SIGINT, SIGTERM, SIGHUP and SIGUSR1 are blocked in the main
 * thread before any other thread exists (threads inherit the mask) and read
 * from a signalfd, so a signal never interrupts a worker or a plugin. */
#include "os/signals.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static int sfd = -1;
static sigset_t stop_mask;

int os_signals_open(void) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &mask, NULL);
  signal(SIGPIPE, SIG_IGN);
  sfd = signalfd(-1, &mask, SFD_CLOEXEC);
  return sfd < 0 ? -errno : 0;
}

void os_signals_item(os_wait_item *item) {
  *item = (struct pollfd){.fd = sfd, .events = POLLIN};
}

int os_signals_take(const char **name) {
  struct signalfd_siginfo si;
  *name = "";
  if (sfd < 0 || read(sfd, &si, sizeof(si)) != sizeof(si))
    return OS_SIG_NONE;
  switch (si.ssi_signo) {
  case SIGHUP:
    *name = "SIGHUP";
    return OS_SIG_RECONFIG;
  case SIGUSR1:
    *name = "SIGUSR1";
    return OS_SIG_REOPEN;
  case SIGINT:
    *name = "SIGINT";
    return OS_SIG_QUIT;
  default:
    *name = "SIGTERM";
    return OS_SIG_QUIT;
  }
}

void os_signals_close(void) {
  if (sfd >= 0)
    close(sfd);
  sfd = -1;
}

static void (*stop_fn)(void);

static void on_stop_signal(int sig) {
  (void)sig;
  stop_fn();
}

int os_interrupt_install(void (*on_stop)(void)) {
  struct sigaction sa;
  stop_fn = on_stop;
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&stop_mask);
  sigaddset(&stop_mask, SIGINT);
  sigaddset(&stop_mask, SIGTERM);
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_stop_signal;
  if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
    return -errno;
  return 0;
}

void os_interrupt_hold(void) { pthread_sigmask(SIG_BLOCK, &stop_mask, NULL); }

void os_interrupt_release(void) { pthread_sigmask(SIG_UNBLOCK, &stop_mask, NULL); }
