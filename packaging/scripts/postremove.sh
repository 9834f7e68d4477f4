#!/bin/sh
# vipd postremove (deb: "remove" | "purge" | ...; rpm: 0 erase, 1 upgrade).
# The vipd user is kept, as Debian policy asks for system users: files it
# may own elsewhere must not end up owned by a recycled uid.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
	rm -rf /var/lib/vipd
	rm -f /etc/vipd/peer.key
fi
exit 0
