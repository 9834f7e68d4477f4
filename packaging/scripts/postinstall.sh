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

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# Not enabled or started on first install: /etc/vipd/vipd.yaml is an
	# example to edit first. On upgrade, a running vipd re-executes the new
	# binary in place (`systemctl reload vipd`): no VIP moves. If the new
	# binary or the config is refused, the old vipd goes on and says why in
	# the journal; the reload's own failure is then reported here.
	case "$1" in
	configure) [ -z "$2" ] || systemctl try-reload-or-restart vipd.service || true ;;
	2) systemctl try-reload-or-restart vipd.service || true ;;
	esac
fi
exit 0
