package main

import (
	"fmt"
	"math"
	"time"
)

// Formatting helpers.

func fmtRate(perSec float64, unit string) string {
	switch {
	case perSec >= 100:
		return fmt.Sprintf("%.0f %s", perSec, unit)
	case perSec >= 10:
		return fmt.Sprintf("%.1f %s", perSec, unit)
	}
	return fmt.Sprintf("%.2f %s", perSec, unit)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func fmtRatio(ferry, base float64) string {
	if base == 0 {
		return "n/a"
	}
	r := ferry / base
	switch {
	case r >= 100:
		return fmt.Sprintf("%.0f", r)
	case r >= 10:
		return fmt.Sprintf("%.1f", r)
	}
	return fmt.Sprintf("%.2f", r)
}

// fmtSmallRatio is fmtRatio with two significant digits below 1.
func fmtSmallRatio(ferry, base float64) string {
	if base == 0 {
		return "n/a"
	}
	if r := ferry / base; r < 1 {
		return fmt.Sprintf("%.2g", r)
	}
	return fmtRatio(ferry, base)
}

// fmtTimes formats a speed-up factor.
func fmtTimes(x float64) string {
	if x >= 10 {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.1f", x)
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(float64(len(sorted))*p/100)) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}
