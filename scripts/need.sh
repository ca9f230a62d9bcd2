#!/bin/sh
# scripts/need.sh PACKAGE COMMAND [WHAT FOR]: the Makefile's system installs.
#
# COMMAND already on PATH (or, when it contains a '/', a file matching it as a glob, for programs
# Debian keeps off PATH such as /usr/lib/postgresql/*/bin/pg_ctl): nothing to do. Otherwise Debian's PACKAGE is installed with apt-get when
# this machine can (apt-get present and running as root, as in CI and the project's containers).
# When it cannot (no apt-get, or not root), or the install fails, one message says what to install
# and how, and the exit status is 1: a clear request instead of a failing command.
set -u

if [ $# -lt 2 ]; then
    echo "usage: scripts/need.sh PACKAGE COMMAND [WHAT FOR]" >&2
    exit 2
fi
package=$1
command=$2
purpose=${3:+ ($3)}

present() {
    case $command in
        */*) for match in $command; do [ -x "$match" ] && return 0; done; return 1 ;;
        *) command -v "$command" >/dev/null 2>&1 ;;
    esac
}

present && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$command is not installed$purpose and this machine has no apt-get:" \
        "install $package with your system's package manager, then run make again." >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "$command is not installed$purpose, and installing it takes root:" \
        "run 'sudo apt-get install $package', then run make again." >&2
    exit 1
fi
if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null \
    && present; then
    exit 0
fi
echo "apt-get could not install $package$purpose (its output is above):" \
    "install it by hand so that '$command' is there, then run make again." >&2
exit 1
