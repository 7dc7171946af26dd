package workflow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cortexgrid/cortexd/pkg/skill"
)

// The engine's task methods are the coordinator's, with the tasks it holds
// back folded in: chained tasks and workflow steps not yet submitted
// (skill.StateWaiting), and those that never will be
// (skill.StateDependencyFailed, or canceled before they were). The API
// serves /v1/tasks through them.

// TaskStatus is the coordinator's Status, or the engine's for a task it
// has not submitted.
func (e *Engine) TaskStatus(id skill.TaskID) (skill.TaskStatus, error) {
	st, err := e.coord.Status(id)
	if err == nil || !errors.Is(err, skill.ErrTaskNotFound) {
		return st, err
	}
	e.mu.Lock()
	s := e.steps[id]
	if s == nil {
		e.mu.Unlock()
		return st, err
	}
	ts, ok := taskStatusLocked(s)
	e.mu.Unlock()
	if !ok { // submitted meanwhile
		return e.coord.Status(id)
	}
	return ts, nil
}

// taskStatusLocked is the status of a step the coordinator does not list:
// false if it is submitted and not finished (the coordinator has it).
func taskStatusLocked(s *step) (skill.TaskStatus, bool) {
	t := &s.task
	ts := skill.TaskStatus{ID: t.ID, Skill: t.Skill, Version: t.Version, Priority: t.Priority,
		CreatedAt: s.r.created, UpdatedAt: s.r.created, Deadline: s.r.created.Add(t.Timeout), Peer: s.node}
	switch {
	case s.state.Terminal():
		ts.State, ts.Error, ts.Err = s.state, s.err, stepErr(s)
		ts.FinishedAt = s.ended
		if ts.FinishedAt.IsZero() { // loaded from the store: the run's end, or its start
			ts.FinishedAt = s.r.finished
			if ts.FinishedAt.IsZero() {
				ts.FinishedAt = s.r.created
			}
		}
		ts.UpdatedAt = ts.FinishedAt
		ts.Result = &skill.SkillResult{TaskID: t.ID, Error: s.err, ExecutedBy: s.node, FinishedAt: ts.FinishedAt, Success: s.state == skill.StateSucceeded}
	case s.submitted:
		return ts, false
	default:
		ts.State = skill.StateWaiting
	}
	return ts, true
}

// stepErr is the error of a finished step, for errors.Is.
func stepErr(s *step) error {
	switch s.state {
	case skill.StateSucceeded:
		return nil
	case skill.StateDependencyFailed:
		return fmt.Errorf("%s: %w", s.err, skill.ErrDependencyFailed)
	case skill.StateCanceled:
		return fmt.Errorf("%s: %w", s.err, skill.ErrCanceled)
	case skill.StateTimedOut:
		return fmt.Errorf("%s: %w", s.err, skill.ErrTimeout)
	}
	if s.cause != nil {
		return s.cause
	}
	return fmt.Errorf("%s: %w", s.err, skill.ErrDelegationFailed)
}

// TaskWait is the coordinator's Wait; for a task the engine holds back it
// waits until the task is submitted first.
func (e *Engine) TaskWait(ctx context.Context, id skill.TaskID) (*skill.SkillResult, error) {
	e.mu.Lock()
	s := e.steps[id]
	e.mu.Unlock()
	if s == nil {
		return e.coord.Wait(ctx, id)
	}
	select {
	case <-s.sent:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for task %s: %w", id.Short(), ctx.Err())
	case <-e.ctx.Done():
		return nil, fmt.Errorf("wait for task %s: %w", id.Short(), ErrClosed)
	}
	res, err := e.coord.Wait(ctx, id)
	if err == nil || !errors.Is(err, skill.ErrTaskNotFound) {
		return res, err
	}
	e.mu.Lock()
	ts, ok := taskStatusLocked(s)
	e.mu.Unlock()
	if !ok {
		return res, err
	}
	return ts.Result, ts.Err
}

// TaskCancel is the coordinator's Cancel; a task the engine holds back
// ends canceled without being submitted.
func (e *Engine) TaskCancel(id skill.TaskID) error {
	e.mu.Lock()
	s := e.steps[id]
	if s == nil || s.submitted {
		e.mu.Unlock()
		return e.coord.Cancel(id)
	}
	if s.state.Terminal() {
		e.mu.Unlock()
		return fmt.Errorf("cancel task %s: %w", id.Short(), skill.ErrTaskFinished)
	}
	s.canceled = true
	if s.started {
		e.mu.Unlock()
		s.stop() // its goroutine ends it, or cancels its task once submitted
		return nil
	}
	s.started = true // never: it ends here
	ready, ws := e.endLocked(s, skill.StateCanceled, "", "canceled before it was submitted")
	if !e.closed { // else they start at the next Start
		for _, x := range ready {
			e.wg.Add(1)
			go e.runSteps(x)
		}
	}
	e.enqueue(ws)
	e.mu.Unlock()
	return nil
}

// waitingStates are the states only the engine reports.
func engineState(st skill.TaskState) bool {
	return st == skill.StateWaiting || st == skill.StateDependencyFailed
}

// TaskList is the coordinator's List with the tasks the engine holds back
// merged in, in the same order (newest first). A page that begins after
// such a task takes the coordinator's tasks from its first
// skill.MaxListLimit only.
func (e *Engine) TaskList(f skill.ListFilter) []skill.TaskStatus {
	limit := f.Limit
	if limit <= 0 {
		limit = skill.DefaultListLimit
	}
	limit = min(limit, skill.MaxListLimit)
	cf := f
	cf.States = slices.DeleteFunc(slices.Clone(f.States), engineState)
	askCoord := len(f.States) == 0 || len(cf.States) > 0

	e.mu.Lock()
	var held []skill.TaskStatus
	var cursor *skill.TaskStatus
	for _, s := range e.held {
		ts, ok := taskStatusLocked(s)
		if !ok {
			continue
		}
		if !f.After.IsZero() && ts.ID == f.After {
			c := ts
			cursor = &c
		}
		if len(f.States) == 0 || slices.Contains(f.States, ts.State) {
			held = append(held, ts)
		}
	}
	e.mu.Unlock()
	if len(held) == 0 && cursor == nil {
		if !askCoord {
			return []skill.TaskStatus{}
		}
		return e.coord.List(cf)
	}
	var coordList []skill.TaskStatus
	if askCoord {
		cf.Offset, cf.Limit = 0, limit+max(f.Offset, 0)
		if cursor != nil {
			cf.After, cf.Limit = skill.TaskID{}, skill.MaxListLimit
		}
		coordList = e.coord.List(cf)
	}
	if cursor == nil && !f.After.IsZero() {
		st, err := e.coord.Status(f.After)
		if err != nil {
			return []skill.TaskStatus{}
		}
		cursor = &st
	}
	all := append(coordList, held...)
	slices.SortFunc(all, compareStatus)
	all = slices.CompactFunc(all, func(a, b skill.TaskStatus) bool { return a.ID == b.ID })
	if cursor != nil {
		i, _ := slices.BinarySearchFunc(all, *cursor, compareStatus)
		for i < len(all) && all[i].ID == cursor.ID {
			i++
		}
		all = all[i:]
	}
	all = all[min(max(f.Offset, 0), len(all)):]
	return all[:min(limit, len(all))]
}

func compareStatus(a, b skill.TaskStatus) int {
	if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
		return c
	}
	return bytes.Compare(a.ID[:], b.ID[:])
}
