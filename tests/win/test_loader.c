/* Windows test of the plugin loader (host/loader.c over os/win/dl.c) and of
 * os/path.h, run under Wine or on Windows: a loaded plugin's file can be
 * overwritten and deleted (pier loads a private copy), a second version
 * loads beside the first, private copies go when unloaded, and a truncated,
 * foreign or misplaced file is refused with the exact text. The test DLLs
 * (echo.dll, abi_major2.dll, recorder.dll) sit beside this program; see
 * tests/win/run. Exit status: the number of failed checks. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/loader.h"
#include "os/os.h"
#include "os/path.h"
#include "os/win/wutil.h"

#include "wincheck.h"

static char here[OS_PATH_MAX], work[OS_PATH_MAX], plugins[OS_PATH_MAX], confine[OS_PATH_MAX];

static void join(char *out, size_t n, const char *dir, const char *name) {
  snprintf(out, n, "%s\\%s", dir, name);
}

static wchar_t *wide(const char *s) {
  static wchar_t w[4][OS_PATH_MAX];
  static int k;
  wchar_t *r = w[k++ % 4];
  if (os_win_widen(s, r, OS_PATH_MAX) < 0)
    r[0] = 0;
  return r;
}

/* The first n bytes of src (all when n is 0) into dst, with Win32 calls. */
static int write_prefix(const char *src, const char *dst, DWORD n) {
  static char buf[4 << 20];
  DWORD got = 0, put = 0;
  HANDLE in = CreateFileW(wide(src), GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
  HANDLE out;
  if (in == INVALID_HANDLE_VALUE)
    return -1;
  ReadFile(in, buf, sizeof(buf), &got, NULL);
  CloseHandle(in);
  if (n && n < got)
    got = n;
  out = CreateFileW(wide(dst), GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
  if (out == INVALID_HANDLE_VALUE)
    return -1;
  WriteFile(out, buf, got, &put, NULL);
  CloseHandle(out);
  return put == got ? (int)got : -1;
}

/* Private copies of plugin `name` of this process now in %TEMP%. */
static int copies_of(const char *name) {
  wchar_t tmp[MAX_PATH + 1], pat[MAX_PATH + 64];
  WIN32_FIND_DATAW fd;
  HANDLE h;
  int n = 0;
  GetTempPathW(MAX_PATH + 1, tmp);
  _snwprintf(pat, MAX_PATH + 64, L"%lspier-%hs-%lu-*.dll", tmp, name,
             (unsigned long)GetCurrentProcessId());
  h = FindFirstFileW(pat, &fd);
  if (h == INVALID_HANDLE_VALUE)
    return 0;
  do
    n++;
  while (FindNextFileW(h, &fd));
  FindClose(h);
  return n;
}

static cfg_plugin plugin(const char *name, char *path) {
  cfg_plugin p;
  memset(&p, 0, sizeof(p));
  p.name = (char *)name;
  p.path = path;
  p.resolved_path = path;
  p.confine_dir = confine;
  return p;
}

static void test_paths(void) {
  char real[OS_PATH_MAX], dotted[OS_PATH_MAX];
  CHECK(os_path_dir_len("C:\\a\\b.dll") == 4, "C:\\a");
  CHECK(os_path_dir_len("C:\\b.dll") == 3, "C:\\");
  CHECK(os_path_dir_len("C:/a//b") == 4, "C:/a");
  CHECK(os_path_dir_len("b.dll") == 0, "none");
  CHECK(os_path_dir_len("\\\\srv\\share\\x") == 12, "UNC root");
  CHECK(os_path_is_absolute("C:\\x") && os_path_is_absolute("/x") && os_path_is_absolute("\\\\s\\h"),
        "absolute");
  CHECK(!os_path_is_absolute("x\\y") && !os_path_is_absolute("..\\y"), "relative");
  CHECK(strcmp(os_path_base("a\\b/c.dll"), "c.dll") == 0, "base");
  CHECK(os_path_inside("C:\\Pier\\plugins\\echo.dll", "c:\\pier\\plugins"), "case ignored");
  CHECK(!os_path_inside("C:\\pier\\plugins2\\echo.dll", "C:\\pier\\plugins"), "prefix only");
  CHECK(os_path_inside("C:\\pier\\echo.dll", "C:\\"), "root");
  /* realpath folds "..", and a relative path against the current directory. */
  snprintf(dotted, sizeof(dotted), "%s\\..\\plugins", plugins);
  CHECK(os_realpath(dotted, real, sizeof(real)) == 0 && strcmp(real, confine) == 0, "%s -> %s",
        dotted, real);
  CHECK(os_realpath("C:\\no\\such\\dir", real, sizeof(real)) == -ENOENT, "missing");
  CHECK(os_realpath(plugins, real, 4) == -ENAMETOOLONG, "too long");
}

static void test_load_overwrite_reload(void) {
  char src[OS_PATH_MAX], dst[OS_PATH_MAX], chat[OS_PATH_MAX], err[1024] = "";
  plugin_image a, b;
  cfg_plugin p;
  int rc;
  join(src, sizeof(src), here, "echo.dll");
  join(chat, sizeof(chat), here, "recorder.dll");
  join(dst, sizeof(dst), plugins, "echo.dll");
  CHECK(CopyFileW(wide(src), wide(dst), FALSE), "copy in: %lu", GetLastError());
  p = plugin("echo", dst);
  rc = loader_open(&p, &a, err, sizeof(err));
  CHECK(rc == 0, "%d %s", rc, err);
  if (rc)
    return;
  CHECK(strcmp(a.name, "echo") == 0 && strcmp(a.version, "1.0.0") == 0, "%s %s", a.name,
        a.version);
  CHECK(a.cb.on_recv != NULL, "on_recv bound");
  CHECK(copies_of("echo") == 1, "one private copy: %d", copies_of("echo"));
  /* While loaded: overwrite with CopyFileW, rewrite with CreateFileW +
   * WriteFile, delete and put back. Each would fail on a loaded DLL. */
  CHECK(CopyFileW(wide(chat), wide(dst), FALSE), "overwrite while loaded: %lu", GetLastError());
  CHECK(write_prefix(src, dst, 0) > 0, "rewrite while loaded: %lu", GetLastError());
  CHECK(DeleteFileW(wide(dst)), "delete while loaded: %lu", GetLastError());
  CHECK(CopyFileW(wide(src), wide(dst), FALSE), "put back: %lu", GetLastError());
  /* The reload: a second image beside the first, from its own copy. */
  rc = loader_open(&p, &b, err, sizeof(err));
  CHECK(rc == 0, "%d %s", rc, err);
  if (rc == 0) {
    CHECK(b.desc != a.desc, "distinct images");
    CHECK(copies_of("echo") == 2, "two private copies: %d", copies_of("echo"));
    loader_close(&b);
  }
  loader_close(&a);
  CHECK(copies_of("echo") == 0, "copies deleted on unload: %d", copies_of("echo"));
  CHECK(CopyFileW(wide(chat), wide(dst), FALSE), "overwrite after unload: %lu", GetLastError());
}

static void expect_refusal(const char *name, char *path, int want_rc, const char *want) {
  char err[1024] = "";
  plugin_image img;
  cfg_plugin p = plugin(name, path);
  int rc = loader_open(&p, &img, err, sizeof(err));
  CHECK(rc == want_rc, "%s: rc %d, want %d (%s)", name, rc, want_rc, err);
  if (getenv("PIER_TEST_VERBOSE"))
    printf("%s\n", err);
  CHECK(strcmp(err, want) == 0, "\n got: %s\nwant: %s", err, want);
  CHECK(copies_of(name) == 0, "%s: no copy left", name);
  if (rc == 0)
    loader_close(&img);
}

static void test_refusals(void) {
  char src[OS_PATH_MAX], path[OS_PATH_MAX], want[2048], real[OS_PATH_MAX], outside[OS_PATH_MAX];
  int n;
  join(src, sizeof(src), here, "echo.dll");

  join(path, sizeof(path), plugins, "half.dll");
  n = write_prefix(src, path, 0) / 2;
  write_prefix(src, path, (DWORD)n);
  snprintf(want, sizeof(want),
           "plugin \"half\" (%s): cannot load: a section lies past the end of the file "
           "(truncated?) (%d bytes)", path, n);
  expect_refusal("half", path, -ENOEXEC, want);

  join(path, sizeof(path), plugins, "short.dll");
  write_prefix(src, path, 100);
  snprintf(want, sizeof(want),
           "plugin \"short\" (%s): cannot load: the PE header lies past the end of the file "
           "(truncated?) (100 bytes)", path);
  expect_refusal("short", path, -ENOEXEC, want);

  join(path, sizeof(path), plugins, "tiny.dll");
  write_prefix(src, path, 10);
  snprintf(want, sizeof(want),
           "plugin \"tiny\" (%s): cannot load: not a PE file (or truncated) (10 bytes)", path);
  expect_refusal("tiny", path, -ENOEXEC, want);

  join(path, sizeof(path), plugins, "empty.dll");
  write_prefix(src, path, 1);
  snprintf(want, sizeof(want),
           "plugin \"empty\" (%s): cannot load: not a PE file (or truncated) (1 bytes)", path);
  expect_refusal("empty", path, -ENOEXEC, want);

  join(path, sizeof(path), plugins, "prog.dll"); /* an .exe: PE, x64, not a DLL */
  GetModuleFileNameW(NULL, (wchar_t *)want, MAX_PATH);
  CopyFileW((wchar_t *)want, wide(path), FALSE);
  n = write_prefix(path, path, 0);
  snprintf(want, sizeof(want), "plugin \"prog\" (%s): cannot load: not a DLL (%d bytes)", path, n);
  expect_refusal("prog", path, -ENOEXEC, want);

  join(path, sizeof(path), plugins, "missing.dll");
  snprintf(want, sizeof(want), "plugin \"gone\": cannot open %s: No such file or directory", path);
  expect_refusal("gone", path, -ENOENT, want);

  snprintf(want, sizeof(want), "plugin \"dir\": %s is not a regular file", plugins);
  expect_refusal("dir", plugins, -EINVAL, want);

  join(outside, sizeof(outside), work, "outside");
  CreateDirectoryW(wide(outside), NULL);
  join(path, sizeof(path), outside, "echo.dll");
  CopyFileW(wide(src), wide(path), FALSE);
  os_realpath(path, real, sizeof(real));
  snprintf(want, sizeof(want),
           "plugin \"out\" (%s): the file resolves to %s, outside plugin_dir (%s)", path, real,
           confine);
  expect_refusal("out", path, -EPERM, want);

  join(path, sizeof(path), here, "abi_major2.dll");
  snprintf(want, sizeof(want),
           "plugin \"bad\" (%s): built for ABI 2.3, host ABI is 1.3: major versions differ; "
           "rebuild the plugin against this host's include/pier", path);
  confine[0] = '\0';
  {
    char err[1024] = "";
    plugin_image img;
    cfg_plugin p = plugin("bad", path);
    p.confine_dir = NULL;
    CHECK(loader_open(&p, &img, err, sizeof(err)) == -EPROTO, "%s", err);
    CHECK(strcmp(err, want) == 0, "\n got: %s\nwant: %s", err, want);
  }
  os_realpath(plugins, confine, sizeof(confine));
}

static void test_callback_symbols(void) {
  char path[OS_PATH_MAX], err[1024] = "", want[2048];
  plugin_image img;
  cfg_plugin p;
  join(path, sizeof(path), here, "recorder.dll");
  p = plugin("rec", path);
  p.confine_dir = NULL;
  p.callbacks.on_recv = "recorder_alt_recv";
  CHECK(loader_open(&p, &img, err, sizeof(err)) == 0, "%s", err);
  if (!err[0]) {
    CHECK(img.cb.on_recv == (pier_on_recv_fn)os_dl_sym(img.dl, "recorder_alt_recv"), "bound");
    CHECK(img.cb.on_recv != img.desc->on_recv, "not the descriptor's");
    loader_close(&img);
  }
  p.callbacks.on_recv = "no_such_function";
  snprintf(want, sizeof(want),
           "plugin \"rec\" (%s): callbacks.on_recv names symbol \"no_such_function\", which the "
           "plugin does not export", path);
  CHECK(loader_open(&p, &img, err, sizeof(err)) == -ENOENT, "%s", err);
  CHECK(strcmp(err, want) == 0, "\n got: %s\nwant: %s", err, want);
  CHECK(copies_of("rec") == 0, "no copy left");
}

/* Deletes dir's files, then dir. */
static void remove_dir(const char *dir) {
  char pat[OS_PATH_MAX], file[OS_PATH_MAX], name[MAX_PATH * 3];
  WIN32_FIND_DATAW fd;
  HANDLE h;
  join(pat, sizeof(pat), dir, "*");
  h = FindFirstFileW(wide(pat), &fd);
  if (h != INVALID_HANDLE_VALUE) {
    do {
      os_win_narrow(fd.cFileName, name, sizeof(name));
      join(file, sizeof(file), dir, name);
      if (!(fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY))
        DeleteFileW(wide(file));
    } while (FindNextFileW(h, &fd));
    FindClose(h);
  }
  RemoveDirectoryW(wide(dir));
}

int main(void) {
  wchar_t w[MAX_PATH + 1];
  char tmp[OS_PATH_MAX], stale[OS_PATH_MAX], live[OS_PATH_MAX], argv0[OS_PATH_MAX];
  DWORD n = GetModuleFileNameW(NULL, w, MAX_PATH);
  w[n] = 0;
  os_win_narrow(w, here, sizeof(here));
  os_win_narrow(w, argv0, sizeof(argv0));
  here[os_path_dir_len(here)] = '\0';
  GetTempPathW(MAX_PATH + 1, w);
  os_win_narrow(w, tmp, sizeof(tmp));
  snprintf(work, sizeof(work), "%spier-test-loader-%lu", tmp, (unsigned long)GetCurrentProcessId());
  join(plugins, sizeof(plugins), work, "plugins");
  CreateDirectoryW(wide(work), NULL);
  CreateDirectoryW(wide(plugins), NULL);
  CHECK(os_realpath(plugins, confine, sizeof(confine)) == 0, "realpath %s", plugins);
  /* A copy left by a process that is gone (no Windows process id is odd)
   * and one named with this process's id: the first load deletes the first
   * only. */
  snprintf(stale, sizeof(stale), "%spier-old-plugin-999999-1.dll", tmp);
  snprintf(live, sizeof(live), "%spier-live-%lu-1.dll", tmp, (unsigned long)GetCurrentProcessId());
  write_prefix(argv0, stale, 64);
  write_prefix(argv0, live, 64);

  test_paths();
  test_load_overwrite_reload();
  CHECK(GetFileAttributesW(wide(stale)) == INVALID_FILE_ATTRIBUTES, "stale copy deleted");
  CHECK(GetFileAttributesW(wide(live)) != INVALID_FILE_ATTRIBUTES, "live copy kept");
  DeleteFileW(wide(live));
  test_refusals();
  test_callback_symbols();

  remove_dir(plugins);
  join(tmp, sizeof(tmp), work, "outside");
  remove_dir(tmp);
  remove_dir(work);
  CHECK(GetFileAttributesW(wide(work)) == INVALID_FILE_ATTRIBUTES, "%s removed", work);

  printf("test_loader: %d checks, %d failed\n", checks, fails);
  return fails;
}
