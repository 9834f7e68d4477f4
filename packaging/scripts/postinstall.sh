#!/bin/sh
# vipd postinstall (deb: "configure" [old-version]; rpm: 1 install, 2 upgrade).
set -e

# The unit runs vipd as this system user with CAP_NET_ADMIN and CAP_NET_RAW.
if ! getent passwd vipd >/dev/null; then
	if getent group vipd >/dev/null; then
		group="--gid vipd"
	else
		group="--user-group"
	fi
	# shellcheck disable=SC2086
	useradd --system $group --home-dir /var/lib/vipd --no-create-home \
		--shell /usr/sbin/nologin --comment "vipd floating IP manager" vipd
fi

# The peer channel's shared key (peer.key_file in the example config).
# Every node of a cluster needs the same one: this creates a key only where
# none exists; copy one node's to the others (docs/install.md).
if [ ! -e /etc/vipd/peer.key ]; then
	(umask 077 && head -c 32 /dev/urandom | base64 >/etc/vipd/peer.key)
	chown vipd:vipd /etc/vipd/peer.key
fi

# upgrade_running re-executes a running vipd that supports it (its binary,
# still readable through /proc although the package replaced the file,
# says so), and restarts an older one; a stopped vipd stays stopped.
upgrade_running() {
	pid=$(systemctl show --property MainPID --value vipd.service 2>/dev/null) || pid=0
	if [ -n "$pid" ] && [ "$pid" != 0 ] &&
		"/proc/$pid/exe" version --features 2>/dev/null | grep -q 'reexec-handoff-1'; then
		systemctl reload vipd.service || true
	else
		systemctl try-restart vipd.service || true
	fi
}

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# Not enabled or started on first install: /etc/vipd/vipd.yaml is an
	# example to edit first. On upgrade, a running vipd that can re-execute
	# in place does (`systemctl reload vipd`): no VIP moves. If it refuses
	# (the journal says why: a config it cannot carry over, a hook running
	# for 30 s, etcd unreachable), the old binary goes on until the next
	# reload or restart. A running vipd older than re-execution is
	# restarted (a graceful handover of the groups it holds).
	case "$1" in
	configure) [ -z "$2" ] || upgrade_running ;;
	2) upgrade_running ;;
	esac
fi
exit 0
