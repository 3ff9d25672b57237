package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// epochJSON is the "epoch" object of `ferry status --json`.
type epochJSON struct {
	Epoch     string `json:"epoch"`
	Number    uint64 `json:"number"`
	Later     string `json:"later"`
	Adopting  bool   `json:"adopting"`
	LastError string `json:"last_error"`
}

// epochOf is the epoch a status shows ("0" when the binary has none).
func epochOf(st statusJSON) string {
	if st.Epoch == nil || st.Epoch.Epoch == "" {
		return "0"
	}
	return st.Epoch.Epoch
}

// epochNumber is the number of an epoch string ("0", "<n>-<id>").
func epochNumber(e string) uint64 {
	num, _, _ := strings.Cut(e, "-")
	n, _ := strconv.ParseUint(num, 10, 64)
	return n
}

// compactStats are the compaction counters of a schedule.
type compactStats struct {
	// steps: compaction steps run; compactions: compactions acknowledged
	// (200); busy: 409 answers; gaveUp: compactions given up after
	// compactBusyWithin of 409s; failed: other refusals (a full disk).
	steps, compactions, busy, gaveUp, failed int
	// kills: SIGKILLs of the office during a compaction; before/after:
	// the office restarted in the old epoch / the new one.
	kills, killedBefore, killedAfter int
	// away: laptops away across two compactions; facts: superseded values
	// checked not to come back; adopted: rejoining laptops seen reaching
	// the latest epoch.
	away, facts, adopted int
	// compacted: acknowledged write×field pairs accounted for by a
	// compaction (superseded, and their operation dropped with the old
	// epoch, or kept in the archive); unverifiable: values written without
	// a known operation id whose value is gone after a compaction.
	compacted, unverifiable int
	// epochs: the epoch number every node ended in.
	epochs uint64
}

func (s *compactStats) add(o compactStats) {
	s.steps += o.steps
	s.compactions += o.compactions
	s.busy += o.busy
	s.gaveUp += o.gaveUp
	s.failed += o.failed
	s.kills += o.kills
	s.killedBefore += o.killedBefore
	s.killedAfter += o.killedAfter
	s.away += o.away
	s.facts += o.facts
	s.adopted += o.adopted
	s.compacted += o.compacted
	s.unverifiable += o.unverifiable
	s.epochs += o.epochs
}

// line is the compaction part of a schedule's line.
func (s compactStats) line() string {
	return fmt.Sprintf("compactions=%d killed-compacting=%d away=%d", s.compactions, s.kills, s.away)
}

// summary is the compaction part of the totals.
func (s compactStats) summary() string {
	return fmt.Sprintf("%d compaction steps: %d compactions acknowledged (%d answers 409, %d given up busy, %d refused), %d office kills during a compaction (restarted in the old epoch %d times, in the new one %d), %d laptops away across two compactions (%d superseded values checked not to come back, %d seen adopting the latest epoch), %d write fields accounted for as compacted away, %d unverifiable",
		s.steps, s.compactions, s.busy, s.gaveUp, s.failed, s.kills, s.killedBefore, s.killedAfter, s.away, s.facts, s.adopted, s.compacted, s.unverifiable)
}

// compactState is what the schedule knows of compactions.
type compactState struct {
	// acked: epochs of the compactions the office acknowledged, in order;
	// started: the steps at which a compaction was started.
	acked   []string
	started []int
	// took: the last compaction's duration (the kill's time scale).
	took time.Duration
	// facts: writes seen superseded, which must never show again.
	facts []*supersession
	// cuts: per epoch of the final chain, its manifest's cut (loaded by
	// the checks); loaded: tried.
	cuts   []epochCut
	loaded bool
	// counted: write fields already counted as compacted or unverifiable.
	counted map[string]bool
	// last: the last step that is a compaction step (-1: none; planned:
	// computed); pending:
	// acknowledged writes whose values without an op id are still to be
	// matched with the op holding them (resolvePending).
	last    int
	planned bool
	pending []*ackedWrite
}

// epochCut is an epoch's manifest cut: per writer, the time of the newest
// operation the office held when it compacted.
type epochCut struct {
	epoch string
	cut   map[string]uint64
}

// supersession: op (field of record id, written by node from) was seen
// superseded by op by, written at step on node on.
type supersession struct {
	step      int
	id, field string
	op, by    string
	value     any
	from, on  *node
}
