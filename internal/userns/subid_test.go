package userns

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseSubIDs(t *testing.T) {
	file := `# comment
bt:100000:65536
alice:165536:65536

1002:231072:70000
alice:300000:10
alice:4294967000:1000
alice:-1:10
alice: 5:10
alice:5:0
alice:1:2:3
alice
bob:1:1
`
	got, err := ParseSubIDs(strings.NewReader(file), "alice", 1002)
	if err != nil {
		t.Fatal(err)
	}
	want := []Range{{165536, 65536}, {231072, 70000}, {300000, 10}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ranges = %v, want %v", got, want)
	}
	got, _ = ParseSubIDs(strings.NewReader(file), "carol", 5)
	if len(got) != 0 {
		t.Errorf("carol: %v", got)
	}
	if _, err := ParseSubIDs(strings.NewReader(strings.Repeat("x", maxLine+1)), "x", 1); err == nil {
		t.Errorf("an over-long line was accepted")
	}
	if _, err := ParseSubIDs(strings.NewReader(strings.Repeat("a:1:1\n", maxFileBytes/6+1)), "a", 1); err == nil {
		t.Errorf("an over-long file was accepted")
	}
}

func TestPickRange(t *testing.T) {
	r, err := pickRange([]Range{{1, 10}, {100000, 65536}, {300000, 65536}}, SubUIDFile, "alice")
	if err != nil || r != (Range{100000, 65536}) {
		t.Errorf("pickRange = %v, %v", r, err)
	}
	if _, err := pickRange([]Range{{1, 10}}, SubUIDFile, "alice"); !errors.Is(err, ErrNoSubordinate) || !strings.Contains(err.Error(), "fewer than 65536") {
		t.Errorf("small range: %v", err)
	}
	if _, err := pickRange(nil, SubUIDFile, "alice"); !errors.Is(err, ErrNoSubordinate) || !strings.Contains(err.Error(), "no entry for alice") {
		t.Errorf("no range: %v", err)
	}
}

func FuzzParseSubIDs(f *testing.F) {
	f.Add("alice:100000:65536\n", "alice", uint32(1000))
	f.Add("1000:100000:65536\n#x\n\nalice:4294967295:1\n", "alice", uint32(1000))
	f.Add("a:1:1:1\na:01:0002\n", "a", uint32(0))
	f.Fuzz(func(t *testing.T, data, name string, id uint32) {
		ranges, err := ParseSubIDs(strings.NewReader(data), name, id)
		if err != nil {
			return
		}
		for _, r := range ranges {
			if r.Count == 0 || r.End() > 1<<32-1 {
				t.Fatalf("range %v accepted", r)
			}
		}
		entries, _ := ParseSubIDFile(strings.NewReader(data))
		if free := FreeRange(entries); free.Count != 0 {
			for _, e := range entries {
				if free.Start < uint32(e.End()) && e.Start < uint32(free.End()) && e.End() > 100000 {
					t.Fatalf("free range %v overlaps %v", free, e)
				}
			}
		}
		if len(ranges) > len(data)/5+1 {
			t.Fatalf("%d ranges from %d bytes", len(ranges), len(data))
		}
	})
}

func TestFreeRange(t *testing.T) {
	if r := FreeRange(); r != (Range{100000, 65536}) {
		t.Errorf("empty: %v", r)
	}
	uids := []Entry{{"a", Range{100000, 65536}}, {"b", Range{165536, 65536}}}
	gids := []Entry{{"a", Range{100000, 70000}}}
	if r := FreeRange(uids, gids); r != (Range{231072, 65536}) {
		t.Errorf("after a and b: %v", r)
	}
	if r := FreeRange([]Entry{{"x", Range{4294900000, 60000}}}); r.Count != 0 {
		t.Errorf("full id space: %v", r)
	}
}
