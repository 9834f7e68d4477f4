package keepalived

import "strings"

// What keepalived does with the directives the converter does not turn
// into vipd settings, and why that is fine or what is lost. The sets of
// known keywords are keepalived's own (install_keyword in its parsers), so
// a keyword keepalived does not know is reported as ignored by keepalived
// too, not as something vipd lacks.

const (
	vrrpOnly = "VRRP's own machinery: vipd sends no VRRP, etcd elects the holder"
	noEmail  = "vipd sends no email: use a notify hook or the Prometheus alerts (deploy/prometheus)"
	noFW     = "vipd installs no firewall rules: the VIPs accept all traffic"
	process  = "a setting of the keepalived process; not applicable to vipd"
)

// globalKnown are keepalived's global_defs keywords (core/global_parser.c).
var globalKnown = setOf(`linkbeat_use_polling net_namespace net_namespace_ipvs namespace_with_ipsets use_pid_dir
instance child_wait_time process_names process_name vrrp_process_name checker_process_name lvs_process_name
bfd_process_name use_symlink_paths set_supplementary_groups router_id notification_email_from smtp_server
smtp_helo_name smtp_connect_timeout notification_email smtp_alert startup_script startup_script_timeout
shutdown_script shutdown_script_timeout max_auto_priority min_auto_priority_delay smtp_alert_vrrp
smtp_alert_checker checker_log_all_failures dynamic_interfaces no_email_faults default_interface
disable_local_igmp v3_checksum_as_v2 lvs_timeouts lvs_flush lvs_flush_on_stop lvs_flush_onstop
lvs_sync_daemon vrrp_mcast_group4 vrrp_mcast_group6 vrrp_garp_master_delay vrrp_garp_master_repeat
vrrp_garp_master_refresh vrrp_garp_master_refresh_repeat vrrp_garp_lower_prio_delay
vrrp_garp_lower_prio_repeat vrrp_down_timer_adverts vrrp_garp_interval vrrp_gna_interval vrrp_min_garp
vrrp_garp_extra_if vrrp_vmac_garp_intvl vrrp_lower_prio_no_advert vrrp_higher_prio_send_advert
vrrp_version vrrp_iptables vrrp_ipsets nftables nftables_priority nftables_ifindex vrrp_check_unicast_src
vrrp_skip_check_adv_addr vrrp_strict vrrp_priority vrrp_no_swap vrrp_rt_priority vrrp_cpu_affinity
vrrp_rlimit_rttime vrrp_rlimit_rtime nftables_ipvs nftables_ipvs_priority nftables_ipvs_start_fwmark
nftables_counters notify_fifo notify_fifo_script vrrp_notify_fifo vrrp_notify_fifo_script
vrrp_notify_priority_changes fifo_write_vrrp_states_on_reload lvs_notify_fifo lvs_notify_fifo_script
checker_priority checker_no_swap checker_rt_priority checker_cpu_affinity checker_rlimit_rttime
checker_rlimit_rtime bfd_priority bfd_no_swap bfd_rt_priority bfd_cpu_affinity bfd_rlimit_rttime
bfd_rlimit_rtime snmp_socket enable_traps enable_snmp_vrrp enable_snmp_keepalived enable_snmp_rfc
enable_snmp_rfcv2 enable_snmp_rfcv3 enable_snmp_checker snmp_vs_stats_update_interval
snmp_rs_stats_update_interval enable_dbus dbus_service_name dbus_no_interface_name script_user
enable_script_security vrrp_netlink_cmd_rcv_bufs vrrp_netlink_cmd_rcv_bufs_force
vrrp_netlink_monitor_rcv_bufs vrrp_netlink_monitor_rcv_bufs_force process_monitor_rcv_bufs
process_monitor_rcv_bufs_force lvs_netlink_cmd_rcv_bufs lvs_netlink_cmd_rcv_bufs_force
lvs_netlink_monitor_rcv_bufs lvs_netlink_monitor_rcv_bufs_force rs_init_notifies no_checker_emails
vrrp_rx_bufs_policy vrrp_rx_bufs_multiplier vrrp_startup_delay vrrp_delay_after_boot log_unknown_vrids
vrrp_owner_ignore_adverts vmac_prefix vmac_addr_prefix umask random_seed reload_check_config
reload_time_file reload_repeat reload_file include_check config_save_dir tmp_config_directory
data_use_instance json_version iproute_usr_dir iproute_etc_dir state_dump_file stats_dump_file
json_dump_file lvs_id`)

// instanceKnown are keepalived's vrrp_instance keywords (vrrp/vrrp_parser.c).
var instanceKnown = setOf(`use_vmac use_vmac_addr vmac_xmit_base use_ipvlan unicast_peer unicast_fault_no_peer
check_unicast_src old_unicast_checksum native_ipv6 state interface vrf dont_track_primary track_interface
track_script track_file track_process track_bfd mcast_src_ip unicast_src_ip mcast_dst_ip track_src_ip
virtual_router_id unicast_ttl version priority advert_int virtual_ipaddress virtual_ipaddress_excluded
no_virtual_ipaddress promote_secondaries linkbeat_use_polling v3_checksum_as_v2 virtual_routes
virtual_rules accept no_accept skip_check_adv_addr strict_mode preempt nopreempt preempt_delay debug
notify_backup notify_master notify_fault notify_stop notify_deleted notify notify_master_rx_lower_pri
smtp_alert notify_priority_changes lvs_sync_daemon_interface garp_master_delay garp_master_refresh
garp_master_repeat garp_master_refresh_repeat garp_lower_prio_delay garp_lower_prio_repeat
down_timer_adverts timer_expired_backup thread_timer_expired garp_extra_if vmac_garp_intvl
lower_prio_no_advert higher_prio_send_advert owner_ignore_adverts kernel_rx_buf_size authentication
auth_hmac`)

func setOf(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

// instanceReason says what becomes of a vrrp_instance directive the
// converter does not carry itself.
func instanceReason(name string) (Kind, string) {
	switch name {
	case "virtual_router_id":
		return Ignored, vrrpOnly + "; groups are named, not numbered: the group name is the key in etcd"
	case "advert_int":
		return Ignored, vrrpOnly + "; failover speed comes from the check intervals and etcd.lease_ttl"
	case "authentication", "auth_hmac":
		return Ignored, vrrpOnly + "; secure etcd instead (etcd.tls, etcd.username/password_file)"
	case "unicast_peer", "unicast_src_ip", "unicast_ttl", "mcast_src_ip", "mcast_dst_ip", "unicast_fault_no_peer",
		"check_unicast_src", "old_unicast_checksum", "track_src_ip":
		return Ignored, vrrpOnly + "; nodes talk only to etcd, so there is no peer list"
	case "version", "native_ipv6", "skip_check_adv_addr", "garp_lower_prio_delay", "garp_lower_prio_repeat",
		"lower_prio_no_advert", "higher_prio_send_advert", "kernel_rx_buf_size", "down_timer_adverts",
		"timer_expired_backup", "thread_timer_expired", "owner_ignore_adverts", "v3_checksum_as_v2", "linkbeat_use_polling":
		return Ignored, vrrpOnly
	case "use_vmac", "use_vmac_addr", "vmac_xmit_base", "use_ipvlan", "garp_extra_if", "vmac_garp_intvl":
		return Ignored, "a virtual MAC for VRRP; vipd binds the VIP on the interface itself and announces its own MAC with GARP/NA"
	case "vrf":
		return Ignored, "the VRF of VRRP's socket; vipd sends no VRRP (the addresses go on the interface, in whatever VRF it is in)"
	case "debug":
		return Ignored, process
	case "accept":
		return Ignored, "vipd's VIPs always accept traffic, as with accept"
	case "no_accept":
		return Dropped, noFW + " (keepalived's no_accept drops traffic to them)"
	case "strict_mode":
		return Dropped, "keepalived's strict mode makes the VIPs drop traffic (no_accept, enforced with firewall rules); " + noFW
	case "dont_track_primary":
		return Dropped, "vipd always puts a group in FAULT while its interface is down (it cannot hold an address on a down link); keepalived with dont_track_primary ignores that link's state"
	case "track_bfd":
		return Dropped, "vipd has no BFD: track an exec check that tests the path instead"
	case "notify_deleted":
		return Dropped, "vipd runs the stop hook for a group a reload removes; keepalived sends FAULT (or DELETED, with notify_deleted)"
	case "notify_master_rx_lower_pri":
		return Ignored, "runs when a master hears a lower-priority master (two masters after a partition): with etcd there is never a second holder"
	case "notify_priority_changes":
		return Ignored, "affects only keepalived's notify FIFO (reported with the FIFO)"
	case "virtual_routes", "virtual_rules":
		return Dropped, "vipd binds addresses only: add the routes or rules from the notify.master and notify.backup hooks (or the OS network configuration)"
	case "lvs_sync_daemon_interface":
		return Dropped, "the LVS connection-sync daemon is out of vipd's scope (keep keepalived --check or ipvsadm for LVS)"
	case "promote_secondaries":
		return Dropped, "vipd does not set promote_secondaries on the interface: set net.ipv4.conf.IF.promote_secondaries=1 with sysctl"
	}
	return Ignored, "not a vrrp_instance keyword keepalived knows; keepalived ignores it too"
}

// topReason says what becomes of a top-level directive the converter does
// not carry itself.
func topReason(name string) (Kind, string) {
	switch name {
	case "include":
		return Refused, "not followed, so what it holds is not converted: concatenate the files (keepalived reads them in place of this line) and convert the result"
	case "virtual_server", "virtual_server_group":
		return Dropped, "LVS/IPVS load balancing is out of vipd's scope: run keepalived's checker alone (keepalived --check) or ipvsadm for it"
	case "static_ipaddress", "static_routes", "static_rules", "track_group":
		return Dropped, "keepalived sets these at start whatever the VRRP state: put them in the OS network configuration"
	case "garp_group":
		return Dropped, "vipd does not space the frames of an announcement round"
	case "linkbeat_interfaces":
		return Ignored, "polls link state with MII; vipd watches link state with netlink"
	case "interface_up_down_delays":
		return Dropped, "vipd reacts to a link change at once; it has no delay to debounce it"
	case "bfd_instance":
		return Dropped, "vipd has no BFD: track an exec check that tests the path instead"
	case "net_namespace", "net_namespace_ipvs", "namespace_with_ipsets":
		return Dropped, "vipd binds addresses in the network namespace it runs in: run it there (ip netns exec NAME vipd run ...)"
	case "instance", "use_pid_dir", "child_wait_time", "linkbeat_use_polling":
		return Ignored, process
	}
	return Ignored, "not a top-level keyword keepalived knows; keepalived ignores it too"
}

// globalReason says what becomes of a global_defs directive the converter
// does not carry itself. email says whether keepalived sends VRRP email.
func globalReason(name string, email bool) (Kind, string) {
	switch {
	case name == "router_id":
		return Ignored, "keepalived uses it only in email and SNMP; vipd names the node with node: (--node)"
	case strings.HasPrefix(name, "notification_email") || strings.HasPrefix(name, "smtp_") ||
		name == "no_email_faults" || name == "no_checker_emails" || name == "lvs_id":
		if email {
			return Dropped, noEmail
		}
		return Ignored, "unused: no smtp_alert is set, so keepalived sends no VRRP email either"
	case name == "enable_script_security":
		return Dropped, "keepalived refuses scripts a non-root user could change; vipd does not check script permissions (checks run as their user:, hooks as vipd's user)"
	case name == "vrrp_strict":
		return Dropped, "keepalived's strict mode makes the VIPs drop traffic (no_accept, enforced with firewall rules); " + noFW
	case name == "vrrp_iptables" || name == "vrrp_ipsets" || strings.HasPrefix(name, "nftables"):
		return Ignored, "firewall chain for no_accept mode; " + noFW + " (a loss only with strict mode or no_accept, reported there)"
	case name == "vrrp_notify_fifo" || name == "notify_fifo":
		return Dropped, "a FIFO keepalived writes a line to on every transition (INSTANCE NAME STATE PRIORITY) for a reader process; vipd has no FIFO: use notify.any, which gets the same four fields as arguments, or the vipd_group_state metric"
	case name == "vrrp_notify_fifo_script" || name == "notify_fifo_script":
		return Dropped, "the reader keepalived starts for its notify FIFO; vipd has no FIFO: run the logic from notify.any (INSTANCE NAME STATE PRIORITY as arguments)"
	case name == "vrrp_notify_priority_changes" || name == "fifo_write_vrrp_states_on_reload":
		return Ignored, "affects only keepalived's notify FIFO (reported with the FIFO)"
	case name == "lvs_notify_fifo" || name == "lvs_notify_fifo_script" || strings.HasPrefix(name, "lvs_"):
		return Ignored, "LVS (keepalived's checker) setting; out of vipd's scope"
	case name == "startup_script" || name == "shutdown_script":
		return Dropped, "vipd runs no script when the daemon starts or stops (each group's notify.stop runs when it stops)"
	case name == "startup_script_timeout" || name == "shutdown_script_timeout":
		return Ignored, "belongs to startup_script/shutdown_script (reported there)"
	case name == "vrrp_startup_delay" || name == "vrrp_delay_after_boot":
		return Dropped, "vipd stands for election as soon as it starts; it has no startup delay"
	case strings.HasPrefix(name, "snmp") || strings.HasPrefix(name, "enable_snmp") || name == "enable_traps":
		return Dropped, "vipd has no SNMP: use its Prometheus metrics"
	case strings.HasPrefix(name, "enable_dbus") || strings.HasPrefix(name, "dbus_"):
		return Dropped, "vipd has no DBus interface: use its Prometheus metrics and vipctl"
	case name == "vrrp_garp_interval" || name == "vrrp_gna_interval":
		return Dropped, "vipd does not space the frames of an announcement round"
	case name == "vrrp_mcast_group4" || name == "vrrp_mcast_group6" || name == "vrrp_version" ||
		name == "vrrp_check_unicast_src" || name == "vrrp_skip_check_adv_addr" || name == "vrrp_down_timer_adverts" ||
		name == "vrrp_garp_lower_prio_delay" || name == "vrrp_garp_lower_prio_repeat" || name == "vrrp_lower_prio_no_advert" ||
		name == "vrrp_higher_prio_send_advert" || name == "vrrp_owner_ignore_adverts" || name == "log_unknown_vrids" ||
		name == "v3_checksum_as_v2" || name == "vrrp_rx_bufs_policy" || name == "vrrp_rx_bufs_multiplier":
		return Ignored, vrrpOnly
	case name == "vmac_prefix" || name == "vmac_addr_prefix" || name == "vrrp_garp_extra_if" || name == "vrrp_vmac_garp_intvl":
		return Ignored, "virtual MAC setting; vipd announces the node's own MAC"
	case name == "default_interface":
		return Ignored, "used only by instances without an interface, which the importer reports"
	case name == "net_namespace" || name == "net_namespace_ipvs" || name == "namespace_with_ipsets":
		return Dropped, "vipd binds addresses in the network namespace it runs in: run it there (ip netns exec NAME vipd run ...)"
	case globalKnown[name]:
		return Ignored, process
	}
	return Ignored, "not a global_defs keyword keepalived knows; keepalived ignores it too"
}
