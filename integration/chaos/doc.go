// Package chaos holds the chaos suite: real sockmesh node processes killed, frozen,
// partitioned (network namespaces + iptables), drained and churned under load, with every
// publication accounted for by package checker. `make chaos` runs the full profile
// (SOCKMESH_CHAOS=full) and writes docs/chaos.md; without it a short profile runs.
package chaos
