/* The platform half of io_loop.c: the wake-up a loop owns besides its
 * backend (Linux: the eventfd its backends wait on; Windows: none, the
 * completion port is the wake-up). One file per platform implements it,
 * io_platform_linux.c or io_platform_win.c, with io_backend_pick. */
#ifndef PIER_IO_IO_PLATFORM_H
#define PIER_IO_IO_PLATFORM_H

#include "io/io.h"

/* Sets loop->wake_fd up (or to -1). Returns 0 or a negative errno. */
int io_wake_open(io_loop *loop);
void io_wake_close(io_loop *loop);

#endif
