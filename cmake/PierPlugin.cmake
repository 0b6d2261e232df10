# pier_add_plugin(name source...): builds a pier plugin, a MODULE library
# (name.so on Linux, name.dll on Windows; no "lib" prefix) that includes the
# SDK headers (the pier::plugin target) and exports only what PIER_EXPORT
# marks: the descriptor PIER_PLUGIN defines and any callback server.json
# names. C and C++ symbols are hidden by default, inline functions of C++
# classes too, so a plugin never clashes with the daemon or another plugin.
# C++ sources built by g++ on Linux also get -fno-gnu-unique: the statics of
# libstdc++'s header templates would otherwise be GNU "unique" symbols, which
# keep the plugin's image mapped after a hot reload. With mingw-w64 a plugin
# DLL links the compiler's runtime statically.
#
# The same file serves the installed SDK (find_package(pier), which defines
# pier::plugin as an imported target) and pier's own tree (where pier::plugin
# points at include/ and pier_plugin() wraps this function).
include_guard(GLOBAL)

function(pier_add_plugin name)
  if(NOT ARGN)
    message(FATAL_ERROR "pier_add_plugin(${name}): no source files")
  endif()
  if(NOT TARGET pier::plugin)
    message(FATAL_ERROR "pier_add_plugin(${name}): no pier::plugin target (use find_package(pier))")
  endif()
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE pier::plugin)
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(NOT WIN32)
    target_compile_options(${name} PRIVATE
      $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-fno-gnu-unique>)
  elseif(MINGW)
    # The compiler's runtime (libgcc, libstdc++) linked into the DLL: it then
    # needs only Windows' own DLLs beside pierd.exe.
    target_link_options(${name} PRIVATE -static)
  endif()
endfunction()
