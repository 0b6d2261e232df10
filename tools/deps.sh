# Sourced by tools/run, tools/test and the tools/test-* scripts: installs the
# Debian 12 packages a command needs, only those missing, in one visible
# apt-get run (as root, or through sudo).
#
#   pier_ensure_deps        what building and running pierd needs (tools/run):
#                           the C and C++ compilers (C++ plugins, the
#                           C++ SDK layer) and CMake, cJSON, Check, liburing,
#                           wslay (WebSocket frames), OpenSSL (TLS),
#                           libmicrohttpd (the metrics HTTP listener) and
#                           libnats (the NATS client of "cluster")
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
#                           tests/ws), prometheus (promtool checks the
#                           /metrics text; tests/prometheus runs a real
#                           server scraping pierd), nats-server (the
#                           cluster tests start their own), binutils (addr2line: test_logs
#                           resolves a crash report's plugin frame), and the
#                           deb and windows sets below (tests/sdk builds the
#                           .deb; tools/test-windows)
#   pier_ensure_deps deb    the build set plus what CPack's .deb needs: file
#                           (it finds the ELF files) and dpkg-dev
#                           (dpkg-shlibdeps, their library packages;
#                           tools/test-deb)
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
PIER_DEPS_BUILD=(cmake make gcc g++ libc6-dev pkg-config libcjson-dev check liburing-dev libwslay-dev
                 libssl-dev libmicrohttpd-dev libnats-dev)
PIER_DEPS_TEST=(valgrind python3 python3-websockets clang-14 libclang-rt-14-dev chromium nodejs
                ca-certificates openssl prometheus nats-server binutils)
PIER_DEPS_WINDOWS=(mingw-w64 wine wine64 dpkg-dev)
PIER_DEPS_DEB=(file dpkg-dev)

pier_ensure_deps() {
  local pkgs=("${PIER_DEPS_BUILD[@]}") missing=() p
  case "${1:-}" in
    test)
      pkgs+=("${PIER_DEPS_TEST[@]}" "${PIER_DEPS_WINDOWS[@]}" "${PIER_DEPS_DEB[@]}")
      command -v npm >/dev/null || pkgs+=(npm)
      ;;
    windows) pkgs+=("${PIER_DEPS_WINDOWS[@]}") ;;
    deb) pkgs+=("${PIER_DEPS_DEB[@]}") ;;
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
  case " ${missing[*]} " in
    *" prometheus "*) pier_quiet_prometheus ;;
  esac
}

# The prometheus package comes with a system service scraping itself into
# /var/lib/prometheus; the tests start their own server, so a service the
# install started is stopped and disabled. Harmless where systemd or the
# service is absent (containers, policy-rc.d refusing to start it).
pier_quiet_prometheus() {
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    "${sudo[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    "${sudo[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
  return 0
}
