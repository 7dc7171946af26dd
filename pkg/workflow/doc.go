// Package workflow runs task chains and workflows on a delegation
// coordinator, through its public task API only.
//
// A workflow (Spec, read by Parse from YAML or JSON) is a set of named
// steps, each a task, with the steps it depends on: a DAG, checked at
// submit (UnknownStepError, CycleError). The Engine chooses every step's
// task ID when the workflow is submitted and submits a step once the steps
// it depends on have succeeded, with an input built from their outputs
// (see Combine); steps run in parallel where the graph allows. A step whose
// dependency failed, timed out or was canceled ends
// skill.StateDependencyFailed and is never submitted. A chained task
// (Engine.SubmitChained) is a task that waits for another's output.
//
// With a Store, the engine writes each workflow's spec when it is
// submitted and its progress behind; at Start it rebuilds its state from
// those records and the coordinator's tasks (found by their chosen IDs),
// so a workflow survives a kill -9 of the daemon.
//
// The engine's Task* methods are the coordinator's, with the tasks it
// holds back (skill.StateWaiting) or never submitted folded in: the API
// serves /v1/tasks through them.
package workflow
