package config

import (
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// lineIndex maps dotted keys to the line where they are assigned.
type lineIndex map[string]int

// find returns the line of key, or of its closest assigned parent (for inline tables), or 0.
func (ix lineIndex) find(key string) int {
	for k := key; k != ""; k = trimLastPart(k) {
		if line, ok := ix[k]; ok {
			return line
		}
	}
	return 0
}

// keyLines indexes the key/value lines of a document that has already decoded successfully.
// It only improves error messages, so any trouble yields a partial index rather than an error.
func keyLines(data []byte) (ix lineIndex) {
	ix = lineIndex{}
	// The parser API is go-toml's "unstable" one; if it ever panics, keep what we have.
	defer func() { _ = recover() }()
	var p unstable.Parser
	p.Reset(data)
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyParts(e.Key())
		case unstable.KeyValue:
			key := strings.Join(append(append([]string(nil), table...), keyParts(e.Key())...), ".")
			ix[key] = p.Shape(e.Raw).Start.Line
		}
	}
	return ix
}

func keyParts(it unstable.Iterator) []string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}
