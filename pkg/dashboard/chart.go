package dashboard

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strings"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// The charts are SVG drawn here rather than a charting library: a line
// chart, a bar chart and a timeline are some 150 lines, need no script,
// and render before any script runs.

// Chart geometry, in SVG user units.
const (
	chartW, chartH = 640.0, 180.0
	padL, padR     = 56.0, 12.0
	padT, padB     = 12.0, 26.0
)

// line is one series of a line chart.
type line struct {
	name  string
	class string // CSS class: its colour
	ys    []float64
}

// lineChart draws lines over n points of the x axis, oldest left; unit
// formats the y axis' labels.
func lineChart(label string, lines []line, n int, xLeft, xRight string, unit func(float64) string) template.HTML {
	top := 0.0
	for _, l := range lines {
		for _, y := range l.ys {
			top = max(top, y)
		}
	}
	top = niceCeil(top)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`, chartW, chartH, html.EscapeString(label))
	plotW, plotH := chartW-padL-padR, chartH-padT-padB
	for i := 0; i <= 4; i++ { // grid lines and y labels
		y := padT + plotH*float64(i)/4
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, padL, y, chartW-padR, y)
		fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%.1f" text-anchor="end">%s</text>`, padL-6, y+4, html.EscapeString(unit(top*float64(4-i)/4)))
	}
	fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%.1f">%s</text>`, padL, chartH-6, html.EscapeString(xLeft))
	fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%.1f" text-anchor="end">%s</text>`, chartW-padR, chartH-6, html.EscapeString(xRight))
	for li, l := range lines {
		var pts strings.Builder
		for i, y := range l.ys {
			x := padL
			if n > 1 {
				x += plotW * float64(i) / float64(n-1)
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", x, padT+plotH*(1-y/top))
		}
		fmt.Fprintf(&b, `<polyline class="series %s" points="%s"/>`, l.class, strings.TrimSpace(pts.String()))
		fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.1f" width="10" height="10"/><text class="legend" x="%.1f" y="%.1f">%s</text>`,
			l.class, padL+8+float64(li)*90, padT+2, padL+22+float64(li)*90, padT+11, html.EscapeString(l.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // numbers and escaped text only
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for v <= 0).
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func seriesSpan(s apiv1.Series) string {
	return fmt.Sprintf("%d min ago", int64(len(s.Points))*s.IntervalMS/60000)
}

func rateChart(s apiv1.Series) template.HTML {
	ys := make([]float64, len(s.Points))
	for i, p := range s.Points {
		ys[i] = p.PerSec
	}
	return lineChart("tasks finished per second", []line{{"tasks/s", "c1", ys}}, len(ys), seriesSpan(s), "now",
		func(v float64) string { return fmt.Sprintf("%.3g/s", v) })
}

func latencyChart(s apiv1.Series) template.HTML {
	p50, p95, p99 := make([]float64, len(s.Points)), make([]float64, len(s.Points)), make([]float64, len(s.Points))
	for i, p := range s.Points {
		p50[i], p95[i], p99[i] = p.P50MS, p.P95MS, p.P99MS
	}
	return lineChart("latency percentiles of succeeded tasks", []line{{"p50", "c1", p50}, {"p95", "c2", p95}, {"p99", "c3", p99}},
		len(p50), seriesSpan(s), "now", func(v float64) string {
			if v == 0 {
				return "0"
			}
			return fmtMS(v)
		})
}

// queueChart draws the queue depth of each priority level as bars.
func queueChart(depth map[string]int) template.HTML {
	levels := []string{"critical", "high", "normal", "low"}
	top := 0
	for _, l := range levels {
		top = max(top, depth[l])
	}
	const rowH, w = 22.0, 640.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart bars" viewBox="0 0 %.0f %.0f" role="img" aria-label="queue depth per priority level">`, w, rowH*float64(len(levels))+4)
	for i, l := range levels {
		y := 2 + rowH*float64(i)
		bw := 0.0
		if top > 0 {
			bw = (w - 160) * float64(depth[l]) / float64(top)
		}
		fmt.Fprintf(&b, `<text class="axis" x="70" y="%.1f" text-anchor="end">%s</text>`, y+14, l)
		fmt.Fprintf(&b, `<rect class="bar %s" x="80" y="%.1f" width="%.1f" height="%.1f"/>`, l, y+3, max(bw, 1), rowH-6)
		fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%.1f">%d</text>`, 86+max(bw, 1), y+14, depth[l])
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// timelineChart draws a task's attempts as bars over the task's life,
// coloured by how each ended.
func timelineChart(t apiv1.Task, as []apiv1.Attempt) template.HTML {
	if len(as) == 0 {
		return ""
	}
	start := t.CreatedAt
	end := time.Now()
	if t.FinishedAt != nil {
		end = *t.FinishedAt
	}
	for _, a := range as {
		if a.StartedAt.Before(start) {
			start = a.StartedAt
		}
		if a.EndedAt != nil && a.EndedAt.After(end) {
			end = *a.EndedAt
		}
	}
	span := max(end.Sub(start), time.Millisecond)
	const rowH, w, left = 26.0, 1000.0, 150.0
	h := rowH*float64(len(as)) + 22
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart timeline" viewBox="0 0 %.0f %.0f" role="img" aria-label="attempts over time">`, w, h)
	x := func(at time.Time) float64 { return left + (w-left-10)*float64(at.Sub(start))/float64(span) }
	for i, a := range as {
		y := rowH * float64(i)
		stop := end
		if a.EndedAt != nil {
			stop = *a.EndedAt
		}
		x0, x1 := x(a.StartedAt), x(stop)
		fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%.1f" text-anchor="end">#%d %s</text>`, left-8, y+17, a.Number, html.EscapeString(short(a.Node)))
		fmt.Fprintf(&b, `<rect class="attempt %s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s</title></rect>`,
			html.EscapeString(a.Outcome), x0, y+4, max(x1-x0, 2), rowH-8, html.EscapeString(a.Outcome+" on "+a.Node))
	}
	fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%.1f">0</text>`, left, h-4)
	fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%.1f" text-anchor="end">%s</text>`, w-10, h-4, html.EscapeString(fmtMS(float64(span)/float64(time.Millisecond))))
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
