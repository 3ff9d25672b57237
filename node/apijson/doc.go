// Package apijson holds the JSON shapes of Ferry's local API and of the
// CLI's --json output, as docs/json.md documents them: the server
// (node/api) writes them, the Go Client and the CLI read them. A change of
// a field here is a change of that contract.
package apijson
