//go:build race

package crdt

// raceEnabled: the race detector slows the property tests five to ten
// times; they run fewer schedules under it (the README's plain `go test
// ./...` runs them all).
const raceEnabled = true
