#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (Debian's package) are installed.
source "$(dirname "$0")/lib.sh"
locked bootstrap-postgres "$0" "$@"
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  say "postgresql: $(ls -d /usr/lib/postgresql/*/bin | tail -1) (installed)"
  exit 0
fi
need apt-get "PostgreSQL is not installed and apt-get is not available: install PostgreSQL >= 15 server binaries or set DATABASE_URL_PG to an existing server."
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
say "postgresql: installing Debian's postgresql package"
$SUDO apt-get update -qq || die "apt-get update failed: is the Debian mirror reachable?"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null || die "apt-get install postgresql failed"
# The package starts a cluster on 5432; we run our own on a non-default port.
$SUDO service postgresql stop >/dev/null 2>&1 || true
say "postgresql: installed"
