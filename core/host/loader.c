/* The platform-independent part of loading a plugin: os/dl.h opens, checks
 * and loads the file from a private copy; here the descriptor is found and
 * checked against the host's ABI and the callbacks are bound. */
#include "host/loader.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "os/dl.h"

/* The smallest descriptor a plugin of ABI 1.0 can have: up to on_tick. */
#define MIN_DESC_SIZE (offsetof(pier_plugin, on_tick) + sizeof(void (*)(void)))

static int bind_symbol(plugin_image *img, const cfg_plugin *cfg, const char *key,
                       const char *symbol, void **slot, char *err, size_t errlen) {
  void *p;
  if (!symbol)
    return 0;
  p = os_dl_sym(img->dl, symbol);
  if (!p) {
    snprintf(err, errlen,
             "plugin \"%s\" (%s): callbacks.%s names symbol \"%s\", which the plugin does not "
             "export",
             cfg->name, cfg->resolved_path, key, symbol);
    return -ENOENT;
  }
  *slot = p;
  return 0;
}

static int check_desc(const pier_plugin *d, const cfg_plugin *cfg, char *err, size_t errlen) {
  if (d->magic != PIER_PLUGIN_MAGIC) {
    snprintf(err, errlen,
             "plugin \"%s\" (%s): descriptor magic is 0x%08x, expected 0x%08x (not a pier "
             "plugin descriptor)",
             cfg->name, cfg->resolved_path, d->magic, PIER_PLUGIN_MAGIC);
    return -EINVAL;
  }
  if (d->abi_major != PIER_ABI_MAJOR) {
    snprintf(err, errlen,
             "plugin \"%s\" (%s): built for ABI %u.%u, host ABI is %u.%u: major versions "
             "differ; rebuild the plugin against this host's include/pier",
             cfg->name, cfg->resolved_path, d->abi_major, d->abi_minor, PIER_ABI_MAJOR,
             PIER_ABI_MINOR);
    return -EPROTO;
  }
  if (d->abi_minor > PIER_ABI_MINOR) {
    snprintf(err, errlen,
             "plugin \"%s\" (%s): built for ABI %u.%u, host ABI is %u.%u: the plugin needs a "
             "newer host (minor %u > %u)",
             cfg->name, cfg->resolved_path, d->abi_major, d->abi_minor, PIER_ABI_MAJOR,
             PIER_ABI_MINOR, d->abi_minor, PIER_ABI_MINOR);
    return -EPROTO;
  }
  if (d->size < MIN_DESC_SIZE) {
    snprintf(err, errlen,
             "plugin \"%s\" (%s): descriptor size %u is smaller than ABI %u.0's %zu bytes",
             cfg->name, cfg->resolved_path, d->size, PIER_ABI_MAJOR, (size_t)MIN_DESC_SIZE);
    return -EPROTO;
  }
  return 0;
}

int loader_open(const cfg_plugin *cfg, plugin_image *img, char *err, size_t errlen) {
  const os_dl_spec spec = {cfg->name, cfg->resolved_path, cfg->confine_dir};
  const pier_plugin *d;
  int rc;

  memset(img, 0, sizeof(*img));
  if ((rc = os_dl_open(&spec, &img->dl, err, errlen)) < 0)
    return rc;
  d = os_dl_sym(img->dl, PIER_DESCRIPTOR_SYMBOL);
  if (!d) {
    snprintf(err, errlen,
             "plugin \"%s\" (%s): no exported \"%s\" descriptor (define one with PIER_PLUGIN())",
             cfg->name, cfg->resolved_path, PIER_DESCRIPTOR_SYMBOL);
    rc = -ENOENT;
    goto fail;
  }
  if ((rc = check_desc(d, cfg, err, errlen)) < 0)
    goto fail;
  img->desc = d;
  /* Copy only the part of the descriptor this plugin has. */
  memcpy(&img->cb, d, d->size < sizeof(img->cb) ? d->size : sizeof(img->cb));
  snprintf(img->name, sizeof(img->name), "%s", d->name ? d->name : cfg->name);
  snprintf(img->version, sizeof(img->version), "%s", d->version ? d->version : "?");
#define BIND(field)                                                                         \
  if ((rc = bind_symbol(img, cfg, #field, cfg->callbacks.field, (void **)&img->cb.field, err, \
                        errlen)) < 0)                                                        \
    goto fail;
  BIND(on_load)
  BIND(on_unload)
  BIND(on_connected)
  BIND(on_recv)
  BIND(on_send)
  BIND(on_disconnected)
  BIND(on_tick)
  BIND(on_message)
  BIND(on_node)
#undef BIND
  return 0;
fail:
  os_dl_close(img->dl);
  img->dl = NULL;
  return rc;
}

void loader_close(plugin_image *img) {
  os_dl_close(img->dl);
  img->dl = NULL;
  img->desc = NULL;
}
