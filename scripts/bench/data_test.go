package main

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// The Go port gives gen_records.py's bytes (sums of `gen_records.py
// contacts 1000 --seed S | sha256sum`, first 16 hex digits).
func TestContactLinesMatchGenRecords(t *testing.T) {
	for _, c := range []struct {
		seed uint64
		sum  string
	}{
		{1, "0a7740528661f694"},
		{7, "74d158cd1a860dc5"},
		{0, "ee5c50f91e923fc6"},
		{1<<40 + 3, "1cd9c78d113b731e"},
	} {
		if got := linesSum(contactLines(1000, c.seed)); got != c.sum {
			t.Errorf("seed %d: sha256 %s, want %s", c.seed, got, c.sum)
		}
	}
	want := `{"id":"c0","first_name":"Yuki","last_name":"Meier","email":"yuki.meier.0@example.com","phone":"+41 44 120 63 97","stage":"lost","amount":118114.09,"active":true,"met_on":"2021-06-06T09:00:00Z"}`
	if got := string(contactLines(1, 1)[0]); got != want {
		t.Errorf("first contact:\n got %s\nwant %s", got, want)
	}
}

// With python3 and the script at hand, compare a larger run directly.
func TestContactLinesAgainstScript(t *testing.T) {
	const script = "../../../shared/bench/gen_records.py"
	py, err := exec.LookPath("python3")
	if err == nil {
		_, err = os.Stat(script)
	}
	if err != nil {
		t.Skip("python3 or gen_records.py not available:", err)
	}
	n := 20000
	if testing.Short() {
		n = 2000
	}
	out, err := exec.Command(py, script, "contacts", strconv.Itoa(n), "--seed", "3").Output()
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, l := range contactLines(n, 3) {
		b = append(append(b, l...), '\n')
	}
	if string(b) != string(out) {
		t.Fatalf("Go port and gen_records.py differ on %d contacts, seed 3", n)
	}
}
