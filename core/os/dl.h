/* Loading a plugin's shared library (.so on POSIX, .dll on Windows), the
 * platform part of the plugin loader. The file is opened once, checked
 * against plugin_dir through the open handle (what the system says that
 * handle points at, not the path: a link swapped after the config was checked
 * changes nothing), copied through it to a private temporary file, checked
 * (ELF or PE headers inside the file: the system loader may crash or fail
 * obscurely on a truncated file) and loaded from the copy. The operator may
 * then replace or rebuild the original at any time, and two versions of one
 * plugin load side by side. host/loader.c does the rest (descriptor, ABI). */
#ifndef PIER_OS_DL_H
#define PIER_OS_DL_H

#include <stddef.h>
#include <stdint.h>

/* A loaded library; opaque. */
typedef struct os_dl os_dl;

/* What to load; the names are used in error texts only, besides path. */
typedef struct os_dl_spec {
  const char *name;        /* the plugin's name in server.json */
  const char *path;        /* the file to load */
  const char *confine_dir; /* link-free directory the file must lie in, or
                              NULL */
} os_dl_spec;

/* Loads spec->path as described above. Returns 0 with *out set, or a
 * negative errno (-EPERM: outside confine_dir; -ENOEXEC: not a loadable
 * library) with one line in err naming the plugin, the file and the reason,
 * and *out NULL. Nothing is left behind on failure (no copy, no handle). */
int os_dl_open(const os_dl_spec *spec, os_dl **out, char *err, size_t errlen);
/* The address of an exported symbol, or NULL. */
void *os_dl_sym(os_dl *dl, const char *symbol);
/* Where the library's code lies, for the crash report: [*start, *end) in
 * this process, and *bias such that an address a in it is a - *bias in the
 * file (what `addr2line -e FILE` takes: on ELF the load bias, on PE the
 * module's base less its preferred ImageBase). Returns 0 or -ENOENT. */
int os_dl_range(os_dl *dl, uintptr_t *start, uintptr_t *end, uintptr_t *bias);
/* Unloads and releases what os_dl_open made (its private copy included);
 * NULL is ignored. */
void os_dl_close(os_dl *dl);

/* The extension of a plugin file on this platform, with its dot (".so",
 * ".dll"). */
extern const char os_dl_ext[];

#endif
