// Package mover holds vipd's cloud movers: what makes a provider deliver a
// group's addresses to its holder where a gratuitous ARP moves nothing
// (keeper.Mover; docs/cloud.md). Each lives in a package of its own:
// execmover runs a command, awsmover calls the EC2 API. New picks one for
// a group's config.
package mover
