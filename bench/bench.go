// Package bench holds ferry's end-to-end benchmarks: ingest, replay, the
// status API and memory, each against a baseline measured in the same run
// on the same machine. They are benchmarks only — plain `go test ./...`
// compiles them and runs nothing; `make bench` (scripts/bench.sh) runs
// them with the lines of frc58 and carcheck and prints the table
// of docs/benchmarks.md.
//
// # Scale
//
// Every benchmark reads its scale from a flag with an environment
// fallback; the defaults are a CI smoke run. One op is one whole scenario,
// so run them with -benchtime 1x:
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 2h ./bench/ -ferry.cars 1000000
//
// # Rules
//
//   - A ferry figure and its baseline come from the same process run, on
//     the same kind of embedded NATS server, with the same message sizes.
//   - Every ferry figure is checked after it is measured: the events are
//     all aggregated and visible in the read models, a sample of CARs
//     answers with the piece it was given.
//   - Load generators run in their own process (bench/cmd/loadgen or wrk).
package bench

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Mem is a process's memory as /proc/<pid>/status reports it, in bytes.
type Mem struct {
	RSS  uint64 // VmRSS: resident now
	HWM  uint64 // VmHWM: the peak of VmRSS
	Anon uint64 // RssAnon: resident anonymous memory (heap, stacks)
	File uint64 // RssFile: resident file-backed pages (bbolt's mmap, binaries)
}

// ReadMem reads the memory of process pid; pid 0 is this process.
func ReadMem(pid int) (Mem, error) {
	path := "/proc/self/status"
	if pid != 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	f, err := os.Open(path)
	if err != nil {
		return Mem{}, err
	}
	defer f.Close()
	var m Mem
	fields := map[string]*uint64{"VmRSS:": &m.RSS, "VmHWM:": &m.HWM, "RssAnon:": &m.Anon, "RssFile:": &m.File}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Fields(sc.Text())
		if len(parts) < 2 {
			continue
		}
		if p, ok := fields[parts[0]]; ok {
			kb, err := strconv.ParseUint(parts[1], 10, 64)
			if err != nil {
				return Mem{}, fmt.Errorf("%s: %s: %w", path, parts[0], err)
			}
			*p = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return Mem{}, err
	}
	if m.RSS == 0 {
		return Mem{}, fmt.Errorf("%s: no VmRSS (not Linux?)", path)
	}
	return m, nil
}

// MiB converts bytes to MiB for reporting.
func MiB(n uint64) float64 { return float64(n) / (1 << 20) }

// clockTick is the unit of /proc/<pid>/stat times: USER_HZ, 100 on every
// Linux ABI Go supports.
const clockTick = 10 * time.Millisecond

// ProcCPU is the CPU time, user and system, process pid has used so far,
// to 10 ms.
func ProcCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 { // fields 3.. ; utime and stime are fields 14 and 15
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// DirSize is the bytes of the files under path (a file or a directory).
func DirSize(path string) uint64 {
	var total uint64
	filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				total += uint64(info.Size())
			}
		}
		return nil
	})
	return total
}
