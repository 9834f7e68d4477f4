#!/bin/sh
# vipd preremove (deb: "remove" | "upgrade" | ...; rpm: 0 erase, 1 upgrade).
set -e
case "$1" in
remove | deconfigure | 0)
	# Stopping runs ExecStopPost (vipd cleanup): the VIPs are released and
	# the peers take over at once.
	if [ -d /run/systemd/system ]; then
		systemctl stop vipd.service >/dev/null 2>&1 || true
	fi
	systemctl disable vipd.service >/dev/null 2>&1 || true
	;;
esac
exit 0
