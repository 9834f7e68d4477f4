package packaging

import (
	"regexp"
	"strings"
)

// releaseRE matches a release tag (at least one dot, so an abbreviated
// commit hash of digits only is not taken for one) and what follows it.
var releaseRE = regexp.MustCompile(`^v?([0-9]+(?:\.[0-9]+)+)([-+~].*)?$`)

// PackageVersion turns `git describe --tags --always --dirty` output into a
// version dpkg and rpm both accept and order sensibly:
//
//	v1.2.3              → 1.2.3
//	v1.2.3-4-gabc1234   → 1.2.3+4.gabc1234
//	abc1234-dirty       → 0.0.0~gabc1234.dirty   (no tag yet: sorts below 0.0.0)
func PackageVersion(describe string) string {
	d := strings.TrimSpace(describe)
	clean := func(s string) string {
		s = strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '+', r == '~':
				return r
			}
			return '.'
		}, s)
		return strings.Trim(s, ".")
	}
	if m := releaseRE.FindStringSubmatch(d); m != nil {
		rest := clean(m[2])
		if rest == "" {
			return m[1]
		}
		return m[1] + "+" + rest
	}
	if d == "" {
		return "0.0.0"
	}
	return "0.0.0~g" + clean(d)
}
