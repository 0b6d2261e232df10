/* Windows test of the crash report (os/win/crash.c): a child process
 * installs the handler, loads crashload.dll (tests/plugins/faulty.c with
 * FAULT_CRASH, whose on_load writes to address 0x10) through the loader and
 * calls on_load. The parent checks that the child ended with the exception
 * code and that its stderr names the exception, the address written, the
 * plugin's module (its private copy) with an offset, a backtrace reaching
 * this program, and the note; then the same for abort(). Exit status: the
 * number of failed checks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/loader.h"
#include "os/crash.h"
#include "os/os.h"
#include "os/path.h"
#include "os/win/wutil.h"

#include "wincheck.h"

static int child(const char *dll, int do_abort) {
  char err[1024], note[OS_CRASH_NOTE_MAX];
  plugin_image img;
  cfg_plugin p;
  pier_load_args args;
  memset(&p, 0, sizeof(p));
  p.name = "bad";
  p.path = p.resolved_path = (char *)dll;
  os_crash_install("pierd");
  if (loader_open(&p, &img, err, sizeof(err)) < 0) {
    fprintf(stderr, "%s\n", err);
    return 2;
  }
  snprintf(note, sizeof(note), "plugins loaded:\nplugin bad: %s %s, generation 1\n", img.name,
           img.version);
  os_crash_set_note(note);
  if (do_abort)
    abort();
  memset(&args, 0, sizeof(args));
  img.cb.on_load(&args);
  return 4; /* not reached */
}

/* Runs this program as `child MODE DLL`; its stderr (and stdout) in log. */
static DWORD run_child(const char *mode, const char *dll, char *log, size_t n) {
  wchar_t self[MAX_PATH + 1], cmd[3 * MAX_PATH], tmp[MAX_PATH + 1], out[MAX_PATH + 1];
  SECURITY_ATTRIBUTES sa = {sizeof(sa), NULL, TRUE};
  STARTUPINFOW si;
  PROCESS_INFORMATION pi;
  DWORD code = 0, got = 0, len = GetModuleFileNameW(NULL, self, MAX_PATH);
  HANDLE h;
  self[len] = 0;
  _snwprintf(cmd, 3 * MAX_PATH, L"\"%ls\" child %hs \"%hs\"", self, mode, dll);
  GetTempPathW(MAX_PATH + 1, tmp);
  /* A file per run: Wine's debugger, started on the crash, inherits the
   * handle and may hold it a while after the child is gone. */
  _snwprintf(out, MAX_PATH + 1, L"%lspier-test-crash-%lu-%hs.txt", tmp,
             (unsigned long)GetCurrentProcessId(), mode);
  h = CreateFileW(out, GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, &sa,
                  CREATE_ALWAYS, FILE_ATTRIBUTE_TEMPORARY | FILE_FLAG_DELETE_ON_CLOSE, NULL);
  CHECK(h != INVALID_HANDLE_VALUE, "stderr file: %lu", GetLastError());
  memset(&si, 0, sizeof(si));
  si.cb = sizeof(si);
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  si.hStdOutput = h;
  si.hStdError = h;
  log[0] = '\0';
  if (!CreateProcessW(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) {
    CHECK(0, "spawn: %lu", GetLastError());
    CloseHandle(h);
    return 0;
  }
  WaitForSingleObject(pi.hProcess, 60000);
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hThread);
  CloseHandle(pi.hProcess);
  SetFilePointer(h, 0, NULL, FILE_BEGIN);
  ReadFile(h, log, (DWORD)n - 1, &got, NULL);
  log[got] = '\0';
  CloseHandle(h);
  return code;
}

int main(int argc, char **argv) {
  wchar_t self[MAX_PATH + 1];
  char dir[OS_PATH_MAX], dll[OS_PATH_MAX], log[16384];
  DWORD code, n;

  if (argc == 4 && strcmp(argv[1], "child") == 0)
    return child(argv[3], strcmp(argv[2], "abort") == 0);

  n = GetModuleFileNameW(NULL, self, MAX_PATH);
  self[n] = 0;
  os_win_narrow(self, dir, sizeof(dir));
  dir[os_path_dir_len(dir)] = '\0';
  snprintf(dll, sizeof(dll), "%s\\crashload.dll", dir);

  code = run_child("fault", dll, log, sizeof(log));
  fputs(log, stdout);
  CHECK(code == EXCEPTION_ACCESS_VIOLATION, "exit code 0x%08lx", (unsigned long)code);
  CHECK(strstr(log, "\npierd: fatal exception 0xc0000005 (EXCEPTION_ACCESS_VIOLATION) writing "
                    "address 0x10 at pier-bad-") != NULL, "first line");
  CHECK(strstr(log, ".dll(+0x") != NULL, "module+offset");
  CHECK(strstr(log, "; crash report:\nbacktrace:\npier-bad-") != NULL, "first frame: the plugin");
  CHECK(strstr(log, "test_crash.exe(+0x") != NULL, "a frame in this program");
  CHECK(strstr(log, "plugins loaded:\nplugin bad: faulty 0.0.1, generation 1\n") != NULL, "note");

  /* abort(): the C runtime's SIGABRT, then its exit status 3. */
  code = run_child("abort", dll, log, sizeof(log));
  fputs(log, stdout);
  CHECK(code == 3, "exit code %lu", (unsigned long)code);
  CHECK(strstr(log, "\npierd: fatal signal 22 (SIGABRT): abort(); crash report:\nbacktrace:\n") !=
            NULL, "first line");
  CHECK(strstr(log, "test_crash.exe(+0x") != NULL, "a frame in this program");
  CHECK(strstr(log, "plugins loaded:\nplugin bad: faulty 0.0.1, generation 1\n") != NULL, "note");
  printf("test_crash: %d checks, %d failed\n", checks, fails);
  return fails;
}
