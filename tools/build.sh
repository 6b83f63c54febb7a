#!/bin/sh
# Configures (once) and builds hybridmoe in the source tree. Extra arguments go to configure.
set -eu
cd "$(dirname "$0")/.."
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
    autoreconf -fi
fi
if [ ! -f Makefile ] || [ configure -nt config.status ] || [ $# -gt 0 ]; then
    ./configure "$@"
fi
make -j"$(nproc)"
