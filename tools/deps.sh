# Sourced by tools/run, tools/test and the tools/test-* scripts: installs the
# Debian 12 packages a command needs, only those missing, in one visible
# apt-get run (as root, or through sudo).
#
#   pier_ensure_deps        what building and running pierd needs (tools/run)
#   pier_ensure_deps test   that plus everything tools/test uses: valgrind
#                           (tools/test-valgrind), python3 (its clients),
#                           clang-14 and libclang-rt-14-dev (libFuzzer and the
#                           sanitizer runtimes for tools/test-fuzz)
#
# The configure step needs check even for tools/run: the test suites are part
# of the one CMake tree. gcc brings libasan, libubsan and libtsan with it.
PIER_DEPS_BUILD=(cmake make gcc libc6-dev pkg-config libcjson-dev check liburing-dev)
PIER_DEPS_TEST=(valgrind python3 clang-14 libclang-rt-14-dev)

pier_ensure_deps() {
  local pkgs=("${PIER_DEPS_BUILD[@]}") missing=() p
  [ "${1:-}" = test ] && pkgs+=("${PIER_DEPS_TEST[@]}")
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "pier: installing missing packages: ${missing[*]}" >&2
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
  echo "pier: installed ${missing[*]}" >&2
}
