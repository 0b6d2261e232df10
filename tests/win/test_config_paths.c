/* Windows test of server.json's paths (host/config*.c over os/win/path.c):
 * relative paths are joined to the config file's directory with '\\', '/'
 * and '\\' both separate, a drive or UNC path is kept, a plugin path
 * without an extension gets ".dll", plugin_dir confines plugins once links
 * and ".." are resolved, and the file errors read as on Linux. The plugin
 * the config names is then loaded through the loader. echo.dll sits beside
 * this program (tests/win/run). Exit status: the number of failed checks. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/config.h"
#include "host/loader.h"
#include "os/os.h"
#include "os/path.h"
#include "os/win/wutil.h"

#include "wincheck.h"

static char here[OS_PATH_MAX], work[OS_PATH_MAX];

static wchar_t *wide(const char *s) {
  static wchar_t w[4][OS_PATH_MAX];
  static int k;
  wchar_t *r = w[k++ % 4];
  if (os_win_widen(s, r, OS_PATH_MAX) < 0)
    r[0] = 0;
  return r;
}

static void write_text(const char *path, const char *text) {
  FILE *f = _wfopen(wide(path), L"wb");
  CHECK(f != NULL, "%s", path);
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

/* JSON strings in the tests are written with ' for ". */
static void load_json(const char *name, const char *json, cfg_server **cfg, int *rc, char *err,
                      size_t errlen) {
  char path[OS_PATH_MAX], *t = strdup(json);
  for (char *p = t; *p; p++)
    if (*p == '\'')
      *p = '"';
  snprintf(path, sizeof(path), "%s\\config\\%s", work, name);
  write_text(path, t);
  free(t);
  *rc = cfg_load_file(path, cfg, err, errlen);
}

static void check_resolved(const char *base, const char *path, const char *want) {
  char json[512], err[2048];
  cfg_server *cfg = NULL;
  snprintf(json, sizeof(json),
           "{\"plugins\":[{\"name\":\"p\",\"path\":\"%s\"}],"
           "\"listeners\":[{\"port\":1,\"plugin\":\"p\"}]}", path);
  int rc = cfg_load_text(json, strlen(json), "x.json", base, &cfg, err, sizeof(err));
  CHECK(rc == 0, "%s", err);
  if (rc == 0) {
    CHECK(strcmp(cfg->plugins[0].resolved_path, want) == 0, "%s + %s: %s, want %s", base, path,
          cfg->plugins[0].resolved_path, want);
    cfg_free(cfg);
  }
}

static void test_resolution(void) {
  check_resolved("C:\\pier\\config", "echo", "C:\\pier\\config\\echo.dll");
  check_resolved("C:\\pier\\config", "../plugins/echo", "C:\\pier\\config\\..\\plugins\\echo.dll");
  check_resolved("C:\\pier\\config\\", "..\\\\plugins\\\\echo.dll",
                 "C:\\pier\\config\\..\\plugins\\echo.dll");
  check_resolved("C:\\pier", "D:/games/chat", "D:\\games\\chat.dll");
  check_resolved("C:\\pier", "\\\\\\\\srv\\\\share\\\\chat", "\\\\srv\\share\\chat.dll");
  check_resolved("C:\\", "echo", "C:\\echo.dll");
  check_resolved(".", "echo", ".\\echo.dll");
  check_resolved("C:\\pier", "echo.so", "C:\\pier\\echo.so"); /* as written */
  check_resolved("C:\\pier", "v1.2/echo", "C:\\pier\\v1.2\\echo.dll");
}

static void test_file_config(void) {
  char dir[OS_PATH_MAX], src[OS_PATH_MAX], dst[OS_PATH_MAX], real[OS_PATH_MAX], want[4096],
      err[CFG_ERR_LEN];
  cfg_server *cfg = NULL;
  int rc;
  snprintf(dir, sizeof(dir), "%s\\config", work);
  CreateDirectoryW(wide(dir), NULL);
  snprintf(dir, sizeof(dir), "%s\\plugins", work);
  CreateDirectoryW(wide(dir), NULL);
  snprintf(dir, sizeof(dir), "%s\\outside", work);
  CreateDirectoryW(wide(dir), NULL);
  snprintf(src, sizeof(src), "%s\\echo.dll", here);
  snprintf(dst, sizeof(dst), "%s\\plugins\\echo.dll", work);
  CHECK(CopyFileW(wide(src), wide(dst), FALSE), "copy");
  snprintf(dst, sizeof(dst), "%s\\outside\\echo.dll", work);
  CHECK(CopyFileW(wide(src), wide(dst), FALSE), "copy");

  /* The shipped config's shape: extensionless, relative, confined. */
  load_json("server.json",
            "{'plugin_dir':'../plugins','plugins':[{'name':'echo','path':'../plugins/echo'}],"
            "'listeners':[{'port':0,'plugin':'echo'}]}", &cfg, &rc, err, sizeof(err));
  CHECK(rc == 0, "%s", err);
  if (rc == 0) {
    plugin_image img;
    char lerr[1024] = "";
    snprintf(want, sizeof(want), "%s\\config\\..\\plugins\\echo.dll", work);
    CHECK(strcmp(cfg->plugins[0].resolved_path, want) == 0, "%s", cfg->plugins[0].resolved_path);
    snprintf(dir, sizeof(dir), "%s\\plugins", work);
    CHECK(os_realpath(dir, real, sizeof(real)) == 0, "realpath");
    CHECK(cfg->plugin_dir_real && strcmp(cfg->plugin_dir_real, real) == 0, "%s",
          cfg->plugin_dir_real);
    /* From the config to the loader, as pierd does. */
    rc = loader_open(&cfg->plugins[0], &img, lerr, sizeof(lerr));
    CHECK(rc == 0, "%s", lerr);
    if (rc == 0) {
      CHECK(strcmp(img.name, "echo") == 0, "%s", img.name);
      loader_close(&img);
    }
    cfg_free(cfg);
  }

  load_json("out.json",
            "{'plugin_dir':'../plugins','plugins':[{'name':'echo','path':'../outside/echo'}],"
            "'listeners':[{'port':0,'plugin':'echo'}]}", &cfg, &rc, err, sizeof(err));
  snprintf(dst, sizeof(dst), "%s\\outside\\echo.dll", work);
  os_realpath(dst, real, sizeof(real));
  snprintf(dir, sizeof(dir), "%s\\plugins", work);
  os_realpath(dir, dst, sizeof(dst));
  snprintf(want, sizeof(want),
           "%s\\config\\out.json: plugins[0].path: \"../outside/echo\" resolves to %s, outside "
           "plugin_dir (%s)", work, real, dst);
  CHECK(rc == -EPERM && strcmp(err, want) == 0, "%d\n got: %s\nwant: %s", rc, err, want);

  load_json("nodir.json",
            "{'plugin_dir':'../nowhere','plugins':[{'name':'echo','path':'../plugins/echo'}],"
            "'listeners':[{'port':0,'plugin':'echo'}]}", &cfg, &rc, err, sizeof(err));
  snprintf(want, sizeof(want),
           "%s\\config\\nodir.json: plugin_dir: directory %s\\config\\..\\nowhere: No such file "
           "or directory", work, work);
  CHECK(rc == -ENOENT && strcmp(err, want) == 0, "%d\n got: %s\nwant: %s", rc, err, want);

  snprintf(dir, sizeof(dir), "%s\\config\\missing.json", work);
  rc = cfg_load_file(dir, &cfg, err, sizeof(err));
  snprintf(want, sizeof(want), "%s: cannot read: No such file or directory", dir);
  CHECK(rc == -ENOENT && strcmp(err, want) == 0, "%d\n got: %s\nwant: %s", rc, err, want);

  snprintf(dir, sizeof(dir), "%s\\config", work);
  rc = cfg_load_file(dir, &cfg, err, sizeof(err));
  snprintf(want, sizeof(want), "%s: cannot read: Is a directory", dir);
  CHECK(rc == -EISDIR && strcmp(err, want) == 0, "%d\n got: %s\nwant: %s", rc, err, want);
}

/* Deletes dir's files, then dir. */
static void remove_dir(const char *dir) {
  char pat[OS_PATH_MAX], file[OS_PATH_MAX], name[MAX_PATH * 3];
  WIN32_FIND_DATAW fd;
  HANDLE h;
  snprintf(pat, sizeof(pat), "%s\\*", dir);
  h = FindFirstFileW(wide(pat), &fd);
  if (h != INVALID_HANDLE_VALUE) {
    do {
      os_win_narrow(fd.cFileName, name, sizeof(name));
      snprintf(file, sizeof(file), "%s\\%s", dir, name);
      if (!(fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY))
        DeleteFileW(wide(file));
    } while (FindNextFileW(h, &fd));
    FindClose(h);
  }
  RemoveDirectoryW(wide(dir));
}

int main(void) {
  wchar_t w[MAX_PATH + 1];
  char tmp[OS_PATH_MAX], sub[OS_PATH_MAX];
  DWORD n = GetModuleFileNameW(NULL, w, MAX_PATH);
  w[n] = 0;
  os_win_narrow(w, here, sizeof(here));
  here[os_path_dir_len(here)] = '\0';
  GetTempPathW(MAX_PATH + 1, w);
  os_win_narrow(w, tmp, sizeof(tmp));
  snprintf(work, sizeof(work), "%spier-test-config-%lu", tmp, (unsigned long)GetCurrentProcessId());
  CreateDirectoryW(wide(work), NULL);

  test_resolution();
  test_file_config();

  for (const char *const *d = (const char *const[]){"config", "plugins", "outside", NULL}; *d; d++) {
    snprintf(sub, sizeof(sub), "%s\\%s", work, *d);
    remove_dir(sub);
  }
  remove_dir(work);
  printf("test_config_paths: %d checks, %d failed\n", checks, fails);
  return fails;
}
