package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// machineFacts lists what decides the numbers: CPUs, Go, module versions,
// and the file system the data dir is on.
func machineFacts(dir string) []string {
	nproc := fmt.Sprint(runtime.NumCPU())
	if out, err := exec.Command("nproc").Output(); err == nil {
		nproc = strings.TrimSpace(string(out))
	}
	facts := []string{
		"nproc: " + nproc,
		"CPU: " + cpuModel(),
		"Go: " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		fmt.Sprintf("GOMAXPROCS: %d", runtime.GOMAXPROCS(0)),
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var mods []string
		for _, m := range bi.Deps {
			switch m.Path {
			case "github.com/ipfs/go-ds-crdt", "github.com/ipfs/go-ds-badger", "github.com/ipfs/boxo", "github.com/libp2p/go-libp2p":
				mods = append(mods, m.Path+" "+m.Version)
			}
		}
		if len(mods) > 0 {
			facts = append(facts, "modules: "+strings.Join(mods, ", "))
		}
	}
	if mem := memTotal(); mem != "" {
		facts = append(facts, "memory: "+mem)
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		facts = append(facts, "kernel: "+strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("df", "-PT", dir).Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if f := strings.Fields(lines[len(lines)-1]); len(f) >= 2 {
			fact := fmt.Sprintf("data dir file system: %s (%s", f[1], f[0])
			if len(f) >= 3 {
				if kb, err := strconv.ParseInt(f[2], 10, 64); err == nil {
					fact += fmt.Sprintf(", %.0f GB", float64(kb)*1024/1e9)
				}
			}
			if rot, err := os.ReadFile("/sys/block/" + filepath.Base(f[0]) + "/queue/rotational"); err == nil {
				fact += ", queue/rotational " + strings.TrimSpace(string(rot))
			}
			facts = append(facts, fact+")")
		}
	}
	return facts
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

// memTotal is MemTotal of /proc/meminfo, in GB.
func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return fmt.Sprintf("%.1f GB", float64(kb)*1024/1e9)
			}
		}
	}
	return ""
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	return cpuModelFrom(f)
}

func cpuModelFrom(r io.Reader) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
