package peer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKey(t *testing.T) {
	const good = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string   // the key, if no error
		errHas  []string // in the error, besides the path
	}{
		{"good", good + "\n", 0o600, good, nil},
		{"good, owner read-only, trailing blanks", good + " \r\n\n", 0o400, good, nil},
		{"short", "0123456789ab\n", 0o600, "", []string{"12 bytes, need at least 32"}},
		{"empty", "\n", 0o600, "", []string{"0 bytes, need at least 32"}},
		{"group-readable", good, 0o640, "", []string{"mode 0640", "chmod 600"}},
		{"world-readable", good, 0o644, "", []string{"mode 0644"}},
		{"other-writable", good, 0o602, "", []string{"mode 0602"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "peer.key")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil { // not subject to umask
				t.Fatal(err)
			}
			key, err := LoadKey(path)
			if tc.errHas == nil {
				if err != nil || string(key) != tc.want {
					t.Fatalf("LoadKey = %q, %v; want %q", key, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadKey = %q, want an error", key)
			}
			for _, s := range append([]string{"peer: key file " + path}, tc.errHas...) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "absent.key")
		if _, err := LoadKey(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadKey = %v, want an error naming %s", err, path)
		}
	})
}
