package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/crdt"
)

// Deterministic CRM data. Contacts are those of
// /work/shared/bench/gen_records.py (`gen_records.py contacts N --seed S`),
// byte for byte: pyRandom below is CPython's random.Random (MT19937 seeded
// by init_by_array, randrange by rejection on getrandbits, random() from
// 53 bits), and contactLine writes gen_records.py's JSON line. When python3
// and the script are at hand, prepareData runs the script and uses its
// output (the reference data), checking it against the Go port; otherwise
// the Go port's lines are used. Either way contacts are parsed from those
// JSON lines. Edits (edits below) are drawn from a seeded PCG generator
// with gen_records.py's edit() semantics, not its bytes.

var (
	firstNames = strings.Fields("Jeff Anna Lena Omar Yuki Carlos Priya Noah Mia Ivan Sara Tom Aisha Ben Chen Lea")
	lastNames  = strings.Fields("Smith Rodman Meier Okafor Tanaka Garcia Patel Keller Rossi Novak Berg Dubois Haddad Kim Silva Weber")
	stages     = []string{"lead", "qualified", "won", "lost"}
	editFields = []string{"first_name", "phone", "stage", "amount", "active"}
	epoch      = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
)

const contactsCollection = "contacts"

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// round2 is Python's round(x, 2): correctly rounded to 2 decimals (ties to
// even on the exact binary value), as strconv's 'f' formatting does.
func round2(x float64) float64 {
	v, err := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 2, 64), 64)
	if err != nil {
		panic(err)
	}
	return v
}

// pyRandom is CPython's random.Random (Mersenne Twister MT19937) for the
// calls gen_records.py makes.
type pyRandom struct {
	mt [624]uint32
	i  int
}

// newPyRandom is random.Random(seed) for a non-negative integer seed.
func newPyRandom(seed uint64) *pyRandom {
	key := []uint32{uint32(seed)}
	if seed>>32 != 0 {
		key = append(key, uint32(seed>>32))
	}
	r := &pyRandom{}
	r.initGenrand(19650218)
	mt := &r.mt
	i, j := 1, 0
	for k := max(624, len(key)); k > 0; k-- {
		mt[i] = (mt[i] ^ ((mt[i-1] ^ (mt[i-1] >> 30)) * 1664525)) + key[j] + uint32(j)
		i++
		j++
		if i >= 624 {
			mt[0] = mt[623]
			i = 1
		}
		if j >= len(key) {
			j = 0
		}
	}
	for k := 623; k > 0; k-- {
		mt[i] = (mt[i] ^ ((mt[i-1] ^ (mt[i-1] >> 30)) * 1566083941)) - uint32(i)
		i++
		if i >= 624 {
			mt[0] = mt[623]
			i = 1
		}
	}
	mt[0] = 0x80000000
	return r
}

func (r *pyRandom) initGenrand(s uint32) {
	r.mt[0] = s
	for i := 1; i < 624; i++ {
		r.mt[i] = 1812433253*(r.mt[i-1]^(r.mt[i-1]>>30)) + uint32(i)
	}
	r.i = 624
}

// uint32 is genrand_uint32.
func (r *pyRandom) uint32() uint32 {
	const upper, lower, matrixA = 0x80000000, 0x7fffffff, 0x9908b0df
	mt := &r.mt
	if r.i >= 624 {
		mag := [2]uint32{0, matrixA}
		k := 0
		for ; k < 624-397; k++ {
			y := (mt[k] & upper) | (mt[k+1] & lower)
			mt[k] = mt[k+397] ^ (y >> 1) ^ mag[y&1]
		}
		for ; k < 623; k++ {
			y := (mt[k] & upper) | (mt[k+1] & lower)
			mt[k] = mt[k+(397-624)] ^ (y >> 1) ^ mag[y&1]
		}
		y := (mt[623] & upper) | (mt[0] & lower)
		mt[623] = mt[396] ^ (y >> 1) ^ mag[y&1]
		r.i = 0
	}
	y := mt[r.i]
	r.i++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}

// below is randrange(n) for 0 < n < 2^32: getrandbits(n.bit_length())
// until the result is below n.
func (r *pyRandom) below(n int) int {
	k := bits.Len(uint(n))
	for {
		if v := int(r.uint32() >> (32 - k)); v < n {
			return v
		}
	}
}

// random is random.random(): 53 random bits in [0, 1).
func (r *pyRandom) random() float64 {
	a, b := r.uint32()>>5, r.uint32()>>6
	return (float64(a)*67108864.0 + float64(b)) * (1.0 / 9007199254740992.0)
}

func pyChoice[T any](r *pyRandom, xs []T) T { return xs[r.below(len(xs))] }

// pyFloat is Python's repr of a float in the range of generated amounts.
func pyFloat(x float64) string {
	s := strconv.FormatFloat(x, 'f', -1, 64)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return s
}

// contactLine is gen_records.py's contact() as its JSON line (without the
// newline): 8 fields.
func contactLine(r *pyRandom, i int, prefix string) []byte {
	f, l := pyChoice(r, firstNames), pyChoice(r, lastNames)
	day := epoch.AddDate(0, 0, r.below(2000))
	phone := fmt.Sprintf("+41 44 %03d %02d %02d", r.below(1000), r.below(100), r.below(100))
	stage := pyChoice(r, stages)
	// uniform(100, 250000) is a + (b-a)*random(); the conversion keeps the
	// product rounded on its own (no fused multiply-add).
	amount := round2(100 + float64(249900*r.random()))
	active := r.random() < 0.8
	q := strconv.Quote
	return fmt.Appendf(nil, `{"id":%s,"first_name":%s,"last_name":%s,"email":%s,"phone":%s,"stage":%s,"amount":%s,"active":%t,"met_on":%s}`,
		q(fmt.Sprintf("%s%d", prefix, i)), q(f), q(l), q(fmt.Sprintf("%s.%s.%d@example.com", strings.ToLower(f), strings.ToLower(l), i)),
		q(phone), q(stage), pyFloat(amount), active, q(day.Format("2006-01-02")+"T09:00:00Z"))
}

// contactLines returns the JSON lines of contacts c0..c(n-1) (Go port).
func contactLines(n int, seed uint64) [][]byte {
	r := newPyRandom(seed)
	out := make([][]byte, n)
	for i := range out {
		out[i] = contactLine(r, i, "c")
	}
	return out
}

// dataset holds the JSON lines of the contacts every benchmark draws from
// (the first n contacts of a larger run are the n contacts of a smaller
// one: each contact only consumes the generator further).
type dataset struct {
	lines  [][]byte
	source string // where the lines came from, for the notes
}

// prepareData makes the JSON lines of n contacts: gen_records.py's output
// when python3 and the script are at hand (checked against the Go port),
// else the Go port's.
func (e *env) prepareData(ctx context.Context, n int) error {
	t0 := time.Now()
	goLines := contactLines(n, e.cfg.seed)
	goSum := linesSum(goLines)
	e.data = dataset{lines: goLines}
	script := e.cfg.genRecords
	if script == "" {
		e.data.source = fmt.Sprintf("Contacts: the Go port in scripts/bench/data.go of gen_records.py (--gen-records empty: the script was not run), %d contacts, JSONL sha256 %s.", n, goSum)
		return nil
	}
	py, err := exec.LookPath("python3")
	if err == nil {
		_, err = os.Stat(script)
	}
	if err != nil {
		e.progress("data: gen_records.py not run (%v): using the Go port", err)
		e.data.source = fmt.Sprintf("Contacts: the Go port in scripts/bench/data.go of gen_records.py (python3 or %s not available: %v), %d contacts, JSONL sha256 %s.", script, err, n, goSum)
		return nil
	}
	cmd := exec.CommandContext(ctx, py, script, "contacts", strconv.Itoa(n), "--seed", strconv.FormatUint(e.cfg.seed, 10))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s contacts %d: %w", script, n, err)
	}
	pyLines := bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n"))
	if len(pyLines) != n {
		return fmt.Errorf("%s contacts %d: %d lines", script, n, len(pyLines))
	}
	pySum := linesSum(pyLines)
	e.data.lines = pyLines
	cmdline := fmt.Sprintf("`python3 %s contacts %d --seed %d`", script, n, e.cfg.seed)
	if pySum == goSum {
		e.data.source = fmt.Sprintf("Contacts: the output of %s (JSONL sha256 %s), byte-identical to the Go port in scripts/bench/data.go used without python3.", cmdline, pySum)
	} else {
		e.progress("data: WARNING: gen_records.py output (sha256 %s) differs from the Go port's (%s); using gen_records.py's", pySum, goSum)
		e.data.source = fmt.Sprintf("Contacts: the output of %s (JSONL sha256 %s). WARNING: the Go port in scripts/bench/data.go gave different bytes (sha256 %s).", cmdline, pySum, goSum)
	}
	e.progress("data: %d contacts from gen_records.py in %s (sha256 %s, Go port equal: %v)", n, fmtDur(time.Since(t0)), pySum, pySum == goSum)
	return nil
}

// linesSum is the sha256 (first 16 hex digits) of lines as a JSONL file.
func linesSum(lines [][]byte) string {
	h := sha256.New()
	for _, l := range lines {
		h.Write(l)
		h.Write([]byte("\n"))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// jsonl returns the first n contacts as a JSONL file's bytes.
func (e *env) jsonl(n int) []byte {
	var b bytes.Buffer
	for _, l := range e.data.lines[:n] {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// contacts returns contacts c0..c(n-1) as import records, parsed from the
// dataset's lines like encoding/json does (numbers as float64).
func (e *env) contacts(n int) []crdt.ImportRecord {
	if n > len(e.data.lines) {
		panic(fmt.Sprintf("contacts(%d): only %d prepared", n, len(e.data.lines)))
	}
	out := make([]crdt.ImportRecord, n)
	for i, l := range e.data.lines[:n] {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			panic(fmt.Sprintf("contact line %d: %v", i+1, err))
		}
		id, _ := m["id"].(string)
		delete(m, "id")
		out[i] = crdt.ImportRecord{Line: i + 1, ID: id, Fields: m}
	}
	return out
}

// edit is one single-field edit of a contact.
type edit struct {
	ID    string
	Field string
	Value any
}

// edits returns n single-field edits of the contacts in base (as returned
// by contacts), with gen_records.py's edit() semantics: a random contact, a
// random field among first_name, phone, stage, amount, active, and a random
// value of that field. One difference: a value equal to the field's current
// value is drawn again, so that every edit really changes the record (an
// unchanged value is a no-op for Store.Put: no delta, no fsync). It also
// returns the expected final state of every contact.
func edits(n int, base []crdt.ImportRecord, seed uint64) ([]edit, map[string]map[string]any) {
	r := newRand(seed)
	state := fieldState(base)
	out := make([]edit, n)
	for i := range out {
		id := base[r.IntN(len(base))].ID
		field := pick(r, editFields)
		v := editValue(r, field)
		for v == state[id][field] {
			v = editValue(r, field)
		}
		state[id][field] = v
		out[i] = edit{ID: id, Field: field, Value: v}
	}
	return out, state
}

// fieldState is the state of recs: each record's fields (a copy), by id.
func fieldState(recs []crdt.ImportRecord) map[string]map[string]any {
	state := make(map[string]map[string]any, len(recs))
	for _, rec := range recs {
		m := make(map[string]any, len(rec.Fields))
		for k, v := range rec.Fields {
			m[k] = v
		}
		state[rec.ID] = m
	}
	return state
}

// editValue draws a random value of an edited field (gen_records.py's
// edit() semantics).
func editValue(r *rand.Rand, field string) any {
	switch field {
	case "first_name":
		return pick(r, firstNames)
	case "phone":
		return fmt.Sprintf("+41 79 %03d %02d %02d", r.IntN(1000), r.IntN(100), r.IntN(100))
	case "stage":
		return pick(r, stages)
	case "amount":
		return round2(100 + r.Float64()*(250000-100))
	default: // active
		return r.Float64() < 0.5
	}
}

// coalesce turns a run of edits into import records, one per contact, each
// holding the last value of every field the run edited (what the run leaves
// behind), in order of first appearance.
func coalesce(run []edit, firstLine int) []crdt.ImportRecord {
	var out []crdt.ImportRecord
	at := map[string]int{}
	for i, e := range run {
		j, ok := at[e.ID]
		if !ok {
			j = len(out)
			at[e.ID] = j
			out = append(out, crdt.ImportRecord{Line: firstLine + i, ID: e.ID, Fields: map[string]any{}})
		}
		out[j].Fields[e.Field] = e.Value
	}
	return out
}

// cloneRecords deep-copies records: Store.Import rewrites their Fields.
func cloneRecords(recs []crdt.ImportRecord) []crdt.ImportRecord {
	out := make([]crdt.ImportRecord, len(recs))
	for i, r := range recs {
		m := make(map[string]any, len(r.Fields))
		for k, v := range r.Fields {
			m[k] = v
		}
		out[i] = crdt.ImportRecord{Line: r.Line, ID: r.ID, Fields: m}
	}
	return out
}
