/* Plugin loader: loads a plugin's shared library from a private copy
 * (os/dl.h), checks its descriptor against the host's ABI, and binds its
 * callbacks (from the descriptor, or from exported symbols that server.json
 * names). Every refusal says exactly what differs. */
#ifndef PIER_HOST_LOADER_H
#define PIER_HOST_LOADER_H

#include <stddef.h>

#include "host/config.h"
#include "os/dl.h"
#include "pier/plugin.h"

typedef struct plugin_image {
  os_dl *dl;
  const pier_plugin *desc;
  pier_plugin cb;    /* the callbacks in effect */
  char name[64];     /* descriptor's name */
  char version[64];  /* descriptor's version */
} plugin_image;

/* Loads cfg->resolved_path: opens it once and, when cfg->confine_dir is set,
 * refuses (-EPERM) a file that resolves outside it, whatever links were
 * changed since the config was checked. Returns 0, or a negative errno with
 * one line in err naming the plugin, the file and the reason. */
int loader_open(const cfg_plugin *cfg, plugin_image *img, char *err, size_t errlen);
void loader_close(plugin_image *img);

#endif
