#!/bin/sh
# Installs every Debian package that building, running and testing tlsfault
# need (only what is missing; `apt-get update` first), then builds it in
# ./build.  Safe to run again.  Needs root (or sudo) to install packages.
set -eu
cd "$(dirname "$0")/.."

PACKAGES="build-essential autoconf automake libtool pkg-config
libevent-dev libssl-dev libconfig-dev libjansson-dev libcmocka-dev
clang libclang-rt-14-dev openssl curl gnutls-bin python3 tshark jq iproute2 iptables nftables procps
chromium"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "bootstrap: installing:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    # tshark's wireshark-common asks a question unless told not to.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi

[ -x configure ] || ./autogen.sh
mkdir -p build
cd build
[ -f Makefile ] || ../configure
make -j"$(nproc)"
echo "bootstrap: built build/src/tlsfault"
