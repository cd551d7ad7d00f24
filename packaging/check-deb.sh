#!/usr/bin/env bash
# Checks the newest target/debian/clockbridge_*.deb (made by packaging/build-deb.sh) as installed:
# the binary has no test doubles (no `standin`, `zk-sim`, `adms-sim`, `hik-sim` or `demo` command, hidden or not: they live
# in the testkit crate, see testkit/), neither do its --help, man page and completions, and the
# stripped binary is no larger than the budget in packaging/binary-size-budget. Needs dpkg-deb and
# strip (binutils).
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls -t target/debian/clockbridge_*.deb | head -n 1)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
bin="$root/usr/bin/clockbridge"
[ -x "$bin" ] || { echo "$deb: no executable usr/bin/clockbridge" >&2; exit 1; }
fail=0

# the test doubles are not commands: clap refuses them as unknown subcommands (exit 2). With --help a
# binary that still had one would only print its help (exit 0), never start a server or the demo.
for cmd in standin zk-sim adms-sim hik-sim demo; do
    set +e
    out=$(timeout 10 "$bin" "$cmd" --help 2>&1)
    code=$?
    set -e
    if [ "$code" -ne 2 ] || ! grep -q "unrecognized subcommand '$cmd'" <<<"$out"; then
        printf '%s\n' "$out" >&2
        echo "$deb: \`clockbridge $cmd --help\` exits $code instead of refusing an unknown subcommand (2)" >&2
        fail=1
    fi
done

# nor are they listed anywhere the package shows commands
help=$("$bin" --help)
man=$(zcat "$root/usr/share/man/man1/clockbridge.1.gz")
bash_completion=$(cat "$root/usr/share/bash-completion/completions/clockbridge")
for what in help man bash_completion; do
    for cmd in standin zk-sim adms-sim hik-sim zk_sim demo; do
        if grep -qw -- "$cmd" <<<"${!what}"; then
            grep -nw -- "$cmd" <<<"${!what}" >&2
            echo "$deb: the $what names \`$cmd\`" >&2
            fail=1
        fi
    done
done

# the binary did not grow: strip a copy (the release profile strips already; this keeps the
# measure the same if that changes) and compare with the budget
budget_file=packaging/binary-size-budget
budget=$(grep -v '^#' "$budget_file" | tr -d '[:space:]')
case "$budget" in
'' | *[!0-9]*) echo "$budget_file: no size in bytes found" >&2; exit 1 ;;
esac
strip --strip-all -o "$root/clockbridge.stripped" "$bin"
size=$(stat -c %s "$root/clockbridge.stripped")
echo "installed binary: $(stat -c %s "$bin") bytes, stripped: $size bytes, budget: $budget bytes"
if [ "$size" -gt "$budget" ]; then
    echo "$deb: the stripped binary is $size bytes, over the budget of $budget bytes ($budget_file):" \
        "find what grew it (cargo bloat, cargo tree), or raise the budget in the same commit with the reason" >&2
    fail=1
fi
[ "$fail" -eq 0 ] || exit 1
echo "package binary OK: no test commands, $size <= $budget bytes"
