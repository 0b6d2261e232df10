# CMake toolchain file for the Windows build of pier: 64-bit Windows
# (x86_64-w64-mingw32) with Debian's mingw-w64 gcc, tests run under wine.
# tools/build-windows uses it for pier and for the cross-built cJSON and Check
# (tools/win-deps.sh), so all three come from the same compiler:
#
#   cmake -S . -B build-win -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake \
#         -DPIER_WIN_DEPS="<cjson prefix>;<check prefix>"
#
# PIER_WIN_DEPS (a list of install prefixes, also read from the environment)
# is where find_package/find_library look for the target's libraries, beside
# mingw-w64's own /usr/x86_64-w64-mingw32; the build host's /usr is never
# searched for headers or libraries.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(PIER_WIN_TRIPLET x86_64-w64-mingw32)

# The -win32 gcc variant, deliberately (Debian ships both, and the unsuffixed
# x86_64-w64-mingw32-gcc is an alternative that may point at either). In it
# gcc's own runtime (libgcc, emutls for _Thread_local) uses the Win32 API for
# threads and needs nothing else, so pierd.exe and the plugin .dlls, whose
# threads are native ones (core/os/win), carry no winpthreads. The -posix
# variant builds gcc's runtime on winpthreads, which would then be in every
# binary, and static winpthreads in the exe and in each plugin .dll is one
# pthread runtime per module. C needs nothing the -posix variant adds (that
# is std::thread and friends in C++). winpthreads itself is still there for
# code that asks for it: Check uses pthreads internally, and the test
# programs link it through Threads::Threads (-pthread), statically.
set(CMAKE_C_COMPILER ${PIER_WIN_TRIPLET}-gcc-win32)
set(CMAKE_CXX_COMPILER ${PIER_WIN_TRIPLET}-g++-win32)
set(CMAKE_RC_COMPILER ${PIER_WIN_TRIPLET}-windres)

# Test programs (ctest, try_run) run under wine. The Debian wrapper
# /usr/bin/wine picks wine64 when there is no 32-bit wine; wine64 itself is
# not on PATH.
find_program(PIER_WINE wine NO_CMAKE_FIND_ROOT_PATH)
if(PIER_WINE)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${PIER_WINE})
endif()

if(NOT PIER_WIN_DEPS AND DEFINED ENV{PIER_WIN_DEPS})
  set(PIER_WIN_DEPS "$ENV{PIER_WIN_DEPS}")
endif()
set(PIER_WIN_DEPS "${PIER_WIN_DEPS}" CACHE STRING
    "Install prefixes of the Windows builds of pier's libraries (cJSON, Check)")
# try_compile projects read this file again; hand them the prefixes too.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES PIER_WIN_DEPS)

# Each root is searched as an install prefix itself (<root>/lib/cmake/...,
# <root>/include, <root>/lib), and nothing outside the roots is.
set(CMAKE_FIND_ROOT_PATH /usr/${PIER_WIN_TRIPLET} ${PIER_WIN_DEPS})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
