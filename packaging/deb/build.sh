#!/usr/bin/env bash
# Builds the Debian package of crier: the release binary as /usr/bin/crier, a default
# configuration at /etc/crier/crier.toml (a conffile, from crier.example.toml with the log
# under /var/lib/crier), a systemd unit, and maintainer scripts that create the `crier`
# system user. Prints the path of the .deb it wrote.
#
#   packaging/deb/build.sh              # cargo build --release, then package
#   packaging/deb/build.sh --no-build   # package the release binary already built
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

target="${CARGO_TARGET_DIR:-$root/target}"
if [ "${1:-}" != "--no-build" ]; then
  cargo build --release --locked -p crier >&2
fi
bin="$target/release/crier"
[ -x "$bin" ] || { echo "no release binary at $bin (build it, or drop --no-build)" >&2; exit 1; }

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
[ -n "$version" ] || { echo "cannot read the workspace version from Cargo.toml" >&2; exit 1; }
arch="$(dpkg --print-architecture)"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$bin" "$stage/usr/bin/crier"
install -d -m 0755 "$stage/etc/crier"
sed -e 's|^data_dir = "./crier-data" |data_dir = "/var/lib/crier"|' crier.example.toml \
  > "$stage/etc/crier/crier.toml"
grep -q '^data_dir = "/var/lib/crier"' "$stage/etc/crier/crier.toml" \
  || { echo "crier.example.toml has no data_dir line to point at /var/lib/crier" >&2; exit 1; }
chmod 0640 "$stage/etc/crier/crier.toml"
install -D -m 0644 "$here/crier.service" "$stage/usr/lib/systemd/system/crier.service"
install -D -m 0644 README.md "$stage/usr/share/doc/crier/README.md"
install -D -m 0644 crier.example.toml "$stage/usr/share/doc/crier/crier.example.toml"

install -d -m 0755 "$stage/DEBIAN"
for s in postinst prerm postrm; do
  install -m 0755 "$here/$s" "$stage/DEBIAN/$s"
done
echo "/etc/crier/crier.toml" > "$stage/DEBIAN/conffiles"
size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: crier
Version: $version
Architecture: $arch
Maintainer: crier maintainers <crier@localhost>
Installed-Size: $size
Depends: libc6, adduser
Section: net
Priority: optional
Description: real-time event broadcasting hub
 A durable, totally ordered event log with live delivery over Server-Sent
 Events, WebSocket and GraphQL, lossless resume, webhooks and replays.
 Runs as the crier system user from /etc/crier/crier.toml; the log lives
 under /var/lib/crier.
CONTROL

out="$target/debian"
mkdir -p "$out"
deb="$out/crier_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"
