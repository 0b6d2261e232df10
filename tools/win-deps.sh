# shellcheck shell=bash
# Sourced by tools/build-windows: the Windows builds of the two libraries pier
# links, cJSON and Check, cross-built with cmake/mingw-w64-x86_64.cmake from
# Debian's own source packages (the same versions and patches as the Linux
# libcjson-dev and check), as static libraries.
#
#   pier_win_deps   ensures both are built, once, under
#                   $PIER_WIN_CACHE/<source>-<version>/prefix (a cache outside
#                   the tree: ${XDG_CACHE_HOME:-~/.cache}/pier/win-deps), and
#                   sets PIER_WIN_DEPS to the two prefixes ("a;b"), the value
#                   the toolchain file takes as -DPIER_WIN_DEPS.
#
# A prefix is reused when its .built stamp matches PIER_WIN_DEPS_RECIPE; a new
# Debian version (a security update) gets a directory of its own. apt-get
# source needs deb-src lines: when apt has none, pier_win_deb_src adds
# /etc/apt/sources.list.d/pier-deb-src.sources with the URIs, suites,
# components and key of the mirror apt already uses, and runs apt-get update
# once. Needs pier_ensure_deps windows (mingw-w64, dpkg-dev) and cmake.
PIER_WIN_CACHE=${PIER_WIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pier/win-deps}
# Bump when the way a library is built changes, so every cache rebuilds.
PIER_WIN_DEPS_RECIPE=1
PIER_WIN_DEB_SRC=/etc/apt/sources.list.d/pier-deb-src.sources

pier_win_sudo() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Prints deb822 deb-src stanzas for the deb sources apt uses: the stanzas of
# /etc/apt/sources.list.d/debian.sources (Debian 12's container default), or
# the one-line "deb" entries of /etc/apt/sources.list (its installer default).
pier_win_deb_src_stanzas() {
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -f "$f" ]; then
    awk '
      function flush() {
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled !~ /^[ \t]*no/ && uris != "") {
          printf "Types: deb-src\n%s%s%s%s\n", uris, suites, comps, signed
        }
        types = ""; enabled = ""; uris = ""; suites = ""; comps = ""; signed = ""; cur = ""
      }
      /^#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ { # continuation of the field above (e.g. an inline Signed-By key)
        if (cur == "uris") uris = uris $0 "\n"
        else if (cur == "suites") suites = suites $0 "\n"
        else if (cur == "comps") comps = comps $0 "\n"
        else if (cur == "signed") signed = signed $0 "\n"
        next
      }
      {
        key = tolower($0); sub(/:.*/, "", key); cur = ""
        if (key == "types") { types = $0; sub(/^[^:]*:/, "", types) }
        else if (key == "enabled") { enabled = $0; sub(/^[^:]*:/, "", enabled) }
        else if (key == "uris") { uris = $0 "\n"; cur = "uris" }
        else if (key == "suites") { suites = $0 "\n"; cur = "suites" }
        else if (key == "components") { comps = $0 "\n"; cur = "comps" }
        else if (key == "signed-by") { signed = $0 "\n"; cur = "signed" }
      }
      END { flush() }' "$f"
    return
  fi
  [ -f /etc/apt/sources.list ] || return 0
  awk '$1 == "deb" {
         opts = ""; i = 2
         if ($2 ~ /^\[/) { while ($i !~ /\]$/) { opts = opts $i " "; i++ } opts = opts $i; i++ }
         signed = opts; gsub(/^\[|\]$/, "", signed)
         n = split(signed, o, " "); signed = ""
         for (k = 1; k <= n; k++) if (o[k] ~ /^signed-by=/) { signed = o[k]; sub(/^signed-by=/, "", signed) }
         printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents:", $i, $(i + 1)
         for (j = i + 2; j <= NF && $j !~ /^#/; j++) printf " %s", $j
         printf "\n"
         if (signed != "") printf "Signed-By: %s\n", signed
         printf "\n"
       }' /etc/apt/sources.list
}

# Makes apt-get source work: adds deb-src entries for the configured mirror
# (unless an earlier run did) and updates apt's lists.
pier_win_deb_src() {
  if [ ! -f "$PIER_WIN_DEB_SRC" ]; then
    local stanzas
    stanzas=$(pier_win_deb_src_stanzas)
    if [ -z "$stanzas" ]; then
      echo "pier: no Debian 'deb' source found in /etc/apt to mirror as deb-src" >&2
      return 1
    fi
    echo "pier: adding deb-src entries ($PIER_WIN_DEB_SRC) for apt-get source" >&2
    printf '# Added by pier tools/win-deps.sh: source packages for the Windows\n# builds of cJSON and Check.\n%s\n' \
      "$stanzas" | pier_win_sudo tee "$PIER_WIN_DEB_SRC" >/dev/null
  fi
  pier_win_sudo apt-get update -qq
}

# Prints "SRC VERSION" for each source package, the version `apt-get source`
# would fetch (read from its .dsc name; nothing when apt has no deb-src).
pier_win_src_versions() {
  # Without deb-src apt-get fails (100): that is an answer here, not an error
  # for the caller's set -e and pipefail.
  { apt-get source --print-uris -qq "$@" 2>/dev/null || true; } |
    awk '$2 ~ /\.dsc$/ { v = $2; sub(/\.dsc$/, "", v); n = index(v, "_")
                         print substr(v, 1, n - 1), substr(v, n + 1) }'
}

# Cross-builds version VERSION of source package SRC (cjson or check) into
# $PIER_WIN_CACHE/SRC-VERSION/prefix unless that is already there; prints the
# prefix. The toolchain file is this tree's; extra cmake arguments follow.
pier_win_build_dep() {
  local src=$1 version=$2 dir root tree start=$SECONDS
  shift 2
  root=$(pwd)
  dir=$PIER_WIN_CACHE/$src-$version
  if [ "$(cat "$dir/.built" 2>/dev/null)" = "$PIER_WIN_DEPS_RECIPE" ]; then
    echo "$dir/prefix"
    return 0
  fi
  echo "pier: cross-building $src $version for Windows into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir/src"
  # Downloads the .dsc and tarballs and unpacks them with Debian's patches
  # applied (dpkg-source). As root, apt warns that it downloads unsandboxed:
  # expected, the log keeps it.
  if ! (cd "$dir/src" && apt-get source -qq "$src=$version") >"$dir/build.log" 2>&1; then
    cat "$dir/build.log" >&2
    echo "pier: apt-get source $src=$version failed" >&2
    return 1
  fi
  tree=$(find "$dir/src" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  if [ -z "$tree" ] || [ ! -f "$tree/CMakeLists.txt" ]; then
    echo "pier: apt-get source $src=$version gave no CMake source tree in $dir/src" >&2
    return 1
  fi
  if ! { cmake -S "$tree" -B "$dir/build" \
           -DCMAKE_TOOLCHAIN_FILE="$root/cmake/mingw-w64-x86_64.cmake" \
           -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$dir/prefix" "$@" &&
         cmake --build "$dir/build" -j"$(nproc)" &&
         cmake --install "$dir/build"; } >>"$dir/build.log" 2>&1; then
    echo "pier: building $src for Windows failed; the log is $dir/build.log:" >&2
    tail -n 30 "$dir/build.log" >&2
    return 1
  fi
  rm -rf "$dir/src" "$dir/build"
  echo "$PIER_WIN_DEPS_RECIPE" >"$dir/.built"
  echo "pier: $src $version built in $((SECONDS - start)) s" >&2
  echo "$dir/prefix"
}

pier_win_deps() {
  local versions cjson check
  versions=$(pier_win_src_versions cjson check)
  if [ "$(echo "$versions" | grep -c .)" -ne 2 ]; then
    pier_win_deb_src || return 1
    versions=$(pier_win_src_versions cjson check)
  fi
  cjson=$(echo "$versions" | awk '$1 == "cjson" { print $2 }')
  check=$(echo "$versions" | awk '$1 == "check" { print $2 }')
  if [ -z "$cjson" ] || [ -z "$check" ]; then
    echo "pier: apt has no source package for cjson or check (deb-src: $PIER_WIN_DEB_SRC)" >&2
    return 1
  fi
  # cJSON's own warning and hardening flags (ENABLE_CUSTOM_COMPILER_FLAGS) add
  # -fstack-protector-strong, whose __stack_chk_fail then fails pier's static
  # link; no dllexport either (ENABLE_HIDDEN_SYMBOLS; pier compiles against it
  # with CJSON_HIDE_SYMBOLS), so pierd.exe exports nothing of cJSON's.
  cjson=$(pier_win_build_dep cjson "$cjson" -DBUILD_SHARED_LIBS=OFF -DENABLE_CJSON_TEST=OFF \
    -DENABLE_CUSTOM_COMPILER_FLAGS=OFF -DENABLE_PUBLIC_SYMBOLS=OFF -DENABLE_HIDDEN_SYMBOLS=ON) ||
    return 1
  # Check's own tests need fork(); libcheck.a is what pier uses (Check::check).
  check=$(pier_win_build_dep check "$check" -DBUILD_TESTING=OFF) || return 1
  # shellcheck disable=SC2034 # the result, for the caller
  PIER_WIN_DEPS="$cjson;$check"
}
