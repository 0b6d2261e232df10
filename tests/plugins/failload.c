/* Test plugin whose on_load refuses to start (returns -EINVAL). */
#include <errno.h>

#include "pier/plugin.h"

static int fail_load(const pier_load_args *a) { return -EINVAL; }

PIER_PLUGIN("failload", "0.0.1", .on_load = fail_load);
