package checker

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTokenJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Token
	}{{`"12"`, Rev(12)}, {`"12.3"`, tk(12, 3)}, {`12`, Rev(12)}, {`"0"`, Token{}}} {
		var got Token
		if err := json.Unmarshal([]byte(tc.in), &got); err != nil || got != tc.want {
			t.Errorf("unmarshal %s: %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{`"x"`, `"12."`, `"-1"`, `"1.2.3"`, `1.5`, `true`} {
		var got Token
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("unmarshal %s: no error, got %v", bad, got)
		}
	}
	b, err := json.Marshal(Call{ID: "c", Result: OK, Token: tk(7, 2)})
	if err != nil || !strings.Contains(string(b), `"token":"7.2"`) {
		t.Fatalf("marshal: %s %v", b, err)
	}
	if b, err := json.Marshal(Call{ID: "c", Result: Refused}); err != nil || strings.Contains(string(b), "token") {
		t.Fatalf("zero token written: %s %v", b, err)
	}
	// A history saved when tokens were revisions still loads.
	var h History
	old := `{"calls":[{"id":"c1","result":"ok","token":12}],"applied":[{"token":12}],"final":{"watermark":14,"watermarks":[12,14],"accepted":[{"id":"c1","token":12}]}}`
	if err := json.Unmarshal([]byte(old), &h); err != nil {
		t.Fatal(err)
	}
	if h.Calls[0].Token != Rev(12) || h.Applied[0].Token != Rev(12) || h.Final.Watermark != Rev(14) || h.Final.Watermarks[1] != Rev(14) || h.Final.Accepted[0].Token != Rev(12) {
		t.Fatalf("old history read as %+v", h)
	}
}
