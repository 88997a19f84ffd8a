#!/bin/bash
# conformance.sh SUITE [TEST...]: run Sheepdog 1.0's functional suite
# (SUITE is a checkout's tests/functional: its check runner, common.rc, the
# numbered tests and their .out files) against our sheep, with our collie
# as dog, and print PASS/FAIL/TIMEOUT/SKIP per test and a count.
#
# The shim translates only paths: the suite is copied into a tree shaped
# like Sheepdog's source, where ../../sheep/sheep, ../../dog/dog and
# ../../sheepfs/sheepfs (common.config's defaults) are our sheep, collie and
# sheepfs, and a dog on PATH is collie (test 073 asks for one; our sheepfs
# runs collie from PATH, Sheepdog's runs dog). Everything
# else is the suite as it is.
#
# Isolation: the suite kills sheeps with pkill, uses ports 7000-7009 (plus
# our 17000-17009 and 27000-27009), and removes /tmp/*.out, so it runs in
# private PID, network and mount namespaces, with a private directory
# mounted on /tmp (kept afterwards for the logs). Loop devices are not
# namespaced: a losetup on PATH lets the suite's cleanup detach only loop
# devices backed by files under its own work dir. The suite's WD is
# /tmp/wd/sheepdog, on a loop-mounted ext4 image of its own (see below).
#
# Environment: CONF_TIMEOUT (seconds per test, default 300; the suite's tests
# take 20-130 s each on a loaded 2-core machine). CONF_BIN=DIR runs the
# suite against another implementation instead of ours: DIR holds its
# sheep, dog and (optionally; without it the sheepfs tests fail) sheepfs,
# e.g. the original Sheepdog built by the user (tests/conformance/original.tsv
# says how the original fares on the development machine).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
skips=$here/tests/conformance/skip.tsv
diffs=$here/tests/conformance/differences.tsv

if [ -z "${SDCONF_PRIV:-}" ]; then
	if [ $# -lt 1 ] || [ ! -f "$1/check" ] || [ ! -f "$1/common.rc" ]; then
		echo "usage: $0 SUITE [TEST...]  (SUITE: sheepdog/sheepdog's tests/functional at 3ebe5ea7)" >&2
		exit 2
	fi
	if [ "$(id -u)" != 0 ]; then
		echo "conformance: the suite needs root (namespaces, loop devices, mount)" >&2
		exit 2
	fi
	for t in unshare ip iptables mount netstat perl bc openssl pgrep mkfs.ext4; do
		command -v $t >/dev/null || { echo "conformance: $t not found" >&2; exit 2; }
	done
	# Ours: sheep, collie as dog, sheepfs; CONF_BIN's: sheep, dog, sheepfs if any.
	bin=$here/bin dog=collie need="sheep collie sheepfs"
	[ -n "${CONF_BIN:-}" ] && bin=$(readlink -f "$CONF_BIN") dog=dog need="sheep dog"
	for b in $need; do
		[ -x "$bin/$b" ] || { echo "conformance: $bin/$b missing${CONF_BIN:- (make build)}" >&2; exit 2; }
	done
	suite=$(readlink -f "$1"); shift
	priv=$(mktemp -d /tmp/sdconf.XXXXXX)
	mkdir -p "$priv/src/tests" "$priv/src/sheep" "$priv/src/dog" "$priv/src/sheepfs" "$priv/path"
	cp -a "$suite" "$priv/src/tests/functional"
	# Copies, so that a rebuild during the run changes nothing.
	cp "$bin/sheep" "$priv/src/sheep/sheep"
	cp "$bin/$dog" "$priv/src/dog/dog"
	[ ! -x "$bin/sheepfs" ] || cp "$bin/sheepfs" "$priv/src/sheepfs/sheepfs"
	ln -s ../src/dog/dog "$priv/path/dog"
	ln -s ../src/dog/dog "$priv/path/collie" # what our sheepfs runs
	cat >"$priv/path/losetup" <<'EOF'
#!/bin/bash
# The suite's cleanup runs "losetup -d" on every /dev/loop*; detach only
# those backed by a file under the suite's work dir.
if [ "$1" = -d ] && [ $# = 2 ]; then
	f=$(/usr/sbin/losetup -n -O BACK-FILE "$2" 2>/dev/null)
	case "$f" in "${WD:-/tmp/sheepdog}"/*) ;; *) exit 0 ;; esac
fi
exec /usr/sbin/losetup "$@"
EOF
	chmod +x "$priv/path/losetup"
	# The suite's stores live on a filesystem of their own, so that the
	# space a sheep measures at its first start (automatic vnodes weigh
	# it) moves only with the suite's own writes, as on Sheepdog's test
	# machines, not with whatever else writes to the host's /tmp.
	# The suite's _random is "openssl enc -rc4": OpenSSL 3 has RC4 only
	# in its legacy provider, off by default; without it _random gives
	# 16 bytes and the tests that checksum its data (079) compare those
	# with what they read back. Used only where RC4 is off (below).
	cat >"$priv/openssl.cnf" <<'EOF'
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
legacy = legacy_sect
[default_sect]
activate = 1
[legacy_sect]
activate = 1
EOF
	# The suite's expected figures of node info (113) were made with
	# e2fsprogs before 1.46.4, whose mke2fs.conf gave the "small" and
	# "floppy" filesystems (under 512 MiB, the suite's _make_device
	# images) 128-byte inodes; 1.46.4 and later make 256-byte ones, which
	# take 6 MiB more of a 200 MiB image. The suite's mkfs reads this copy
	# of the host's mke2fs.conf with the old inode size put back; nothing
	# else in it changes.
	sed -e '/^[[:space:]]*\(small\|floppy\) = {/a\		inode_size = 128' \
		"${MKE2FS_CONFIG:-/etc/mke2fs.conf}" >"$priv/mke2fs.conf" || exit 1
	truncate -s 40G "$priv/wd.img" && mkfs.ext4 -q -F -O ^has_journal "$priv/wd.img" || exit 1
	echo "conformance: work dir $priv (mounted on /tmp inside the run)${CONF_BIN:+, binaries of $bin}"
	SDCONF_PRIV=$priv exec unshare --kill-child --pid --fork --mount-proc --net --mount --propagation private "$0" "$@"
fi

# Inside the namespaces (pid 1).
priv=$SDCONF_PRIV
mount --bind "$priv" /tmp || exit 1
ip link set lo up || exit 1
mkdir -p /tmp/wd && mount -o loop,user_xattr /tmp/wd.img /tmp/wd || exit 1
export WD=/tmp/wd/sheepdog
export MKE2FS_CONFIG=/tmp/mke2fs.conf
openssl enc -rc4 -pass pass:x </dev/null >/dev/null 2>&1 || export OPENSSL_CONF=/tmp/openssl.cnf
cd /tmp/src/tests/functional || exit 1
export PATH=/tmp/path:$PATH
mkdir -p /tmp/results

declare -A skip diff
while IFS=$'\t' read -r t why; do
	[[ $t =~ ^[0-9]+$ ]] && skip[$t]=$why
done <"$skips"
# differences.tsv says why ours differs: no reason for another's binaries.
if [ -f "$diffs" ] && [ -z "${CONF_BIN:-}" ]; then
	while IFS=$'\t' read -r t why; do
		[[ $t =~ ^[0-9]+$ ]] && diff[$t]=$why
	done <"$diffs"
fi

if [ $# -gt 0 ]; then
	list="$*"
else
	list=$(sed -n -e '/^[0-9][0-9][0-9]*/s/[ 	].*//p' group | sort)
fi

pass=0 fail=0 ntimeout=0 nskip=0 failed="" timedout=""
start=$(date +%s)
for t in $list; do
	if [ -n "${skip[$t]:-}" ]; then
		printf '%s SKIP  %s\n' "$t" "${skip[$t]}"
		nskip=$((nskip + 1))
		continue
	fi
	# check ignores a test its group file does not list ("unknown test,
	# ignored") and exits 0: that is no pass.
	if ! grep -q "^$t[[:space:]]" group; then
		printf '%s SKIP  not in the suite'"'"'s group file: check does not run it\n' "$t"
		nskip=$((nskip + 1))
		continue
	fi
	t0=$(date +%s)
	timeout -k 10 "${CONF_TIMEOUT:-300}" ./check "$t" >/tmp/results/$t.log 2>&1
	rc=$?
	secs=$(($(date +%s) - t0))
	# A test that timed out leaves its sheeps behind; the next test's
	# _cleanup kills them (pkill on this namespace only).
	if grep -q '\[not run\]' /tmp/results/$t.log; then
		printf '%s SKIP  %s (not run: %s)\n' "$t" "${secs}s" "$(cat $t.notrun 2>/dev/null)"
		nskip=$((nskip + 1))
	elif [ $rc = 0 ]; then
		printf '%s PASS  %s\n' "$t" "${secs}s"
		pass=$((pass + 1))
	elif [ $rc = 124 ] || [ $rc = 137 ]; then
		# timeout(1): 124 after TERM, 137 when -k had to KILL.
		why=""
		[ -n "${diff[$t]:-}" ] && why=" differs on purpose: ${diff[$t]}"
		printf '%s TIMEOUT  %s (limit %ss)%s\n' "$t" "${secs}s" "${CONF_TIMEOUT:-300}" "$why"
		ntimeout=$((ntimeout + 1))
		timedout="$timedout $t"
	else
		why=""
		[ -n "${diff[$t]:-}" ] && why=" differs on purpose: ${diff[$t]}"
		printf '%s FAIL  %s%s\n' "$t" "${secs}s" "$why"
		fail=$((fail + 1))
		failed="$failed $t"
	fi
	for f in $t.out.bad $t.full; do
		[ -f $f ] && cp $f /tmp/results/
	done
done
# Leave no sheep running: pid 1's exit ends every process of the namespace.
pkill -f '../../sheep/sheep ' 2>/dev/null
echo "conformance: $pass passed, $fail failed, $ntimeout timed out, $nskip skipped of $(echo $list | wc -w) tests in $(($(date +%s) - start))s"
[ -n "$failed" ] && echo "conformance: failed:$failed (logs, .out.bad, .full: $priv/results)"
[ -n "$timedout" ] && echo "conformance: timed out:$timedout (logs: $priv/results)"
[ $fail = 0 ] && [ $ntimeout = 0 ]
