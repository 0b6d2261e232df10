/* Test plugin with a hand-made descriptor: built several times with
 * different BAD_* definitions to exercise each refusal of the loader. */
#include "pier/plugin.h"

#ifndef BAD_MAGIC
#define BAD_MAGIC PIER_PLUGIN_MAGIC
#endif
#ifndef BAD_MAJOR
#define BAD_MAJOR PIER_ABI_MAJOR
#endif
#ifndef BAD_MINOR
#define BAD_MINOR PIER_ABI_MINOR
#endif
#ifndef BAD_SIZE
#define BAD_SIZE sizeof(pier_plugin)
#endif

PIER_EXPORT const pier_plugin pier_plugin_descriptor = {
    .magic = BAD_MAGIC,
    .abi_major = BAD_MAJOR,
    .abi_minor = BAD_MINOR,
    .size = BAD_SIZE,
    .name = "badabi",
    .version = "0.0.1",
};
