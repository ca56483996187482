// Package access decides who may do what, with no sockets of its own: auth tokens (JWTs
// signed with a shared key, or issued by the user's own service and checked against PEM or
// JWKS public keys, rotated without a restart), the channel access policy from a YAML file,
// and the HTTP hook that delegates decisions to the user's backend. The front (wsfront) runs
// them on its sockets (Server.UsePolicy, Server.UseHook); the node's HTTP API asks the same
// policy for its own callers.
package access
