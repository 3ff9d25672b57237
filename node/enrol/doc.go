// Package enrol is how a machine becomes a member of a secured Ferry
// network and how members keep everyone else out: invitation tokens
// (Token, issued by an office from its Book), the join protocol that
// redeems one (Office on the office, Redeem on the new node), the
// Admission that gates connections and streams to members, and the crdt
// trust model (NewTrust) that signs and verifies operations.
// docs/security.md tells the whole story.
package enrol
