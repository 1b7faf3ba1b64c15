package config

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Percent is a fraction written as a percentage: "10%" is Percent(0.1).
type Percent float64

// String formats p as a percentage, such as "10%".
func (p Percent) String() string {
	return strconv.FormatFloat(float64(p)*100, 'f', -1, 64) + "%"
}

// parsePercent reads "10%", "2.5%" or a bare 0. Other bare numbers are refused: 0.1
// might mean 10% or 0.1%.
func parsePercent(n *yaml.Node) (Percent, error) {
	s := strings.TrimSpace(n.Value)
	num, ok := strings.CutSuffix(s, "%")
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("percentage %q: want a number with %%, such as \"10%%\"", n.Value)
	case !ok && f != 0:
		return 0, fmt.Errorf("percentage %s: a bare number is ambiguous — write it with %%, such as \"%s%%\"", n.Value, n.Value)
	}
	return Percent(f / 100), nil
}
