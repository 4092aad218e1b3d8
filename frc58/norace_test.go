//go:build !race

package frc58

// raceEnabled shrinks the heaviest tests under the race detector.
const raceEnabled = false
