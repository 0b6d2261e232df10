/* os_memout on POSIX: open_memstream. */
#include "os/memout.h"

#include <errno.h>
#include <stdlib.h>

FILE *os_memout_open(os_memout *m) {
  m->text = NULL;
  m->len = 0;
  m->f = open_memstream(&m->text, &m->len);
  return m->f;
}

int os_memout_close(os_memout *m, char **text, size_t *len) {
  int bad = fflush(m->f) != 0;
  if (fclose(m->f) != 0 || bad) {
    free(m->text);
    return -ENOMEM;
  }
  *text = m->text;
  *len = m->len;
  return 0;
}
