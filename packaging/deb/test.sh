#!/usr/bin/env bash
# Tests the Debian package on this machine (needs root): builds the .deb, installs it with
# dpkg, checks what it put in place, runs the installed binary as the crier user (setpriv) with the
# installed configuration (the listen port moved to a free one through CRIER_LISTEN, so a
# hub already on 7400 is not disturbed), publishes, reads the event back, stops the hub,
# and purges the package. Where systemd runs it is not used: the hub is started directly.
#
#   packaging/deb/test.sh              # build the release binary, then test
#   packaging/deb/test.sh --no-build   # test with the release binary already built
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

[ "$(id -u)" = 0 ] || { echo "packaging/deb/test.sh needs root (dpkg -i)" >&2; exit 1; }
if dpkg-query -W -f='${Status}' crier 2>/dev/null | grep -q "install ok"; then
  echo "a crier package is already installed here; not touching it" >&2
  exit 1
fi

fail() { echo "FAIL: $*" >&2; exit 1; }
hub_pid=""
cleanup() {
  if [ -n "$hub_pid" ] && kill -0 "$hub_pid" 2>/dev/null; then kill "$hub_pid" || true; fi
  if dpkg-query -W -f='${Status}' crier 2>/dev/null | grep -q "install ok"; then
    dpkg --purge crier >/dev/null || true
  fi
}
trap cleanup EXIT

deb="$("$here/build.sh" "$@")"
echo "== built $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\):/  &/p'

echo "== dpkg -i"
dpkg -i "$deb"
[ -x /usr/bin/crier ] || fail "/usr/bin/crier is missing"
bytes="$(stat -c %s /usr/bin/crier)"
echo "   /usr/bin/crier: $((bytes / 1048576)) MiB"
[ "$bytes" -le $((60 * 1048576)) ] || fail "/usr/bin/crier is over 60 MiB"
[ -f /usr/lib/systemd/system/crier.service ] || fail "the systemd unit is missing"
getent passwd crier >/dev/null || fail "no crier system user"
[ "$(stat -c %U:%G /var/lib/crier)" = "crier:crier" ] || fail "/var/lib/crier is not crier's"
[ "$(stat -c %U:%G:%a /etc/crier/crier.toml)" = "root:crier:640" ] \
  || fail "/etc/crier/crier.toml is $(stat -c %U:%G:%a /etc/crier/crier.toml)"
grep -q '^data_dir = "/var/lib/crier"' /etc/crier/crier.toml || fail "data_dir is not /var/lib/crier"
dpkg-query -W -f='${Conffiles}' crier | grep -q /etc/crier/crier.toml \
  || fail "/etc/crier/crier.toml is not a conffile"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /usr/lib/systemd/system/crier.service \
    || fail "systemd-analyze rejects the unit"
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp)"
echo "== /usr/bin/crier serve --config /etc/crier/crier.toml as crier, on 127.0.0.1:$port"
(cd /var/lib/crier && exec setpriv --reuid=crier --regid=crier --init-groups env CRIER_LISTEN="127.0.0.1:$port" \
  /usr/bin/crier serve --config /etc/crier/crier.toml) >"$log" 2>&1 &
hub_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$hub_pid" 2>/dev/null || { cat "$log" >&2; fail "the installed hub exited"; }
  sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null || { cat "$log" >&2; fail "the installed hub is not ready"; }
[ "$(ps -o user= -p "$hub_pid" | tr -d " ")" = "crier" ] \
  || fail "the hub does not run as crier"

id="deb-test-$$-$RANDOM"
answer="$(curl -fsS -X POST "$base/v1/events" -H 'content-type: application/json' \
  -d "{\"id\":\"$id\",\"type\":\"package.installed\",\"data\":{\"from\":\"the .deb\"}}")"
echo "   published: $answer"
seq="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["events"][0]["seq"])' <<<"$answer")"
back="$(curl -fsS "$base/v1/events/$id")"
echo "   read back: $back"
python3 - "$seq" "$back" <<'PY' || fail "the event read back differs"
import json, sys
seq, ev = int(sys.argv[1]), json.loads(sys.argv[2])
assert ev["seq"] == seq and ev["type"] == "package.installed" and ev["data"] == {"from": "the .deb"}, ev
PY
[ -f /var/lib/crier/crier.db ] || fail "the log is not under /var/lib/crier"
[ "$(stat -c %U /var/lib/crier/crier.db)" = "crier" ] || fail "the log is not owned by crier"

echo "== stop (SIGTERM) and restart: the event is still there"
kill -TERM "$hub_pid"
wait "$hub_pid" || fail "the hub did not stop cleanly"
(cd /var/lib/crier && exec setpriv --reuid=crier --regid=crier --init-groups env CRIER_LISTEN="127.0.0.1:$port" \
  /usr/bin/crier serve --config /etc/crier/crier.toml) >>"$log" 2>&1 &
hub_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$hub_pid" 2>/dev/null || { cat "$log" >&2; fail "the restarted hub exited"; }
  sleep 0.1
done
curl -fsS "$base/v1/events/$id" | grep -q '"package.installed"' || fail "lost across a restart"
kill -TERM "$hub_pid"
wait "$hub_pid" || fail "the hub did not stop cleanly"
hub_pid=""

echo "== dpkg --purge"
dpkg --purge crier
[ ! -e /usr/bin/crier ] || fail "/usr/bin/crier is still there"
[ ! -e /etc/crier/crier.toml ] || fail "the conffile survived the purge"
[ ! -e /var/lib/crier ] || fail "/var/lib/crier survived the purge"
! getent passwd crier >/dev/null || fail "the crier user survived the purge"
rm -f "$log"
echo "PASS: the .deb installs, serves from its own config as crier, and purges cleanly"
