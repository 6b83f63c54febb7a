#!/bin/sh
# Regenerates the golden fixtures (tests/golden/) from the Python reference
# implementation. Needs Debian's python3 with python3-torch and python3-numpy.
# Run from anywhere; writes into the source tree. Then run `make check` in a build
# directory (tests/check_golden) to compare the C engine with them.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
/usr/bin/python3 tools/reference/selftest.py
exec /usr/bin/python3 tools/reference/make_golden.py "$@"
