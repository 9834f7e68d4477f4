// Package metrics owns vipd's Prometheus metrics and its HTTP endpoints
// (/metrics, /healthz, /readyz). Metrics live on a registry passed in by the
// caller; nothing is registered globally.
package metrics
