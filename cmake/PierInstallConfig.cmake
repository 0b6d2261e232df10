# Run by `cmake --install` (and CPack), after the files it places: writes the
# files that name installed paths, for the prefix of this install (the
# --prefix given to cmake --install may differ from the configured one):
#   ${SYSCONFDIR}/pier/server.json  PIER_CONFIG_IN (config/server.json of
#       the source tree; on Windows its stripped copy in the build tree), with
#       its relative paths (plugin_dir, plugins[].path, static, admin_socket)
#       rewritten to lead from ${SYSCONFDIR}/pier, where pierd resolves them,
#       to the installed plugins, the chat web client and an admin socket in
#       ${RUNSTATEDIR}/pier (pierd creates that directory). An installed
#       server.json that differs from that (the operator's edits) is kept;
#       the new one goes beside it as server.json.new.
#   ${DATADIR}/pkgconfig/pier-plugin.pc
#   the systemd unit (PIER_INSTALL_UNIT_DIR), with the installed pierd and
#       config paths
# The install(CODE) before it sets PIER_SRC, PIER_GEN, PIER_CONFIG_IN,
# PIER_INSTALL_WEB, PIER_INSTALL_UNIT_DIR, the versions and the configured
# GNUInstallDirs values PIER_DIR_<NAME> (relative to the prefix, or absolute
# as GNUInstallDirs makes SYSCONFDIR and LOCALSTATEDIR for /usr and /opt).
# DESTDIR (CPack's staging root) is added by file(INSTALL); the paths written
# into the files are the ones of the installed system.

function(pier_full_dir out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${PIER_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

# REPLACE old by new in the text, once; a missing old means config/server.json
# changed shape, and installing it unrewritten would give a broken config.
# (The configure checks the same, so this fires only for a template changed
# since without the build re-running it.)
function(pier_replace_once var old new)
  string(FIND "${${var}}" "${old}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "install: ${PIER_CONFIG_IN} has no ${old} to rewrite")
  endif()
  string(REPLACE "${old}" "${new}" text "${${var}}")
  set(${var} "${text}" PARENT_SCOPE)
endfunction()

get_filename_component(PIER_PREFIX "${CMAKE_INSTALL_PREFIX}" ABSOLUTE)
foreach(d BINDIR LIBDIR INCLUDEDIR DATADIR DOCDIR SYSCONFDIR RUNSTATEDIR)
  pier_full_dir(PIER_FULL_${d} "${PIER_DIR_${d}}")
endforeach()
pier_full_dir(PIER_FULL_UNITDIR "${PIER_INSTALL_UNIT_DIR}")
set(PIER_CONF_DIR "${PIER_FULL_SYSCONFDIR}/pier")
file(MAKE_DIRECTORY "${PIER_GEN}")

# server.json
file(READ "${PIER_CONFIG_IN}" json)
file(RELATIVE_PATH rel_plugins "${PIER_CONF_DIR}" "${PIER_FULL_LIBDIR}/pier/plugins")
file(RELATIVE_PATH rel_sock "${PIER_CONF_DIR}" "${PIER_FULL_RUNSTATEDIR}/pier/pierd.sock")
pier_replace_once(json "\"plugin_dir\": \"../plugins\"" "\"plugin_dir\": \"${rel_plugins}\"")
pier_replace_once(json "\"path\": \"../plugins/" "\"path\": \"${rel_plugins}/")
pier_replace_once(json "\"admin_socket\": \"run/pierd.sock\"" "\"admin_socket\": \"${rel_sock}\"")
if(PIER_INSTALL_WEB)
  file(RELATIVE_PATH rel_web "${PIER_CONF_DIR}" "${PIER_FULL_DATADIR}/pier/plugins/chat/web")
  pier_replace_once(json "\"static\": \"../plugins/chat/web\"" "\"static\": \"${rel_web}\"")
endif()
# Written only when its text changes, so that file(INSTALL) of an unchanged
# one says Up-to-date. An installed server.json with other text (an
# operator's edits, or the default of an older pier) is kept, as packages
# keep a changed conffile: the new default goes beside it as server.json.new.
# DESTDIR's staging directory (CPack) starts empty, so this is for direct
# installs.
function(pier_write_if_changed path text)
  if(EXISTS "${path}")
    file(READ "${path}" old)
    if(old STREQUAL text)
      return()
    endif()
  endif()
  file(WRITE "${path}" "${text}")
endfunction()
set(conf_dest "${PIER_CONF_DIR}")
if(DEFINED ENV{DESTDIR} AND NOT "$ENV{DESTDIR}" STREQUAL "")
  string(REGEX REPLACE "^[A-Za-z]:" "" conf_dest "${conf_dest}") # as file(INSTALL) does
  set(conf_dest "$ENV{DESTDIR}${conf_dest}")
endif()
set(conf_edited OFF)
if(EXISTS "${conf_dest}/server.json")
  file(READ "${conf_dest}/server.json" installed)
  if(NOT installed STREQUAL json)
    set(conf_edited ON)
  endif()
endif()
if(conf_edited)
  pier_write_if_changed("${PIER_GEN}/new/server.json.new" "${json}")
  file(INSTALL DESTINATION "${PIER_CONF_DIR}" TYPE FILE FILES "${PIER_GEN}/new/server.json.new")
  message(STATUS "Keeping edited ${conf_dest}/server.json; "
                 "the new default is ${conf_dest}/server.json.new")
else()
  pier_write_if_changed("${PIER_GEN}/server.json" "${json}")
  file(INSTALL DESTINATION "${PIER_CONF_DIR}" TYPE FILE FILES "${PIER_GEN}/server.json")
endif()

# pier-plugin.pc: includedir as ${prefix}/... when it lies under the prefix.
set(PIER_PC_PREFIX "${PIER_PREFIX}")
file(RELATIVE_PATH rel_inc "${PIER_PREFIX}" "${PIER_FULL_INCLUDEDIR}")
if(rel_inc MATCHES "^\\.\\.")
  set(PIER_PC_INCLUDEDIR "${PIER_FULL_INCLUDEDIR}")
else()
  set(PIER_PC_INCLUDEDIR "\${prefix}/${rel_inc}")
endif()
configure_file("${PIER_SRC}/cmake/pier-plugin.pc.in" "${PIER_GEN}/pier-plugin.pc" @ONLY)
file(INSTALL DESTINATION "${PIER_FULL_DATADIR}/pkgconfig" TYPE FILE
     FILES "${PIER_GEN}/pier-plugin.pc")

# The systemd unit.
if(PIER_INSTALL_UNIT_DIR)
  set(PIER_UNIT_PIERD "${PIER_FULL_BINDIR}/pierd")
  set(PIER_UNIT_CONFIG "${PIER_CONF_DIR}/server.json")
  set(PIER_UNIT_DOC "${PIER_FULL_DOCDIR}/README.md")
  configure_file("${PIER_SRC}/packaging/pierd.service.in" "${PIER_GEN}/pierd.service" @ONLY)
  file(INSTALL DESTINATION "${PIER_FULL_UNITDIR}" TYPE FILE FILES "${PIER_GEN}/pierd.service")
endif()
