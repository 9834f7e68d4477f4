// Package awsmover owns the aws mover: it makes EC2 deliver a group's
// addresses to this instance through the EC2 API (the AWS SDK for Go v2),
// as secondary private IPs moved to its network interface
// (AssignPrivateIpAddresses with reassignment), an Elastic IP associated
// with it (AssociateAddress with reassociation), and routes for a VIP
// outside the VPC's range pointed at it (ReplaceRoute, or CreateRoute for
// a missing one). The instance's region and primary interface come from
// the instance metadata service (IMDSv2) unless configured; credentials
// from the SDK's default chain (an instance role). The SDK's own retries
// are off: the keeper retries, with backoff, inside the fence.
package awsmover
