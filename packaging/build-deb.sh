#!/usr/bin/env bash
# Builds target/debian/clockbridge_*.deb: the release binary, the unit, the example config (a conffile,
# 0640), the man page and shell completions generated from the CLI. Needs `cargo deb` (cargo install
# cargo-deb). Prints the package's contents.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p clockbridge
out=target/packaging
mkdir -p "$out"
bin=target/release/clockbridge
"$bin" man > "$out/clockbridge.1"
"$bin" completions bash > "$out/clockbridge.bash"
"$bin" completions zsh > "$out/_clockbridge"
"$bin" completions fish > "$out/clockbridge.fish"
cargo deb --no-build --no-strip
deb=$(ls -t target/debian/clockbridge_*.deb | head -n 1)
echo "== dpkg-deb -c $deb"
dpkg-deb -c "$deb"
# the package must hold what an administrator needs
contents=$(dpkg-deb -c "$deb")
for want in ./usr/bin/clockbridge ./lib/systemd/system/clockbridge.service \
    ./etc/clockbridge/clockbridge.toml ./usr/share/man/man1/clockbridge.1.gz \
    ./usr/share/bash-completion/completions/clockbridge; do
    grep -q " $want\$" <<<"$contents" || { echo "missing from the package: $want" >&2; exit 1; }
done
grep -q "rw-r----- .* ./etc/clockbridge/clockbridge.toml" <<<"$contents" \
    || { echo "the example config must be 0640" >&2; exit 1; }
dpkg-deb -I "$deb" conffiles | grep -qx /etc/clockbridge/clockbridge.toml \
    || { echo "the config must be a conffile (kept on upgrade)" >&2; exit 1; }
echo "package OK: $deb"
