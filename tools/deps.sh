# Sourced by tools/run, tools/test and the tools/test-* scripts: installs the
# Debian 12 packages a command needs, only those missing, in one visible
# apt-get run (as root, or through sudo).
#
#   pier_ensure_deps        what building and running pierd needs (tools/run):
#                           the compiler and CMake, cJSON, Check, liburing,
#                           wslay (WebSocket frames) and OpenSSL (TLS)
#   pier_ensure_deps test   that plus everything tools/test uses: valgrind
#                           (tools/test-valgrind), python3 (its clients),
#                           python3-websockets (the WebSocket client of
#                           tests/ws),
#                           clang-14 and libclang-rt-14-dev (libFuzzer and the
#                           sanitizer runtimes for tools/test-fuzz),
#                           chromium, nodejs and npm (the browser tests,
#                           tests/browser: npm only when no npm is on the
#                           PATH, since a nodejs from elsewhere brings its
#                           own), ca-certificates (npm checks the
#                           registry's certificate against it), openssl
#                           (their certificates, and the TLS client of
#                           tests/ws), binutils (addr2line: test_logs
#                           resolves a crash report's plugin frame), and the
#                           windows set below (tools/test-windows)
#   pier_ensure_deps windows
#                           the build set plus the Windows cross-build and
#                           its test runner (tools/build-windows,
#                           tools/test-windows): mingw-w64 (gcc for
#                           x86_64-w64-mingw32), wine and wine64 (run the
#                           .exe tests; 64-bit only, no i386 multiarch) and
#                           dpkg-dev (apt-get source unpacks Debian's cJSON
#                           and Check sources with it, tools/win-deps.sh)
#
# The configure step needs check even for tools/run: the test suites are part
# of the one CMake tree. gcc brings libasan, libubsan and libtsan with it.
PIER_DEPS_BUILD=(cmake make gcc libc6-dev pkg-config libcjson-dev check liburing-dev libwslay-dev
                 libssl-dev)
PIER_DEPS_TEST=(valgrind python3 python3-websockets clang-14 libclang-rt-14-dev chromium nodejs
                ca-certificates openssl binutils)
PIER_DEPS_WINDOWS=(mingw-w64 wine wine64 dpkg-dev)

pier_ensure_deps() {
  local pkgs=("${PIER_DEPS_BUILD[@]}") missing=() p
  case "${1:-}" in
    test)
      pkgs+=("${PIER_DEPS_TEST[@]}" "${PIER_DEPS_WINDOWS[@]}")
      command -v npm >/dev/null || pkgs+=(npm)
      ;;
    windows) pkgs+=("${PIER_DEPS_WINDOWS[@]}") ;;
  esac
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
