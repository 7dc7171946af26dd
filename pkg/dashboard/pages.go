package dashboard

import (
	"cmp"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// overviewData is what the overview shows.
type overviewData struct {
	ID         apiv1.Identity
	Metrics    apiv1.Metrics
	Peers      []apiv1.Peer // connected ones
	Reach      reachability
	Rate, Lat  template.HTML // charts
	Queue      template.HTML
	Window     string
	LastRate   float64
	QueueTotal int
	Finished   uint64 // tasks with an outcome: a success rate means something
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Overview", Nav: "overview", Events: "/v1/events", Refresh: 2000}
	var d overviewData
	var peers []apiv1.Peer
	var series apiv1.Series
	ctx := r.Context()
	for _, err := range []error{
		h.f.Fetch(ctx, "/v1/id", &d.ID),
		h.f.Fetch(ctx, "/v1/metrics", &d.Metrics),
		h.f.Fetch(ctx, "/v1/peers", &peers),
		h.f.Fetch(ctx, "/v1/metrics/series", &series),
	} {
		if err != nil {
			h.fail(w, r, "overview", p, err)
			return
		}
	}
	for _, pe := range peers {
		if pe.Connected {
			d.Peers = append(d.Peers, pe)
		}
	}
	d.Reach = reachOf(d.ID.Addrs)
	d.Finished = d.Metrics.Tasks.Completed + d.Metrics.Tasks.Failed + d.Metrics.Tasks.TimedOut
	d.Rate, d.Lat = rateChart(series), latencyChart(series)
	d.Queue = queueChart(d.Metrics.Queue.Depth)
	for _, n := range d.Metrics.Queue.Depth {
		d.QueueTotal += n
	}
	if n := len(series.Points); n > 0 {
		d.LastRate = series.Points[n-1].PerSec
		d.Window = fmt.Sprintf("the last %d minutes, in %d s steps", int64(n)*series.IntervalMS/60000, series.IntervalMS/1000)
	}
	p.Data = &d
	h.render(w, r, "overview", p)
}

// tasksData is what the task list shows.
type tasksData struct {
	States             []string
	State, Skill, Node string
	Tasks              []apiv1.Task
	Next               string // query of the next page; empty: last page
	Scanned            int
	First              bool
	ScanCapped         bool
	Limit              int
}

// Paging of the task list: a page has pageSize tasks; a filter by skill or
// node reads at most scanLimit tasks of the API's list to fill one.
const (
	pageSize  = 25
	scanLimit = 5000
)

func (h *Handler) tasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := &tasksData{States: apiv1.States, State: q.Get("state"), Skill: strings.TrimSpace(q.Get("skill")),
		Node: strings.TrimSpace(q.Get("node")), First: q.Get("after") == "", Limit: pageSize}
	p := &page{Title: "Tasks", Nav: "tasks", Events: "/v1/events?types=task", Data: d}
	if d.State != "" && !slices.Contains(apiv1.States, d.State) {
		p.Status, p.Err, d.State = http.StatusBadRequest, fmt.Sprintf("state %q is not a task state: pick one of the list", d.State), ""
	}
	after := q.Get("after")
	filtered := d.Skill != "" || d.Node != ""
	for len(d.Tasks) < pageSize && d.Scanned < scanLimit {
		v := url.Values{"limit": {strconv.Itoa(pageSize)}}
		if filtered {
			v.Set("limit", strconv.Itoa(apiv1.MaxListLimit))
		}
		if d.State != "" {
			v.Set("state", d.State)
		}
		if after != "" {
			v.Set("after", after)
		}
		var list apiv1.TaskList
		if err := h.f.Fetch(r.Context(), "/v1/tasks?"+v.Encode(), &list); err != nil {
			h.fail(w, r, "tasks", p, err)
			return
		}
		full := false
		for _, t := range list.Tasks {
			d.Scanned++
			after = t.ID
			if matches(t, d.Skill, d.Node) {
				d.Tasks = append(d.Tasks, t)
				if full = len(d.Tasks) == pageSize; full {
					break
				}
			}
		}
		if list.Next == "" && !full {
			after = ""
			break
		}
	}
	d.ScanCapped = d.Scanned >= scanLimit && after != ""
	if after != "" {
		v := url.Values{"after": {after}}
		for k, s := range map[string]string{"state": d.State, "skill": d.Skill, "node": d.Node} {
			if s != "" {
				v.Set(k, s)
			}
		}
		d.Next = v.Encode()
	}
	h.render(w, r, "tasks", p)
}

// matches reports whether t is of skill (a prefix of its name) and ran on
// node (a part of the ID of a node it was tried on).
func matches(t apiv1.Task, skill, node string) bool {
	if skill != "" && !strings.HasPrefix(t.Skill, skill) {
		return false
	}
	if node == "" {
		return true
	}
	if strings.Contains(t.Node, node) {
		return true
	}
	return slices.ContainsFunc(t.Tried, func(n string) bool { return strings.Contains(n, node) })
}

// taskData is what a task's page shows.
type taskData struct {
	Task     apiv1.Task
	Trace    apiv1.TaskTrace
	Timeline template.HTML
	Self     string
	// Input and output: JSON shown indented, text shown as is, anything
	// else (or too large) as a download.
	InJSON, InText, OutJSON, OutText string
	InDownload, OutDownload          bool
	OutSize                          int
}

func (h *Handler) task(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p := &page{Title: "Task " + short(id), Nav: "tasks"}
	d := &taskData{}
	var self apiv1.Identity
	for _, err := range []error{
		h.f.Fetch(r.Context(), "/v1/tasks/"+url.PathEscape(id), &d.Task),
		h.f.Fetch(r.Context(), "/v1/tasks/"+url.PathEscape(id)+"/trace", &d.Trace),
		h.f.Fetch(r.Context(), "/v1/id", &self),
	} {
		if err != nil {
			h.fail(w, r, "task", p, err)
			return
		}
	}
	d.Self = self.ID
	if !apiv1.Terminal(d.Task.State) {
		p.Events = "/v1/events?task=" + url.QueryEscape(d.Task.ID)
	}
	d.Timeline = timelineChart(d.Task, d.Trace.Attempts)
	if in := d.Trace.Input; in != nil {
		switch {
		case in.JSON != nil:
			d.InJSON = pretty(in.JSON)
		case !in.Truncated && utf8.Valid(in.Base64) && printable(in.Base64):
			d.InText = string(in.Base64)
		}
		d.InDownload = d.InJSON == "" && d.InText == "" && !in.Truncated
	}
	if res := d.Task.Result; res != nil {
		out := res.OutputBytes()
		d.OutSize = len(out)
		switch {
		case res.Output != nil:
			d.OutJSON = pretty(res.Output)
		case len(out) <= maxShown && utf8.Valid(out) && printable(out):
			d.OutText = string(out)
		}
		d.OutDownload = len(out) > 0 && d.OutJSON == "" && d.OutText == ""
	}
	p.Data = d
	h.render(w, r, "task", p)
}

// printable reports whether b is text a page may show: no control
// characters but tabs and line ends.
func printable(b []byte) bool {
	for _, c := range string(b) {
		if c < 0x20 && c != '\n' && c != '\r' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// download serves a task's output (or the input the API kept of it) as a
// file: binary data is never put into a page.
func (h *Handler) download(input bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		var data []byte
		what := "output"
		if input {
			what = "input"
			var tr apiv1.TaskTrace
			if err := h.f.Fetch(r.Context(), "/v1/tasks/"+url.PathEscape(id)+"/trace", &tr); err != nil {
				h.fail(w, r, "task", &page{Title: "Task " + short(id), Nav: "tasks"}, err)
				return
			}
			if tr.Input == nil || tr.Input.Truncated {
				http.Error(w, "the API did not keep this task's whole input (only inputs of at most 16 KiB submitted through it)", http.StatusNotFound)
				return
			}
			data = tr.Input.Base64
			if tr.Input.JSON != nil {
				data = tr.Input.JSON
			}
		} else {
			var t apiv1.Task
			if err := h.f.Fetch(r.Context(), "/v1/tasks/"+url.PathEscape(id), &t); err != nil {
				h.fail(w, r, "task", &page{Title: "Task " + short(id), Nav: "tasks"}, err)
				return
			}
			if t.Result == nil {
				http.Error(w, "the task has no output (yet)", http.StatusNotFound)
				return
			}
			data = t.Result.OutputBytes()
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=\"task-%s-%s.bin\"", tail(id), what))
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		_, _ = w.Write(data)
	}
}

// tail is the last 8 characters of a task ID from the path, which the
// API has found (so it is hex), for a file name.
func tail(id string) string {
	if len(id) > 8 {
		id = id[len(id)-8:]
	}
	return strings.Map(func(c rune) rune {
		if strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return c
		}
		return '_'
	}, id)
}

// peerRow is one peer on the peers page: the API's peer and its trust
// entry.
type peerRow struct {
	apiv1.Peer
	T       apiv1.TrustEntry
	Ratings []rating
	Queued  int
}

type rating struct {
	Skill string
	Value float64
}

func (h *Handler) peers(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Peers", Nav: "peers", Events: "/v1/events?types=peer", Refresh: 5000}
	var peers []apiv1.Peer
	var trust []apiv1.TrustEntry
	for _, err := range []error{h.f.Fetch(r.Context(), "/v1/peers", &peers), h.f.Fetch(r.Context(), "/v1/trust", &trust)} {
		if err != nil {
			h.fail(w, r, "peers", p, err)
			return
		}
	}
	byID := make(map[string]apiv1.TrustEntry, len(trust))
	for _, t := range trust {
		byID[t.Peer] = t
	}
	rows := make([]peerRow, 0, len(peers))
	for _, pe := range peers {
		row := peerRow{Peer: pe, T: byID[pe.ID]}
		for s, v := range row.T.Ratings {
			row.Ratings = append(row.Ratings, rating{s, v})
		}
		slices.SortFunc(row.Ratings, func(a, b rating) int { return cmp.Compare(a.Skill, b.Skill) })
		for _, n := range pe.Load.Queued {
			row.Queued += n
		}
		rows = append(rows, row)
	}
	p.Data = rows
	h.render(w, r, "peers", p)
}

// skillsData is what the skills page shows.
type skillsData struct {
	Skills  []apiv1.Skill
	Levels  []string
	Example map[string]string // skill -> an input to start from
}

// examples are inputs for the built-in skills, to start the form from.
var examples = map[string]string{
	"echo":         `{"hello": "grid"}`,
	"hash.sha256":  `{"data": "` + base64.StdEncoding.EncodeToString([]byte("hello")) + `"}`,
	"debug.sleep":  `{"ms": 2000}`,
	"image.resize": `{"width": 64, "height": 64, "image": "<base64 PNG>"}`,
}

func (h *Handler) skills(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Skills", Nav: "skills", Events: "/v1/events?types=peer"}
	d := &skillsData{Levels: apiv1.PriorityNames, Example: examples}
	if err := h.f.Fetch(r.Context(), "/v1/skills", &d.Skills); err != nil {
		h.fail(w, r, "skills", p, err)
		return
	}
	p.Data = d
	h.render(w, r, "skills", p)
}
