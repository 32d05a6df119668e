#!/bin/bash
# The Ansible part of `make test`, on one Vagrant guest that is up: the playbook of
# examples/ansible/ run against the two-host inventory (x86_64 and arm64), limited to
# the guest that is up (one guest at a time): the first run changes the host, the
# second changes nothing, the host's counts come back with real hits, and removal
# leaves no kpctl probe.
#
#   ansible-check.sh ARCH
set -euo pipefail
arch=$1
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(dirname "$here")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$here"
vagrant ssh-config "$arch" > "$work/ssh_config"
for host in x86_64 arm64; do
    echo "$host ansible_ssh_common_args='-F $work/ssh_config' ansible_python_interpreter=/usr/bin/python3"
done | sed '1i [kpctl]' > "$work/inventory.ini"
"$checkout/.venv/bin/pip" wheel -q --no-deps -w "$work/dist" "$checkout" >/dev/null
wheel=$(ls "$work"/dist/kpctl-*.whl)
export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=False
play() {
    "$checkout/.venv/bin/ansible-playbook" -i "$work/inventory.ini" --limit "$arch" \
        "$checkout/examples/ansible/probes.yml" -e "kpctl_wheel=$wheel kpctl_stats_dir=$work/stats" "$@" \
        > "$work/play.log" 2>&1 || { cat "$work/play.log"; echo "ansible: $arch: playbook failed" >&2; exit 1; }
    changed=$(sed -nE "s/^$arch +: .*changed=([0-9]+).*/\1/p" "$work/play.log")
}
expect() {  # what the last run changed: "some" or "none"
    local ok=false
    case $1 in
        some) [ "${changed:-0}" -gt 0 ] && ok=true ;;
        none) [ "${changed:-1}" -eq 0 ] && ok=true ;;
    esac
    $ok && return
    cat "$work/play.log"; echo "ansible: $arch: $2 changed ${changed:-?} things" >&2; exit 1
}
play; expect some "the first run"
play; expect none "the second run"
python3 - "$work/stats/$arch.json" <<'PY'
import json, sys
hits = {row["name"]: row["hits"] for row in json.load(open(sys.argv[1]))}
assert set(hits) >= {"opens", "big_reads"} and hits["opens"] > 0, hits
PY
play -e kpctl_state=absent; expect some "removal"
left=$(vagrant ssh "$arch" -c 'sudo kpctl list --json' 2>/dev/null)
[ "$(echo "$left" | tr -d '[:space:]')" = "[]" ] || { echo "ansible: $arch: removal left $left" >&2; exit 1; }
echo "ansible: $arch: applied (changed), re-applied (no change), counts collected, removed"
