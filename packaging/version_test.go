package packaging

import "testing"

func TestPackageVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":                  "1.2.3",
		"1.2":                     "1.2",
		"v1.2.3-4-gabc1234":       "1.2.3+4.gabc1234",
		"v1.2.3-4-gabc1234-dirty": "1.2.3+4.gabc1234.dirty",
		"abc1234":                 "0.0.0~gabc1234",
		"d145e05-dirty":           "0.0.0~gd145e05.dirty",
		"":                        "0.0.0",
		"dev":                     "0.0.0~gdev",
		"1234567":                 "0.0.0~g1234567",
		"1234abc-dirty":           "0.0.0~g1234abc.dirty",
	} {
		if got := PackageVersion(in); got != want {
			t.Errorf("PackageVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
