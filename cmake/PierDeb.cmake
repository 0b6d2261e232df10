# CPack settings for the Debian package (`cpack -G DEB` in a build configured
# with -DCMAKE_INSTALL_PREFIX=/usr): one package, pier, with the daemon, the
# tools, the example plugins, the config (a conffile), the systemd unit and
# the plugin SDK. The SDK is two C headers and a C++ one, a CMake package
# and a .pc file: header-only, with no library to link (plugins get the
# host's services as a function table at load time), so a separate pier-dev
# would hold a few kilobytes and make every plugin author install two
# packages; and pier-new-plugin, which is for plugin authors, is a shell
# script. What building a plugin needs besides (a compiler, CMake or
# pkg-config) is suggested, not required: a server runs without it.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME pier)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "plugin-hosting game server daemon")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "pierd accepts TCP, TLS and WebSocket connections, frames what clients send
and hands it to game content plugins (shared libraries) through a small C
ABI, on io_uring or epoll worker threads; plugins can be reloaded while their
sessions stay connected.
This package has pierd, pierctl (its admin client), pier-bench (a load
generator), the echo and chat example plugins, the default config in
/etc/pier/server.json, a systemd unit and the plugin SDK: the headers,
find_package(pier) and pkg-config pier-plugin for building plugins, and
pier-new-plugin, which writes a ready plugin project.")
set(PIER_DEB_MAINTAINER "pier maintainers <pier@localhost>" CACHE STRING
    "Maintainer field of the .deb")
set(CPACK_PACKAGE_CONTACT "${PIER_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${PIER_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # pier_0.1.0_amd64.deb
# Depends from the ELF files' libraries (dpkg-shlibdeps): liburing2,
# libcjson1, libssl3, libwslay1, libmicrohttpd12, libnats3.4, libc6.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS
    "cmake, gcc | c-compiler, g++ | c++-compiler, pkg-config, nats-server")
# Absolute destinations (/etc/pier, /lib/systemd/system) need the staging
# root as DESTDIR, with CMAKE_INSTALL_PREFIX the real /usr: the install-time
# files (cmake/PierInstallConfig.cmake) then name the installed paths.
set(CPACK_SET_DESTDIR ON)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
# The config is the admin's: an upgrade keeps their edits (dpkg asks), and
# purge removes it.
file(WRITE ${CMAKE_BINARY_DIR}/deb/conffiles "${CMAKE_INSTALL_FULL_SYSCONFDIR}/pier/server.json\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_BINARY_DIR}/deb/conffiles)
include(CPack)
