/* Test plugin whose on_load refuses to start (returns -EINVAL). Built as
 * failload.so, and as failload_echo.so (a failing new version of "echo"). */
#include <errno.h>

#include "pier/plugin.h"

static int fail_load(const pier_load_args *a) { return -EINVAL; }

#ifndef PLUGIN_NAME
#define PLUGIN_NAME "failload"
#endif

PIER_PLUGIN(PLUGIN_NAME, "0.0.1", .on_load = fail_load);
