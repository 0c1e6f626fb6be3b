package hashring_test

import (
	"fmt"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/hashring"
)

// The golden picks are libmemcached 1.1.4's (Debian's libmemcached11) own,
// from memcached_generate_hash with MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED over
// the same servers, for the keys key-0 ... key-63: the server index of
// each key, one digit per key.
func TestKetamaGoldenFromLibmemcached(t *testing.T) {
	cases := []struct {
		name    string
		servers []hashring.Server
		want    string
	}{
		{"other ports", servers("10.0.0.1:11212", "10.0.0.2:11212", "10.0.0.3:11213"), "0011122211022212002022010102211202020020102200212200222202221011"},
		{"default port", servers("10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"), "2101100012100021220110012210011011011010201020202102100210101001"},
		{"weighted", []hashring.Server{{Addr: "10.0.0.1:11211", Weight: 5}, {Addr: "10.0.0.2:11211"}, {Addr: "10.0.0.3:11212", Weight: 2}}, "1202200022000001200200200010200210011000101020000100000210100000"},
		{"seven servers", servers("10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211", "10.0.0.4:11211", "10.0.0.5:11211", "10.0.0.6:11211", "10.0.0.7:11211"), "2303303313604061340514412413346316511350541024654135600360131035"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRing(t, hashring.Config{Distribution: hashring.Ketama, Servers: tc.servers})
			got := ""
			for i := range 64 {
				got += fmt.Sprint(r.Index(fmt.Sprintf("key-%d", i)))
			}
			if got != tc.want {
				t.Fatalf("picks\n%s, libmemcached\n%s", got, tc.want)
			}
		})
	}
}
