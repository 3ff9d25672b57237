package disk

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseReserve(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Reserve
		str     string // String of the result
		wantErr string // part of the error, "" for none
	}{
		{in: "256MiB", want: Reserve{Bytes: 256 << 20}, str: "256 MiB"},
		{in: "256 MiB", want: Reserve{Bytes: 256 << 20}, str: "256 MiB"},
		{in: "1GB", want: Reserve{Bytes: 1e9}, str: "954 MiB"},
		{in: "4096", want: Reserve{Bytes: 4096}, str: "4.0 KiB"},
		{in: "0", want: Reserve{}, str: "0 B"},
		{in: "1%", want: Reserve{Percent: 1}, str: "1%"},
		{in: " 2.5 % ", want: Reserve{Percent: 2.5}, str: "2.5%"},
		{in: "0%", want: Reserve{}, str: "0 B"},
		{in: "50%", want: Reserve{Percent: 50}, str: "50%"},
		{in: "1%,256MiB", want: Reserve{Bytes: 256 << 20, Percent: 1}, str: "1%,256 MiB"},
		{in: "256MiB, 1%", want: Reserve{Bytes: 256 << 20, Percent: 1}, str: "1%,256 MiB"},
		{in: "", wantErr: "empty disk reserve"},
		{in: "   ", wantErr: "empty disk reserve"},
		{in: "51%", wantErr: `disk reserve "51%": want a percentage between 0% and 50%`},
		{in: "-1%", wantErr: "want a percentage between 0% and 50%"},
		{in: "x%", wantErr: "want a percentage between 0% and 50%"},
		{in: "lots", wantErr: `disk reserve "lots": want a size like 256MiB, a percentage like 1%, or 0`},
		{in: "1%,", wantErr: `disk reserve "": want a size`},
		{in: "-5MiB", wantErr: "want a size like 256MiB"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseReserve(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseReserve(%q) = %+v, %v; want an error with %q", tc.in, got, err, tc.wantErr)
				}
				if got != (Reserve{}) {
					t.Errorf("ParseReserve(%q) returned %+v with its error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseReserve(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			if s := got.String(); s != tc.str {
				t.Errorf("String() = %q, want %q", s, tc.str)
			}
			// String is read back as the same reserve (up to its rounding).
			if back, err := ParseReserve(got.String()); err != nil || back.Percent != got.Percent {
				t.Errorf("ParseReserve(%q) = %+v, %v", got.String(), back, err)
			}
		})
	}
	if s := DefaultReserve.String(); s != "1%,256 MiB" {
		t.Errorf("DefaultReserve = %q", s)
	}
}

func TestReserveSpace(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		name        string
		r           Reserve
		free, total uint64
		want        Space
	}{
		{"none", Reserve{}, 0, 100 * gib,
			Space{Free: 0, Total: 100 * gib}},
		{"bytes", Reserve{Bytes: 1 << 20}, 3 << 20, 100 * gib,
			Space{Free: 3 << 20, Total: 100 * gib, Reserve: 1 << 20}},
		{"bytes low", Reserve{Bytes: 1 << 20}, 3<<19 + 1, 100 * gib,
			Space{Free: 3<<19 + 1, Total: 100 * gib, Reserve: 1 << 20, Low: true}},
		{"bytes at the reserve", Reserve{Bytes: 1 << 20}, 1 << 20, 100 * gib,
			Space{Free: 1 << 20, Total: 100 * gib, Reserve: 1 << 20, Low: true}},
		{"bytes full", Reserve{Bytes: 1 << 20}, 1<<20 - 1, 100 * gib,
			Space{Free: 1<<20 - 1, Total: 100 * gib, Reserve: 1 << 20, Low: true, Full: true}},
		{"percent", Reserve{Percent: 1}, 10 * gib, 100 * gib,
			Space{Free: 10 * gib, Total: 100 * gib, Reserve: gib}},
		{"percent full", Reserve{Percent: 10}, 9 * gib, 100 * gib,
			Space{Free: 9 * gib, Total: 100 * gib, Reserve: 10 * gib, Low: true, Full: true}},
		// Both: the smaller.
		{"default, big disk", DefaultReserve, 10 * gib, 100 * gib,
			Space{Free: 10 * gib, Total: 100 * gib, Reserve: 256 << 20}},
		{"default, small disk", DefaultReserve, gib, 10 * gib,
			Space{Free: gib, Total: 10 * gib, Reserve: 10 * gib / 100}},
		{"default, tiny free", DefaultReserve, 100 << 20, 10 * gib,
			Space{Free: 100 << 20, Total: 10 * gib, Reserve: 10 * gib / 100, Low: true, Full: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.space(tc.free, tc.total); got != tc.want {
				t.Errorf("%v on %d free of %d: %+v, want %+v", tc.r, tc.free, tc.total, got, tc.want)
			}
		})
	}
}

// TestSpaceJSON: the "disk" object of status is a documented contract
// (docs/json.md).
func TestSpaceJSON(t *testing.T) {
	b, err := json.Marshal(Space{Free: 1, Total: 2, Reserve: 3, Low: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"free":1,"total":2,"reserve":3,"low":true,"full":false}`; string(b) != want {
		t.Errorf("%s, want %s", b, want)
	}
}

func TestWatch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()

	w := NewWatch(dir, Reserve{})
	sp, err := w.Space()
	if err != nil {
		t.Fatal(err)
	}
	if sp.Total == 0 || sp.Free > sp.Total || sp.Reserve != 0 || sp.Low || sp.Full {
		t.Errorf("no reserve: %+v", sp)
	}
	if err := w.CheckRoom(ctx); err != nil {
		t.Errorf("no reserve: %v", err)
	}

	full := NewWatch(dir, Reserve{Bytes: 1 << 62})
	err = full.CheckRoom(ctx)
	if !errors.Is(err, ErrLow) {
		t.Fatalf("reserve larger than the disk: %v, want ErrLow", err)
	}
	for _, want := range []string{"disk almost full: ", " free on the disk of " + dir + ", under the reserve of 4.0 EiB kept for merges and repairs (free some space, or lower disk_reserve in config.yaml)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if sp, err := full.Space(); err != nil || !sp.Full || !sp.Low {
		t.Errorf("reserve larger than the disk: %+v, %v", sp, err)
	}

	// A filesystem that cannot be read lets the write try.
	gone := NewWatch(dir+"/missing", DefaultReserve)
	if _, err := gone.Space(); err == nil {
		t.Error("free space of a missing dir: no error")
	}
	if err := gone.CheckRoom(ctx); err != nil {
		t.Errorf("CheckRoom of a missing dir: %v, want nil", err)
	}
}
