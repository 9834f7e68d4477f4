package ec2fake

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Instance is one EC2 instance with its primary network interface.
type Instance struct {
	ID, MAC, ENI, PrimaryIP string
}

// Call is one API call the server answered (mutating or not).
type Call struct {
	At     time.Time
	Action string
	// ENI is the interface the call names (the target of a move).
	ENI    string
	Result string // "ok" or the error code
}

// Server is the fake EC2: its state, faults, and the calls it served.
type Server struct {
	Region string

	mu        sync.Mutex
	instances []Instance
	enis      map[string][]string // interface -> private IPs, primary first
	eips      map[string]*eip
	routes    map[string]map[string]string // route table -> destination -> interface
	throttle  int
	denied    map[string]bool
	calls     []Call
	seq       int
}

type eip struct {
	publicIP, eni, privateIP, assoc string
}

// New returns a server in region with the given instances, Elastic IPs
// (allocation ID -> public IP) and route tables.
func New(region string, instances []Instance, eips map[string]string, routeTables []string) *Server {
	s := &Server{Region: region, instances: instances, enis: map[string][]string{}, eips: map[string]*eip{},
		routes: map[string]map[string]string{}, denied: map[string]bool{}}
	for _, in := range instances {
		s.enis[in.ENI] = []string{in.PrimaryIP}
	}
	for id, ip := range eips {
		s.eips[id] = &eip{publicIP: ip}
	}
	for _, r := range routeTables {
		s.routes[r] = map[string]string{}
	}
	return s
}

// Throttle makes the next n API calls fail with RequestLimitExceeded.
func (s *Server) Throttle(n int) { s.mu.Lock(); s.throttle = n; s.mu.Unlock() }

// Deny makes action fail with UnauthorizedOperation (deny false: allow).
func (s *Server) Deny(action string, deny bool) { s.mu.Lock(); s.denied[action] = deny; s.mu.Unlock() }

// Calls returns the calls served so far.
func (s *Server) Calls() []Call { s.mu.Lock(); defer s.mu.Unlock(); return slices.Clone(s.calls) }

// OwnerOf returns the interface that has private IP ip ("" if none).
func (s *Server) OwnerOf(ip string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ownerLocked(ip)
}

func (s *Server) ownerLocked(ip string) string {
	for eni, ips := range s.enis {
		if slices.Contains(ips, ip) {
			return eni
		}
	}
	return ""
}

// EIPOwner returns the interface an Elastic IP is associated with.
func (s *Server) EIPOwner(alloc string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.eips[alloc]; e != nil {
		return e.eni
	}
	return ""
}

// RouteTarget returns the interface a route points at ("" if none).
func (s *Server) RouteTarget(rtb, dst string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.routes[rtb][dst]
}

// AssignByHand moves ip to eni, as an operator in the console would.
func (s *Server) AssignByHand(eni, ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.moveIPLocked(eni, ip)
}

func (s *Server) moveIPLocked(eni, ip string) {
	for e, ips := range s.enis {
		s.enis[e] = slices.DeleteFunc(ips, func(x string) bool { return x == ip && e != eni })
	}
	if !slices.Contains(s.enis[eni], ip) {
		s.enis[eni] = append(s.enis[eni], ip)
	}
}

// apiError is an EC2 error as the Query API returns it.
type apiError struct {
	status        int
	code, message string
}

func notFound(code, what string) *apiError {
	return &apiError{http.StatusBadRequest, code, fmt.Sprintf("The %s does not exist", what)}
}

// noInterface is EC2's answer naming an interface it does not have.
func noInterface(id string) *apiError {
	return notFound("InvalidNetworkInterfaceID.NotFound", "network interface '"+id+"'")
}

// ServeHTTP answers EC2 Query API requests (POST, form-encoded).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	action := r.Form.Get("Action")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	reqID := fmt.Sprintf("00000000-0000-4000-8000-%012d", s.seq)
	call := Call{At: time.Now(), Action: action, ENI: r.Form.Get("NetworkInterfaceId"), Result: "ok"}
	var body any
	var aerr *apiError
	switch {
	case !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 "):
		aerr = &apiError{http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials"}
	case s.throttle > 0:
		s.throttle--
		aerr = &apiError{http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded."}
	case s.denied[action]:
		aerr = &apiError{http.StatusForbidden, "UnauthorizedOperation", "You are not authorized to perform this operation."}
	default:
		body, aerr = s.do(action, r, reqID)
	}
	if aerr != nil {
		call.Result = aerr.code
		s.calls = append(s.calls, call)
		w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
		w.WriteHeader(aerr.status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>`,
			aerr.code, xmlEscape(aerr.message), reqID)
		return
	}
	s.calls = append(s.calls, call)
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	out, _ := xml.Marshal(body)
	fmt.Fprint(w, xml.Header, string(out))
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// list collects Name.1, Name.2, … from the form.
func list(r *http.Request, name string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := r.Form[name+"."+strconv.Itoa(i)]
		if !ok {
			return out
		}
		out = append(out, v...)
	}
}

const ns = "http://ec2.amazonaws.com/doc/2016-11-15/"

type item struct {
	PrivateIP string `xml:"privateIpAddress"`
	Primary   bool   `xml:"primary"`
}

func (s *Server) do(action string, r *http.Request, reqID string) (any, *apiError) {
	f := r.Form.Get
	switch action {
	case "AssignPrivateIpAddresses":
		eni := f("NetworkInterfaceId")
		if _, ok := s.enis[eni]; !ok {
			return nil, noInterface(eni)
		}
		ips := list(r, "PrivateIpAddress")
		reassign := f("AllowReassignment") == "true"
		for _, ip := range ips {
			if o := s.ownerLocked(ip); o != "" && o != eni && !reassign {
				return nil, &apiError{http.StatusBadRequest, "PrivateIpAddressInUse", "Address " + ip + " is in use."}
			}
			if o := s.ownerLocked(ip); o != "" && s.enis[o][0] == ip {
				return nil, &apiError{http.StatusBadRequest, "InvalidParameterValue", "Address " + ip + " is the primary address of " + o}
			}
		}
		var set []item
		for _, ip := range ips {
			s.moveIPLocked(eni, ip)
			set = append(set, item{PrivateIP: ip})
		}
		return struct {
			XMLName  xml.Name `xml:"AssignPrivateIpAddressesResponse"`
			NS       string   `xml:"xmlns,attr"`
			ReqID    string   `xml:"requestId"`
			ENI      string   `xml:"networkInterfaceId"`
			Assigned []item   `xml:"assignedPrivateIpAddressesSet>item"`
		}{NS: ns, ReqID: reqID, ENI: eni, Assigned: set}, nil

	case "DescribeNetworkInterfaces":
		ids := list(r, "NetworkInterfaceId")
		type ni struct {
			ID      string `xml:"networkInterfaceId"`
			Primary string `xml:"privateIpAddress"`
			IPs     []item `xml:"privateIpAddressesSet>item"`
		}
		var set []ni
		for _, id := range ids {
			ips, ok := s.enis[id]
			if !ok {
				return nil, noInterface(id)
			}
			n := ni{ID: id, Primary: ips[0]}
			for i, ip := range ips {
				n.IPs = append(n.IPs, item{PrivateIP: ip, Primary: i == 0})
			}
			set = append(set, n)
		}
		return struct {
			XMLName xml.Name `xml:"DescribeNetworkInterfacesResponse"`
			NS      string   `xml:"xmlns,attr"`
			ReqID   string   `xml:"requestId"`
			Set     []ni     `xml:"networkInterfaceSet>item"`
		}{NS: ns, ReqID: reqID, Set: set}, nil

	case "AssociateAddress":
		id, eni := f("AllocationId"), f("NetworkInterfaceId")
		e := s.eips[id]
		if e == nil {
			return nil, notFound("InvalidAllocationID.NotFound", "allocation ID '"+id+"'")
		}
		ips, ok := s.enis[eni]
		if !ok {
			return nil, noInterface(eni)
		}
		priv := f("PrivateIpAddress")
		if priv == "" {
			priv = ips[0]
		}
		if !slices.Contains(ips, priv) {
			return nil, &apiError{http.StatusBadRequest, "InvalidParameterValue", "The private IP address " + priv + " is not assigned to " + eni}
		}
		if e.eni != "" && (e.eni != eni || e.privateIP != priv) && f("AllowReassociation") != "true" {
			return nil, &apiError{http.StatusBadRequest, "Resource.AlreadyAssociated", "resource " + id + " is already associated with associate-id " + e.assoc}
		}
		s.seq++
		e.eni, e.privateIP, e.assoc = eni, priv, fmt.Sprintf("eipassoc-%08d", s.seq)
		return struct {
			XMLName xml.Name `xml:"AssociateAddressResponse"`
			NS      string   `xml:"xmlns,attr"`
			ReqID   string   `xml:"requestId"`
			Return  bool     `xml:"return"`
			Assoc   string   `xml:"associationId"`
		}{NS: ns, ReqID: reqID, Return: true, Assoc: e.assoc}, nil

	case "DescribeAddresses":
		type addr struct {
			PublicIP  string `xml:"publicIp"`
			Alloc     string `xml:"allocationId"`
			Domain    string `xml:"domain"`
			ENI       string `xml:"networkInterfaceId,omitempty"`
			PrivateIP string `xml:"privateIpAddress,omitempty"`
			Assoc     string `xml:"associationId,omitempty"`
		}
		var set []addr
		for _, id := range list(r, "AllocationId") {
			e := s.eips[id]
			if e == nil {
				return nil, notFound("InvalidAllocationID.NotFound", "allocation ID '"+id+"'")
			}
			set = append(set, addr{PublicIP: e.publicIP, Alloc: id, Domain: "vpc", ENI: e.eni, PrivateIP: e.privateIP, Assoc: e.assoc})
		}
		return struct {
			XMLName xml.Name `xml:"DescribeAddressesResponse"`
			NS      string   `xml:"xmlns,attr"`
			ReqID   string   `xml:"requestId"`
			Set     []addr   `xml:"addressesSet>item"`
		}{NS: ns, ReqID: reqID, Set: set}, nil

	case "ReplaceRoute", "CreateRoute":
		rtb, eni := f("RouteTableId"), f("NetworkInterfaceId")
		dst := f("DestinationCidrBlock")
		if dst == "" {
			dst = f("DestinationIpv6CidrBlock")
		}
		t, ok := s.routes[rtb]
		if !ok {
			return nil, notFound("InvalidRouteTableID.NotFound", "route table ID '"+rtb+"'")
		}
		if _, ok := s.enis[eni]; !ok {
			return nil, noInterface(eni)
		}
		_, exists := t[dst]
		switch {
		case action == "ReplaceRoute" && !exists:
			return nil, &apiError{http.StatusBadRequest, "InvalidRoute.NotFound", "no route with destination-cidr-block " + dst + " in route table " + rtb}
		case action == "CreateRoute" && exists:
			return nil, &apiError{http.StatusBadRequest, "RouteAlreadyExists", "The route identified by " + dst + " already exists."}
		}
		t[dst] = eni
		return struct {
			XMLName xml.Name
			NS      string `xml:"xmlns,attr"`
			ReqID   string `xml:"requestId"`
			Return  bool   `xml:"return"`
		}{XMLName: xml.Name{Local: action + "Response"}, NS: ns, ReqID: reqID, Return: true}, nil

	case "DescribeRouteTables":
		type route struct {
			Dst4  string `xml:"destinationCidrBlock,omitempty"`
			Dst6  string `xml:"destinationIpv6CidrBlock,omitempty"`
			ENI   string `xml:"networkInterfaceId"`
			State string `xml:"state"`
		}
		type table struct {
			ID     string  `xml:"routeTableId"`
			Routes []route `xml:"routeSet>item"`
		}
		var set []table
		for _, id := range list(r, "RouteTableId") {
			t, ok := s.routes[id]
			if !ok {
				return nil, notFound("InvalidRouteTableID.NotFound", "route table ID '"+id+"'")
			}
			tb := table{ID: id}
			dsts := make([]string, 0, len(t))
			for d := range t {
				dsts = append(dsts, d)
			}
			sort.Strings(dsts)
			for _, d := range dsts {
				rt := route{ENI: t[d], State: "active"}
				if strings.Contains(d, ":") {
					rt.Dst6 = d
				} else {
					rt.Dst4 = d
				}
				tb.Routes = append(tb.Routes, rt)
			}
			set = append(set, tb)
		}
		return struct {
			XMLName xml.Name `xml:"DescribeRouteTablesResponse"`
			NS      string   `xml:"xmlns,attr"`
			ReqID   string   `xml:"requestId"`
			Set     []table  `xml:"routeTableSet>item"`
		}{NS: ns, ReqID: reqID, Set: set}, nil
	}
	return nil, &apiError{http.StatusBadRequest, "InvalidAction", "The action " + action + " is not valid for this web service."}
}

// IMDS returns the instance metadata service (IMDSv2: a token first) of
// the instance with ID id.
func (s *Server) IMDS(id string) http.Handler {
	var in Instance
	for _, x := range s.instances {
		if x.ID == id {
			in = x
		}
	}
	token := "token-" + id
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/latest/api/token" {
			if r.Method != http.MethodPut || r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") == "" {
				http.Error(w, "", http.StatusBadRequest)
				return
			}
			w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
			fmt.Fprint(w, token)
			return
		}
		if r.Header.Get("X-Aws-Ec2-Metadata-Token") != token {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		switch p := r.URL.Path; p {
		case "/latest/meta-data/mac":
			fmt.Fprint(w, in.MAC)
		case "/latest/meta-data/instance-id":
			fmt.Fprint(w, in.ID)
		case "/latest/meta-data/network/interfaces/macs/" + in.MAC + "/interface-id":
			fmt.Fprint(w, in.ENI)
		case "/latest/dynamic/instance-identity/document":
			fmt.Fprintf(w, `{"instanceId":%q,"region":%q,"privateIp":%q,"availabilityZone":%q}`, in.ID, s.Region, in.PrimaryIP, s.Region+"a")
		default:
			http.NotFound(w, r)
		}
	})
}
