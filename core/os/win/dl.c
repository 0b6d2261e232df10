/* os/dl.h on Windows. The plugin file is opened once (sharing read, write
 * and delete, so the operator is never locked out), checked against
 * plugin_dir through that handle (GetFinalPathNameByHandleW) and copied
 * through it to a private file in %TEMP%, pier-<name>-<pid>-<n>.dll. The copy
 * is opened again denying writers, checked as a PE image through that handle
 * and loaded from it: a DLL that is loaded cannot be written, renamed over or
 * deleted on Windows, so loading the original would lock the operator out of
 * replacing it; the copy is what stays locked. It is deleted after
 * FreeLibrary (a loaded image cannot be deleted before). Copies left by a
 * process that died (a crash) are deleted at the first load of a later
 * process. */
#include "os/dl.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "os/path.h"
#include "os/win/wutil.h"

const char os_dl_ext[] = ".dll";

#define COPY_CHUNK 65536

struct os_dl {
  HMODULE mod;
  wchar_t copy[MAX_PATH + 96]; /* GetTempPathW's MAX_PATH + our name */
};

static volatile LONG copies; /* numbers the private copies of this process */
static os_once_t swept = OS_ONCE_INIT;

/* The process id in a private copy's name, pier-<name>-<pid>-<n>.dll (the
 * name may hold '-' itself), or 0. */
static DWORD pid_of_copy(const wchar_t *file) {
  const wchar_t *end = wcsrchr(file, L'-'), *p = end;
  DWORD pid = 0;
  if (!end || wcsncmp(file, L"pier-", 5) != 0)
    return 0;
  while (p > file && p[-1] != L'-')
    p--;
  if (p == end || p - 1 <= file + 4)
    return 0;
  for (; p < end; p++) {
    if (*p < L'0' || *p > L'9' || pid > 0xffffffffu / 10)
      return 0;
    pid = pid * 10 + (DWORD)(*p - L'0');
  }
  return pid;
}

/* Deletes the private copies of processes that are gone. A copy some live
 * process has loaded could not be deleted anyway; one it is still writing
 * or checking is spared by asking whether its process exists. */
static void sweep_stale_copies(void) {
  wchar_t tmp[MAX_PATH + 1], pat[MAX_PATH + 32], file[MAX_PATH + 300];
  WIN32_FIND_DATAW fd;
  HANDLE h;
  DWORD len = GetTempPathW(MAX_PATH + 1, tmp), self = GetCurrentProcessId();
  if (len == 0 || len > MAX_PATH)
    return;
  _snwprintf(pat, MAX_PATH + 32, L"%lspier-*-*-*.dll", tmp);
  pat[MAX_PATH + 31] = L'\0';
  if ((h = FindFirstFileW(pat, &fd)) == INVALID_HANDLE_VALUE)
    return;
  do {
    DWORD pid = pid_of_copy(fd.cFileName);
    HANDLE proc;
    if (pid == 0 || pid == self)
      continue;
    proc = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
    if (proc) {
      CloseHandle(proc);
      continue;
    }
    if (GetLastError() != ERROR_INVALID_PARAMETER) /* exists, not ours to open */
      continue;
    _snwprintf(file, MAX_PATH + 300, L"%ls%ls", tmp, fd.cFileName);
    file[MAX_PATH + 299] = L'\0';
    DeleteFileW(file);
  } while (FindNextFileW(h, &fd));
  FindClose(h);
}

static int check_confined(HANDLE h, const os_dl_spec *spec, char *err, size_t errlen) {
  char real[OS_PATH_MAX];
  int rc;
  if (!spec->confine_dir)
    return 0;
  if ((rc = os_win_final_path(h, real, sizeof(real))) < 0) {
    snprintf(err, errlen,
             "plugin \"%s\" (%s): cannot tell where the file resolves "
             "(GetFinalPathNameByHandleW: %s); refused as plugin_dir is set",
             spec->name, spec->path, os_strerror(-rc));
    return rc;
  }
  if (os_path_inside(real, spec->confine_dir) && strlen(real) > strlen(spec->confine_dir))
    return 0;
  snprintf(err, errlen, "plugin \"%s\" (%s): the file resolves to %s, outside plugin_dir (%s)",
           spec->name, spec->path, real, spec->confine_dir);
  return -EPERM;
}

/* Copies in to a new private file named in dl->copy. Returns 0, or a
 * negative errno with err set and nothing left behind. */
static int copy_private(HANDLE in, const os_dl_spec *spec, os_dl *dl, char *err,
                        size_t errlen) {
  wchar_t tmp[MAX_PATH + 1], wname[64];
  char shown[OS_PATH_MAX], why[512];
  char *buf = malloc(COPY_CHUNK);
  DWORD len = GetTempPathW(MAX_PATH + 1, tmp), e;
  HANDLE out;
  int rc = 0;

  if (!buf) {
    snprintf(err, errlen, "plugin \"%s\": cannot create a private copy: %s", spec->name,
             os_strerror(ENOMEM));
    return -ENOMEM;
  }
  if (len == 0 || len > MAX_PATH) {
    e = len ? ERROR_BUFFER_OVERFLOW : GetLastError();
    os_win_errtext(e, why, sizeof(why));
    snprintf(err, errlen, "plugin \"%s\": cannot create a private copy: no temporary directory: %s",
             spec->name, why);
    free(buf);
    return -os_win_errno(e);
  }
  if (os_win_widen(spec->name, wname, 64) < 0) {
    snprintf(err, errlen, "plugin \"%s\": cannot create a private copy: name too long", spec->name);
    free(buf);
    return -ENAMETOOLONG;
  }
  _snwprintf(dl->copy, sizeof(dl->copy) / sizeof(dl->copy[0]), L"%lspier-%ls-%lu-%ld.dll", tmp,
             wname, (unsigned long)GetCurrentProcessId(), (long)InterlockedIncrement(&copies));
  dl->copy[sizeof(dl->copy) / sizeof(dl->copy[0]) - 1] = L'\0';
  out = CreateFileW(dl->copy, GENERIC_WRITE, 0, NULL, CREATE_NEW, FILE_ATTRIBUTE_TEMPORARY, NULL);
  if (out == INVALID_HANDLE_VALUE) {
    e = GetLastError();
    os_win_narrow(tmp, shown, sizeof(shown));
    os_win_errtext(e, why, sizeof(why));
    snprintf(err, errlen, "plugin \"%s\": cannot create a private copy in %s: %s", spec->name,
             shown, why);
    free(buf);
    return -os_win_errno(e);
  }
  for (;;) {
    DWORD got = 0, put = 0;
    if (!ReadFile(in, buf, COPY_CHUNK, &got, NULL) ||
        (got > 0 && (!WriteFile(out, buf, got, &put, NULL) || put != got))) {
      e = GetLastError();
      os_win_errtext(e, why, sizeof(why));
      snprintf(err, errlen, "plugin \"%s\": copying %s failed: %s", spec->name, spec->path, why);
      rc = -os_win_errno(e);
      break;
    }
    if (got == 0)
      break;
  }
  CloseHandle(out);
  free(buf);
  if (rc < 0)
    DeleteFileW(dl->copy);
  return rc;
}

/* Opens spec->path once, checks it is a file in plugin_dir and copies it. */
static int open_and_copy(const os_dl_spec *spec, os_dl *dl, char *err, size_t errlen) {
  wchar_t w[OS_PATH_MAX];
  BY_HANDLE_FILE_INFORMATION info;
  char why[512];
  HANDLE in;
  int rc = os_win_widen(spec->path, w, OS_PATH_MAX);

  if (rc < 0) {
    snprintf(err, errlen, "plugin \"%s\": cannot open %s: %s", spec->name, spec->path,
             os_strerror(-rc));
    return rc;
  }
  /* FILE_FLAG_BACKUP_SEMANTICS so that a directory opens and is refused as
   * on POSIX, rather than failing with "access denied". */
  in = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                   OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_SEQUENTIAL_SCAN, NULL);
  if (in == INVALID_HANDLE_VALUE) {
    DWORD e = GetLastError();
    os_win_errtext(e, why, sizeof(why));
    snprintf(err, errlen, "plugin \"%s\": cannot open %s: %s", spec->name, spec->path, why);
    return -os_win_errno(e);
  }
  if (GetFileType(in) != FILE_TYPE_DISK || !GetFileInformationByHandle(in, &info) ||
      (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
    snprintf(err, errlen, "plugin \"%s\": %s is not a regular file", spec->name, spec->path);
    CloseHandle(in);
    return -EINVAL;
  }
  if ((rc = check_confined(in, spec, err, errlen)) == 0)
    rc = copy_private(in, spec, dl, err, errlen);
  CloseHandle(in);
  return rc;
}

static int read_at(HANDLE h, uint64_t off, void *buf, DWORD len) {
  OVERLAPPED ov;
  DWORD got = 0;
  memset(&ov, 0, sizeof(ov));
  ov.Offset = (DWORD)off;
  ov.OffsetHigh = (DWORD)(off >> 32);
  return ReadFile(h, buf, len, &got, &ov) && got == len ? 0 : -1;
}

/* Why the image in h cannot be loaded, or NULL. LoadLibrary maps sections
 * by their file offsets; a truncated file fails there with an obscure
 * error at best, so every header and every section's raw data must lie
 * inside the file, and the image must be a DLL for this machine. */
static const char *pe_problem(HANDLE h, uint64_t size) {
  IMAGE_DOS_HEADER dos;
  IMAGE_FILE_HEADER fh;
  IMAGE_OPTIONAL_HEADER64 oh;
  DWORD sig;
  uint64_t nt, opt, sect;
  const DWORD min_opt = offsetof(IMAGE_OPTIONAL_HEADER64, DataDirectory);

  if (size < sizeof(dos) || read_at(h, 0, &dos, sizeof(dos)) || dos.e_magic != IMAGE_DOS_SIGNATURE)
    return "not a PE file (or truncated)";
  nt = (uint32_t)dos.e_lfanew;
  opt = nt + sizeof(sig) + sizeof(fh);
  if (dos.e_lfanew < 0 || opt > size)
    return "the PE header lies past the end of the file (truncated?)";
  if (read_at(h, nt, &sig, sizeof(sig)) || read_at(h, nt + sizeof(sig), &fh, sizeof(fh)))
    return "unreadable PE header";
  if (sig != IMAGE_NT_SIGNATURE)
    return "no PE signature (not a Windows image)";
#if defined(__x86_64__) || defined(_M_X64)
  if (fh.Machine != IMAGE_FILE_MACHINE_AMD64)
    return "built for another machine (not x64)";
#endif
  if (!(fh.Characteristics & IMAGE_FILE_DLL))
    return "not a DLL";
  if (fh.SizeOfOptionalHeader < min_opt || fh.SizeOfOptionalHeader > sizeof(oh))
    return "not a 64-bit (PE32+) image (optional header size)";
  if (opt + fh.SizeOfOptionalHeader > size)
    return "the optional header lies past the end of the file (truncated?)";
  memset(&oh, 0, sizeof(oh));
  if (read_at(h, opt, &oh, fh.SizeOfOptionalHeader))
    return "unreadable optional header";
  if (oh.Magic != IMAGE_NT_OPTIONAL_HDR64_MAGIC)
    return "not a 64-bit (PE32+) image";
  if (oh.NumberOfRvaAndSizes > IMAGE_NUMBEROF_DIRECTORY_ENTRIES ||
      min_opt + oh.NumberOfRvaAndSizes * sizeof(IMAGE_DATA_DIRECTORY) > fh.SizeOfOptionalHeader)
    return "the optional header's size does not match its data directories";
  if (oh.SizeOfHeaders > size)
    return "the headers lie past the end of the file (truncated?)";
  sect = opt + fh.SizeOfOptionalHeader;
  if (fh.NumberOfSections == 0 || fh.NumberOfSections > 96)
    return "no sections, or more than 96";
  if (sect + (uint64_t)fh.NumberOfSections * sizeof(IMAGE_SECTION_HEADER) > size)
    return "the section table lies past the end of the file (truncated?)";
  for (unsigned i = 0; i < fh.NumberOfSections; i++) {
    IMAGE_SECTION_HEADER sh;
    if (read_at(h, sect + i * sizeof(sh), &sh, sizeof(sh)))
      return "unreadable section header";
    if (sh.SizeOfRawData && (uint64_t)sh.PointerToRawData + sh.SizeOfRawData > size)
      return "a section lies past the end of the file (truncated?)";
  }
  return NULL;
}

static int check_pe(HANDLE h, const os_dl_spec *spec, char *err, size_t errlen) {
  LARGE_INTEGER size;
  const char *why;
  if (!GetFileSizeEx(h, &size)) {
    char text[512];
    DWORD e = GetLastError();
    os_win_errtext(e, text, sizeof(text));
    snprintf(err, errlen, "plugin \"%s\" (%s): cannot read the private copy: %s", spec->name,
             spec->path, text);
    return -os_win_errno(e);
  }
  if (!(why = pe_problem(h, (uint64_t)size.QuadPart)))
    return 0;
  snprintf(err, errlen, "plugin \"%s\" (%s): cannot load: %s (%lld bytes)", spec->name, spec->path,
           why, (long long)size.QuadPart);
  return -ENOEXEC;
}

int os_dl_open(const os_dl_spec *spec, os_dl **out, char *err, size_t errlen) {
  os_dl *dl;
  HANDLE h;
  char why[512];
  int rc;

  *out = NULL;
  os_once(&swept, sweep_stale_copies);
  if (!(dl = calloc(1, sizeof(*dl)))) {
    snprintf(err, errlen, "plugin \"%s\" (%s): cannot load: %s", spec->name, spec->path,
             os_strerror(ENOMEM));
    return -ENOMEM;
  }
  if ((rc = open_and_copy(spec, dl, err, errlen)) < 0) {
    free(dl);
    return rc;
  }
  /* Denying writers from the check to the end of LoadLibrary: the bytes
   * checked are the bytes mapped. The loader's own open (read, execute;
   * sharing read and delete) is compatible with this one. */
  h = CreateFileW(dl->copy, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
  if (h == INVALID_HANDLE_VALUE) {
    DWORD e = GetLastError();
    os_win_errtext(e, why, sizeof(why));
    snprintf(err, errlen, "plugin \"%s\" (%s): cannot read the private copy: %s", spec->name,
             spec->path, why);
    rc = -os_win_errno(e);
  } else if ((rc = check_pe(h, spec, err, errlen)) == 0) {
    /* Dependencies are searched in pierd's directory and System32, never in
     * %TEMP% (where the copy is) nor the current directory. */
    dl->mod = LoadLibraryExW(dl->copy, NULL, LOAD_LIBRARY_SEARCH_DEFAULT_DIRS);
    if (!dl->mod) {
      os_win_message(GetLastError(), why, sizeof(why));
      snprintf(err, errlen, "plugin \"%s\" (%s): cannot load: %s", spec->name, spec->path, why);
      rc = -ENOEXEC;
    }
  }
  if (h != INVALID_HANDLE_VALUE)
    CloseHandle(h);
  if (rc < 0) {
    DeleteFileW(dl->copy);
    free(dl);
    return rc;
  }
  *out = dl;
  return 0;
}

void *os_dl_sym(os_dl *dl, const char *symbol) {
  FARPROC p = GetProcAddress(dl->mod, symbol);
  void *v;
  memcpy(&v, &p, sizeof(v)); /* a data symbol (the descriptor) comes as a FARPROC too */
  return v;
}

int os_dl_range(os_dl *dl, uintptr_t *start, uintptr_t *end, uintptr_t *bias) {
  const IMAGE_DOS_HEADER *dos;
  const IMAGE_NT_HEADERS *nt;
  if (!dl || !dl->mod)
    return -ENOENT;
  /* The headers of a module LoadLibrary mapped: checked when it was loaded. */
  dos = (const IMAGE_DOS_HEADER *)dl->mod;
  nt = (const IMAGE_NT_HEADERS *)((const char *)dl->mod + dos->e_lfanew);
  *start = (uintptr_t)dl->mod;
  *end = *start + nt->OptionalHeader.SizeOfImage;
  *bias = *start - (uintptr_t)nt->OptionalHeader.ImageBase;
  return 0;
}

void os_dl_close(os_dl *dl) {
  if (!dl)
    return;
  FreeLibrary(dl->mod);
  DeleteFileW(dl->copy);
  free(dl);
}
