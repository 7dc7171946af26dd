package dashboard

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// workflowsPage is how many workflows the list shows.
const workflowsPage = 50

// workflowsData is what the workflow list shows.
type workflowsData struct {
	States    []string
	State     string
	Workflows []workflowRow
}

type workflowRow struct {
	apiv1.Workflow
	Done, Failed int // steps that succeeded; that did not
}

func (h *Handler) workflows(w http.ResponseWriter, r *http.Request) {
	d := &workflowsData{States: apiv1.WorkflowStates, State: r.URL.Query().Get("state")}
	p := &page{Title: "Workflows", Nav: "workflows", Events: "/v1/events?types=workflow", Data: d}
	if d.State != "" && !slices.Contains(apiv1.WorkflowStates, d.State) {
		p.Status, p.Err, d.State = http.StatusBadRequest, fmt.Sprintf("state %q is not a workflow state: pick one of the list", d.State), ""
	}
	v := url.Values{"limit": {strconv.Itoa(workflowsPage)}}
	if d.State != "" {
		v.Set("state", d.State)
	}
	var list apiv1.WorkflowList
	if err := h.f.Fetch(r.Context(), "/v1/workflows?"+v.Encode(), &list); err != nil {
		h.fail(w, r, "workflows", p, err)
		return
	}
	for _, wf := range list.Workflows {
		row := workflowRow{Workflow: wf}
		for _, s := range wf.Steps {
			switch {
			case s.State == apiv1.StateSucceeded:
				row.Done++
			case apiv1.Terminal(s.State):
				row.Failed++
			}
		}
		d.Workflows = append(d.Workflows, row)
	}
	h.render(w, r, "workflows", p)
}

// workflowData is what a workflow's page shows.
type workflowData struct {
	Workflow apiv1.Workflow
	Self     string
}

func (h *Handler) workflow(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p := &page{Title: "Workflow " + short(id), Nav: "workflows"}
	d := &workflowData{}
	var self apiv1.Identity
	for _, err := range []error{
		h.f.Fetch(r.Context(), "/v1/workflows/"+url.PathEscape(id), &d.Workflow),
		h.f.Fetch(r.Context(), "/v1/id", &self),
	} {
		if err != nil {
			h.fail(w, r, "workflow", p, err)
			return
		}
	}
	d.Self = self.ID
	if d.Workflow.Name != "" {
		p.Title = "Workflow " + d.Workflow.Name
	}
	if d.Workflow.State == apiv1.WorkflowRunning {
		// Its steps' task events and its own; the page refetches on each.
		p.Events = "/v1/events?types=task,progress,workflow"
	}
	p.Data = d
	h.render(w, r, "workflow", p)
}
