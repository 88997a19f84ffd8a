#!/usr/bin/env bash
# Checks that the tools the end-to-end tests drive are installed. As root
# with apt-get it installs what is missing (as .ci/run does); otherwise it
# stops at once with one message naming the packages and the command.
# SHEEPDOG_NO_INSTALL=1 only checks.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

# tool -> Debian package
declare -A pkg=(
	[qemu-img]=qemu-utils [qemu-io]=qemu-utils
	[nbdinfo]=libnbd-bin [nbdcopy]=libnbd-bin
	[nbdkit]=nbdkit [fio]=fio [fusermount3]=fuse3
	[setpriv]=util-linux [unshare]=util-linux [systemd-analyze]=systemd [mkfs.ext4]=e2fsprogs [ip]=iproute2
)

missing() {
	local want=()
	for t in "${!pkg[@]}"; do
		command -v "$t" >/dev/null 2>&1 || want+=("${pkg[$t]}")
	done
	[ ${#want[@]} -eq 0 ] || printf '%s\n' "${want[@]}" | sort -u | tr '\n' ' '
}

need=$(missing)
[ -z "$need" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ "${SHEEPDOG_NO_INSTALL:-}" != 1 ]; then
	echo "prereqs: installing $need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need
	need=$(missing)
	[ -z "$need" ] && exit 0
fi

echo "make test needs these packages, which are missing: $need" >&2
echo "install them with: sudo apt-get install -y $need" >&2
exit 1
