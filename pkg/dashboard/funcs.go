package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"short":    short,
	"ms":       fmtMS,
	"pct":      func(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) },
	"num":      func(f float64) string { return fmt.Sprintf("%.3f", f) },
	"when":     when,
	"since":    since,
	"bytes":    fmtBytes,
	"terminal": apiv1.Terminal,
	"state":    func(s string) string { return strings.ReplaceAll(s, "_", " ") },
	"pretty":   pretty,
	"join":     strings.Join,
	"add":      func(a, b int) int { return a + b },
	"first": func(s []string) string {
		if len(s) == 0 {
			return ""
		}
		return s[0]
	},
}

// short abbreviates a peer or task ID to its end, which differs between
// IDs (peer IDs share their start; task IDs begin with the clock).
func short(id string) string {
	if len(id) <= 12 {
		return id
	}
	return "…" + id[len(id)-8:]
}

func fmtMS(ms float64) string {
	switch {
	case ms <= 0:
		return "–"
	case ms < 1:
		return fmt.Sprintf("%.0f µs", ms*1000)
	case ms < 1000:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.2f s", ms/1000)
	}
}

func when(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

// since is how long from a to b (b nil: not yet).
func since(a time.Time, b *time.Time) string {
	if b == nil || a.IsZero() {
		return "–"
	}
	return fmtMS(float64(b.Sub(a)) / float64(time.Millisecond))
}

func fmtBytes(n int) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}

// maxShown is the most of an input or output a page shows; the rest is a
// download.
const maxShown = 64 << 10

// pretty indents JSON for a page, or returns "" if it is larger than
// maxShown (the page offers it as a download then).
func pretty(raw json.RawMessage) string {
	if len(raw) > maxShown {
		return ""
	}
	var buf bytes.Buffer
	if json.Indent(&buf, raw, "", "  ") != nil {
		return string(raw)
	}
	return buf.String()
}
