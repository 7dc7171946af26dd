package apiv1

import "time"

// Workflow states, as Workflow.State reports them.
const (
	WorkflowRunning   = "running"
	WorkflowSucceeded = "succeeded" // every step succeeded
	WorkflowFailed    = "failed"    // a step did not succeed (the others ran as far as they could)
	WorkflowCanceled  = "canceled"
)

// WorkflowStates lists every workflow state.
var WorkflowStates = []string{WorkflowRunning, WorkflowSucceeded, WorkflowFailed, WorkflowCanceled}

// The body of POST /v1/workflows is a workflow spec as JSON: {"name": ...,
// "steps": [{"name": "a", "skill": "echo", "input": ..., "depends_on":
// ["b"], ...}]}, each step taking the fields of a SubmitRequest but
// input_from (see pkg/workflow). The CLI reads YAML and sends it as JSON.

// Workflow is a workflow's status (POST /v1/workflows, GET
// /v1/workflows/{id}, its wait and cancel).
type Workflow struct {
	ID         string         `json:"id"`
	Name       string         `json:"name,omitempty"`
	State      string         `json:"state"`
	CreatedAt  time.Time      `json:"created_at"`
	FinishedAt *time.Time     `json:"finished_at,omitempty"`
	Steps      []WorkflowStep `json:"steps"`
}

// WorkflowStep is one step of a Workflow. TaskID is chosen when the
// workflow is submitted: GET /v1/tasks/{task_id} shows the step's task
// (state waiting until it is submitted) and its result.
type WorkflowStep struct {
	Name      string   `json:"name"`
	Skill     string   `json:"skill"`
	DependsOn []string `json:"depends_on,omitempty"`
	TaskID    string   `json:"task_id"`
	State     string   `json:"state"` // a task state (States)
	Node      string   `json:"node,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// WorkflowEvent is the data of an "event: workflow" of GET /v1/events: a
// change of workflow ID's state (Step empty: its submission and its end)
// or of its step Step (submitted, with its task's state then, or ended).
// A workflow's step events come at most 10 a second (in bursts of 20);
// its own are never dropped for that. A step's task's other changes are
// its "event: task".
type WorkflowEvent struct {
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	State     string `json:"state"` // the workflow's, after the change
	Step      string `json:"step,omitempty"`
	StepState string `json:"step_state,omitempty"`
	TaskID    string `json:"task_id,omitempty"`
	Node      string `json:"node,omitempty"`
	Error     string `json:"error,omitempty"`
}

// WorkflowList is the body of GET /v1/workflows, newest first.
type WorkflowList struct {
	Workflows []Workflow `json:"workflows"`
}

// MaxWorkflowList is the largest limit of GET /v1/workflows.
const MaxWorkflowList = 1000

// Error codes of workflows and chained tasks.
const (
	CodeDependencyFailed = "dependency_failed"  // a chained task or step whose input task did not succeed
	CodeTooManyWorkflows = "too_many_workflows" // workflow.max_workflows are running
)
