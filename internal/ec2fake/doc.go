// Package ec2fake is a small EC2 Query API server for tests, and an
// instance metadata service (IMDSv2) beside it: the part of EC2 the aws
// mover calls, faithful to the documented semantics of those calls
// (AssignPrivateIpAddresses with AllowReassignment moves an address from
// the interface that has it; AssociateAddress with AllowReassociation
// moves an Elastic IP; ReplaceRoute replaces an existing route only), and
// to EC2's errors (RequestLimitExceeded, UnauthorizedOperation,
// InvalidNetworkInterfaceID.NotFound, …) as the SDK receives them. No EC2
// emulator can be installed where vipd's tests run; vipd's aws mover is
// tested against this, not against AWS.
package ec2fake
