/* os/dl.h on POSIX. The file is opened once, checked against plugin_dir
 * through that descriptor and copied through it to a private temporary file;
 * the copy is checked and loaded with RTLD_NOW | RTLD_LOCAL, then unlinked:
 * the operator may replace or rebuild the file on disk at any time without
 * touching the mapped image, and two versions of one plugin can be loaded
 * side by side (each copy is a distinct file to the dynamic loader). An
 * os_dl is the dlopen() handle itself. */
#include "os/dl.h"

#include <dlfcn.h>
#include <link.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "os/os.h"

const char os_dl_ext[] = ".so";

/* With a plugin_dir, the file that was opened must lie in it. Asked of the
 * descriptor, not of the path: a symbolic link swapped after the config was
 * checked changes nothing here, since the kernel tells where fd points. */
static int check_confined(int fd, const os_dl_spec *spec, char *err, size_t errlen) {
  char link[64], real[4096];
  size_t n;
  ssize_t len;

  if (!spec->confine_dir)
    return 0;
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  len = readlink(link, real, sizeof(real) - 1);
  if (len < 0) {
    int e = errno;
    snprintf(err, errlen,
             "plugin \"%s\" (%s): cannot tell where the file resolves (%s: %s); refused as "
             "plugin_dir is set",
             spec->name, spec->path, link, os_strerror(e));
    return -e;
  }
  real[len] = '\0';
  n = strlen(spec->confine_dir);
  if (strncmp(real, spec->confine_dir, n) == 0 &&
      (real[n] == '/' || (n == 1 && spec->confine_dir[0] == '/')))
    return 0;
  snprintf(err, errlen, "plugin \"%s\" (%s): the file resolves to %s, outside plugin_dir (%s)",
           spec->name, spec->path, real, spec->confine_dir);
  return -EPERM;
}

/* Opens spec->path once, checks where it lies and copies it through that
 * same descriptor to a private temporary file. Returns the copy's
 * descriptor (its name in dst), or a negative errno with err set. */
static int copy_private(const os_dl_spec *spec, char *dst, size_t dstlen, char *err,
                        size_t errlen) {
  struct stat st;
  const char *tmp = getenv("TMPDIR"), *src = spec->path, *name = spec->name;
  int in, out, rc = 0;
  off_t off = 0;

  in = open(src, O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    rc = -errno;
    snprintf(err, errlen, "plugin \"%s\": cannot open %s: %s", name, src, os_strerror(errno));
    return rc;
  }
  if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "plugin \"%s\": %s is not a regular file", name, src);
    close(in);
    return -EINVAL;
  }
  if ((rc = check_confined(in, spec, err, errlen)) < 0) {
    close(in);
    return rc;
  }
  snprintf(dst, dstlen, "%s/pier-%s-XXXXXX.so", tmp && *tmp ? tmp : "/tmp", name);
  out = mkstemps(dst, 3);
  if (out < 0) {
    rc = -errno;
    snprintf(err, errlen, "plugin \"%s\": cannot create a private copy in %s: %s", name,
             tmp && *tmp ? tmp : "/tmp", os_strerror(errno));
    close(in);
    return rc;
  }
  while (off < st.st_size) {
    ssize_t n = sendfile(out, in, &off, (size_t)(st.st_size - off));
    if (n <= 0) {
      rc = n < 0 ? -errno : -EIO;
      snprintf(err, errlen, "plugin \"%s\": copying %s failed: %s", name, src, os_strerror(-rc));
      break;
    }
  }
  close(in);
  if (rc < 0) {
    close(out);
    unlink(dst);
    return rc;
  }
  return out;
}

/* dlopen() of a truncated or damaged ELF file can kill the process with
 * SIGBUS (the loader maps segments past the end of the file and touches
 * them), so the copy is checked first, through the descriptor it was written
 * by, so the bytes checked are the bytes dlopen maps: an ELF shared object
 * for this machine whose headers and loadable segments lie inside the file. */
static int check_elf(int fd, const char *src, const char *name, char *err, size_t errlen) {
  Elf64_Ehdr eh;
  struct stat st;
  int rc = -ENOEXEC;
  const char *why = NULL;

  if (fstat(fd, &st) < 0) {
    rc = -errno;
    snprintf(err, errlen, "plugin \"%s\" (%s): cannot read the private copy: %s", name, src,
             os_strerror(errno));
    return rc;
  }
  if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) || memcmp(eh.e_ident, ELFMAG, SELFMAG))
    why = "not an ELF file (or truncated)";
  else if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_type != ET_DYN)
    why = "not a 64-bit ELF shared object";
#ifdef __x86_64__
  else if (eh.e_machine != EM_X86_64)
    why = "built for another machine";
#endif
  else if (eh.e_phentsize != sizeof(Elf64_Phdr) ||
           eh.e_phoff + (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > (uint64_t)st.st_size)
    why = "program headers lie past the end of the file (truncated?)";
  else if (eh.e_shoff && eh.e_shoff + (uint64_t)eh.e_shnum * eh.e_shentsize > (uint64_t)st.st_size)
    why = "section headers lie past the end of the file (truncated?)";
  for (unsigned i = 0; !why && i < eh.e_phnum; i++) {
    Elf64_Phdr ph;
    if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))) != (ssize_t)sizeof(ph))
      why = "unreadable program header";
    else if (ph.p_type == PT_LOAD && ph.p_offset + ph.p_filesz > (uint64_t)st.st_size)
      why = "a loadable segment lies past the end of the file (truncated?)";
  }
  if (!why)
    return 0;
  snprintf(err, errlen, "plugin \"%s\" (%s): cannot load: %s (%lld bytes)", name, src, why,
           (long long)st.st_size);
  return rc;
}

int os_dl_open(const os_dl_spec *spec, os_dl **out, char *err, size_t errlen) {
  char copy[4096];
  void *dl;
  int rc, fd;

  *out = NULL;
  fd = copy_private(spec, copy, sizeof(copy), err, errlen);
  if (fd < 0)
    return fd;
  rc = check_elf(fd, spec->path, spec->name, err, errlen);
  if (rc < 0) {
    close(fd);
    unlink(copy);
    return rc;
  }
  /* By name: the copy is ours (mode 0600, a fresh name in a sticky TMPDIR).
   * A /proc/self/fd path would do too, but glibc knows loaded objects by
   * name, and descriptor numbers repeat. */
  dl = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
  close(fd);
  unlink(copy);
  if (!dl) {
    /* dlerror() names the private copy; the operator knows the original. */
    const char *why = dlerror(), *p = why ? strstr(why, copy) : NULL;
    if (p && strncmp(p + strlen(copy), ": ", 2) == 0)
      why = p + strlen(copy) + 2;
    snprintf(err, errlen, "plugin \"%s\" (%s): cannot load: %s", spec->name, spec->path,
             why ? why : "unknown error");
    return -ENOEXEC;
  }
  *out = (os_dl *)dl;
  return 0;
}

void *os_dl_sym(os_dl *dl, const char *symbol) {
  dlerror();
  return dlsym(dl, symbol);
}

typedef struct range_query {
  uintptr_t bias, start, end;
  const char *name;
  int found;
} range_query;

static int range_of(struct dl_phdr_info *info, size_t size, void *arg) {
  range_query *q = arg;
  (void)size;
  if (info->dlpi_addr != q->bias || !info->dlpi_name || strcmp(info->dlpi_name, q->name) != 0)
    return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    uintptr_t a = q->bias + ph->p_vaddr, b = a + ph->p_memsz;
    if (ph->p_type != PT_LOAD)
      continue;
    if (!q->found || a < q->start)
      q->start = a;
    if (!q->found || b > q->end)
      q->end = b;
    q->found = 1;
  }
  return 1;
}

int os_dl_range(os_dl *dl, uintptr_t *start, uintptr_t *end, uintptr_t *bias) {
  struct link_map *lm = NULL;
  range_query q = {0};
  if (!dl || dlinfo(dl, RTLD_DI_LINKMAP, &lm) != 0 || !lm)
    return -ENOENT;
  q.bias = (uintptr_t)lm->l_addr;
  q.name = lm->l_name;
  dl_iterate_phdr(range_of, &q);
  if (!q.found)
    return -ENOENT;
  *start = q.start;
  *end = q.end;
  *bias = q.bias;
  return 0;
}

void os_dl_close(os_dl *dl) {
  if (dl)
    dlclose(dl);
}
