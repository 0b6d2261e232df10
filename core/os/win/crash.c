/* os/crash.h on Windows. An unhandled-exception filter writes the exception
 * (code and name, for an access violation the address read or written), the
 * instruction's address as module+offset, and a backtrace unwound from the
 * exception's context with the x64 unwind tables (RtlLookupFunctionEntry,
 * RtlVirtualUnwind: no dbghelp, nothing to load or allocate in a process
 * that is failing), each frame named by its module (a plugin shows as its
 * private copy, pier-<name>-<pid>-<n>.dll). Then it hands the exception on
 * (EXCEPTION_CONTINUE_SEARCH): the process ends with the exception code, and
 * Windows Error Reporting can still write a dump. abort() is caught as
 * SIGABRT the same way. */
#include "os/crash.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "os/os.h"

#define MAX_FRAMES 64

static char note[OS_CRASH_NOTE_MAX];
static char prog_name[32] = "pierd";
static volatile LONG reporting;

static void put(const char *s) {
  DWORD n;
  WriteFile(GetStdHandle(STD_ERROR_HANDLE), s, (DWORD)strlen(s), &n, NULL);
}

#define CODE_NAMES(XX)                                                                     \
  XX(EXCEPTION_ACCESS_VIOLATION) XX(EXCEPTION_ARRAY_BOUNDS_EXCEEDED) XX(EXCEPTION_BREAKPOINT) \
  XX(EXCEPTION_DATATYPE_MISALIGNMENT) XX(EXCEPTION_FLT_DENORMAL_OPERAND)                    \
  XX(EXCEPTION_FLT_DIVIDE_BY_ZERO) XX(EXCEPTION_FLT_INEXACT_RESULT)                         \
  XX(EXCEPTION_FLT_INVALID_OPERATION) XX(EXCEPTION_FLT_OVERFLOW) XX(EXCEPTION_FLT_STACK_CHECK) \
  XX(EXCEPTION_FLT_UNDERFLOW) XX(EXCEPTION_ILLEGAL_INSTRUCTION) XX(EXCEPTION_IN_PAGE_ERROR)  \
  XX(EXCEPTION_INT_DIVIDE_BY_ZERO) XX(EXCEPTION_INT_OVERFLOW) XX(EXCEPTION_INVALID_DISPOSITION) \
  XX(EXCEPTION_NONCONTINUABLE_EXCEPTION) XX(EXCEPTION_PRIV_INSTRUCTION) XX(EXCEPTION_SINGLE_STEP) \
  XX(EXCEPTION_STACK_OVERFLOW) XX(STATUS_HEAP_CORRUPTION) XX(STATUS_STACK_BUFFER_OVERRUN)

#ifndef STATUS_HEAP_CORRUPTION
#define STATUS_HEAP_CORRUPTION ((DWORD)0xC0000374)
#endif
#ifndef STATUS_STACK_BUFFER_OVERRUN
#define STATUS_STACK_BUFFER_OVERRUN ((DWORD)0xC0000409)
#endif

static const char *code_name(DWORD code) {
  switch (code) {
#define CASE(c) \
  case (DWORD)c: \
    return #c;
    CODE_NAMES(CASE)
#undef CASE
  default:
    return "unknown exception";
  }
}

/* "pier-echo-12-1.dll(+0x1a2b) [0x00007ffb...]", as glibc's
 * backtrace_symbols_fd writes "./pierd(+0x1a2b) [0x55...]". */
static void describe(DWORD64 addr, char *out, size_t n) {
  HMODULE mod = NULL;
  wchar_t w[MAX_PATH];
  char name[MAX_PATH * 3];
  const char *base = "?";
  DWORD64 off = addr;
  if (GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS |
                             GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                         (LPCWSTR)(uintptr_t)addr, &mod) &&
      GetModuleFileNameW(mod, w, MAX_PATH) &&
      WideCharToMultiByte(CP_UTF8, 0, w, -1, name, sizeof(name), NULL, NULL) > 0) {
    const char *slash = strrchr(name, '\\');
    base = slash ? slash + 1 : name;
    off = addr - (DWORD64)(uintptr_t)mod;
  }
  snprintf(out, n, "%s(+0x%llx) [0x%016llx]", base, (unsigned long long)off,
           (unsigned long long)addr);
}

static os_crash_module modules[2][OS_CRASH_MODULES_MAX];
static size_t nmodules[2];
static volatile LONG live; /* the table the handler reads */

/* A frame inside a plugin: its own file and the address in it (the copy it
 * was loaded from is what the line above names). */
static void put_plugin_frame(int i, DWORD64 pc) {
  LONG t = InterlockedCompareExchange(&live, 0, 0);
  char line[1280];
  for (size_t k = 0; k < nmodules[t]; k++) {
    const os_crash_module *m = &modules[t][k];
    if (pc < m->start || pc >= m->end)
      continue;
    snprintf(line, sizeof(line), "  #%d plugin %s: %s 0x%llx; resolve with: addr2line -f -e %s 0x%llx\n",
             i, m->name, m->file, (unsigned long long)(pc - m->bias), m->file,
             (unsigned long long)(pc - m->bias));
    put(line);
    return;
  }
}

/* Walks the stack from ctx (a copy: it is unwound in place). */
static void backtrace_from(CONTEXT *ctx) {
  ULONG_PTR lo = 0, hi = 0;
  char line[MAX_PATH * 3 + 64];
  GetCurrentThreadStackLimits(&lo, &hi);
  put("backtrace:\n");
  for (int i = 0; i < MAX_FRAMES && ctx->Rip; i++) {
    DWORD64 image = 0, frame = 0;
    PVOID data = NULL;
    PRUNTIME_FUNCTION fn;
    describe(ctx->Rip, line, sizeof(line) - 1);
    strcat(line, "\n");
    put(line);
    put_plugin_frame(i, ctx->Rip);
    fn = RtlLookupFunctionEntry(ctx->Rip, &image, NULL);
    if (fn) {
      RtlVirtualUnwind(UNW_FLAG_NHANDLER, image, ctx->Rip, fn, ctx, &data, &frame, NULL);
    } else {
      /* A leaf function (or a jump to a bad address): the return address is
       * on top of the stack. */
      if (ctx->Rsp < lo || ctx->Rsp + 8 > hi)
        break;
      ctx->Rip = *(DWORD64 *)(uintptr_t)ctx->Rsp;
      ctx->Rsp += 8;
    }
    if (ctx->Rsp < lo || ctx->Rsp >= hi)
      break;
  }
}

static LONG WINAPI on_exception(EXCEPTION_POINTERS *ep) {
  EXCEPTION_RECORD *r = ep->ExceptionRecord;
  CONTEXT ctx = *ep->ContextRecord;
  char line[MAX_PATH * 3 + 256], at[MAX_PATH * 3 + 64], access[64] = "";
  if (InterlockedExchange(&reporting, 1)) {
    Sleep(INFINITE); /* another thread is reporting; the process ends with it */
  }
  if (r->ExceptionCode == EXCEPTION_ACCESS_VIOLATION && r->NumberParameters >= 2)
    snprintf(access, sizeof(access), " %s address 0x%llx",
             r->ExceptionInformation[0] == 1   ? "writing"
             : r->ExceptionInformation[0] == 8 ? "executing"
                                               : "reading",
             (unsigned long long)r->ExceptionInformation[1]);
  describe((DWORD64)(uintptr_t)r->ExceptionAddress, at, sizeof(at));
  snprintf(line, sizeof(line), "\n%s: fatal exception 0x%08lx (%s)%s at %s; crash report:\n",
           prog_name, (unsigned long)r->ExceptionCode, code_name(r->ExceptionCode), access, at);
  put(line);
  backtrace_from(&ctx);
  put(note);
  return EXCEPTION_CONTINUE_SEARCH;
}

static void on_abort(int sig) {
  CONTEXT ctx;
  char line[128];
  (void)sig;
  if (InterlockedExchange(&reporting, 1))
    Sleep(INFINITE);
  snprintf(line, sizeof(line), "\n%s: fatal signal %d (SIGABRT): abort(); crash report:\n",
           prog_name, SIGABRT);
  put(line);
  RtlCaptureContext(&ctx);
  backtrace_from(&ctx);
  put(note);
  /* Returning lets the C runtime end the process as abort() does. */
}

void os_crash_install(const char *prog) {
  snprintf(prog_name, sizeof(prog_name), "%s", prog);
  /* A daemon has nobody to click the "stopped working" box away; without it
   * the process ends at once with the exception code. */
  SetErrorMode(GetErrorMode() | SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
  SetUnhandledExceptionFilter(on_exception);
  signal(SIGABRT, on_abort);
  os_win_stack_reserve();
}

void os_crash_set_note(const char *text) {
  char buf[sizeof(note)];
  snprintf(buf, sizeof(buf), "%s", text);
  memcpy(note, buf, sizeof(buf));
}

void os_crash_set_modules(const os_crash_module *m, size_t n) {
  LONG w = !InterlockedCompareExchange(&live, 0, 0);
  if (n > OS_CRASH_MODULES_MAX)
    n = OS_CRASH_MODULES_MAX;
  memcpy(modules[w], m, n * sizeof(*m));
  nmodules[w] = n;
  InterlockedExchange(&live, w);
}
