package election

// State is a group's state on one node, as candidate records publish it,
// the logs and hooks name it, and vipd_group_state exports it. The names
// are keepalived's, so operators' dashboards and notify scripts carry over.
type State string

// Group states.
const (
	// StateInit: the group loop has not decided anything yet.
	StateInit State = "INIT"
	// StateBackup: a healthy candidate that does not hold the VIPs.
	StateBackup State = "BACKUP"
	// StateMaster: this node holds the group's VIPs.
	StateMaster State = "MASTER"
	// StateFault: a tracked check with weight 0 failed or the interface is
	// down; the node does not stand.
	StateFault State = "FAULT"
	// StateStop: the group loop has stopped (shutdown or removed by a
	// reload); its VIPs are off this node.
	StateStop State = "STOP"
)

// PublishedStates are the states a running group reports (a candidate
// record never says INIT or STOP), in a fixed order for metrics.
func PublishedStates() []State { return []State{StateMaster, StateBackup, StateFault} }

// String returns the state's name.
func (s State) String() string { return string(s) }
