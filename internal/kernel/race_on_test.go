//go:build race

package kernel

// raceEnabled: the race detector slows decompression and extraction some 5–10 times.
const raceEnabled = true
