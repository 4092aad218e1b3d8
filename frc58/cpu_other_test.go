//go:build !unix

package frc58

import "time"

// cpuTime is not measured here: the benchmarks' close-cpu-s reads 0.
func cpuTime() time.Duration { return 0 }
