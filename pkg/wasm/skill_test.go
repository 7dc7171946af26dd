package wasm

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

func TestSkillRunsThroughTheExecutorWithGridErrorCodes(t *testing.T) {
	e := newEngine(t, Options{})
	reg := skill.NewRegistry()
	add := func(m Manifest, mod []byte) {
		t.Helper()
		if err := reg.Register(NewSkill(compile(t, e, m, mod))); err != nil {
			t.Fatal(err)
		}
	}
	echo := echoModule()
	withSchema := manifestFor("text.echo", echo)
	withSchema.InputSchema = json.RawMessage(`{"type":"object","required":["text"]}`)
	withSchema.Limits.Input = 64
	add(withSchema, echo)
	add(manifestFor("fail.exit", exitModule()), exitModule())
	spin := manifestFor("fail.spin", spinModule())
	spin.Limits.Timeout = Duration(time.Minute)
	add(spin, spinModule())

	ex, err := skill.NewExecutor(reg, "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		skill   string
		input   skill.SkillInput
		timeout time.Duration
		code    grid.ErrorCode
		says    string
	}{
		{name: "a wasm skill's output is the task's output", skill: "text.echo", input: skill.SkillInput{Kind: grid.InputJSON, Data: []byte(`{"text":"hi"}`)}},
		{name: "input failing the manifest's schema is invalid_input before the module runs", skill: "text.echo",
			input: skill.SkillInput{Kind: grid.InputJSON, Data: []byte(`{}`)}, code: grid.CodeInvalidInput, says: "text"},
		{name: "input over the input limit is invalid_input", skill: "text.echo",
			input: skill.RawInput(make([]byte, 65)), code: grid.CodeInvalidInput, says: "over its limit of 64B"},
		{name: "a non-zero exit is execution_failed with stderr", skill: "fail.exit", input: skill.RawInput(nil),
			code: grid.CodeExecutionFailed, says: "exited with code 7 (memory limit 64MiB); stderr: boom"},
		{name: "a module looping past the task's deadline is timeout", skill: "fail.spin", input: skill.RawInput(nil),
			timeout: 200 * time.Millisecond, code: grid.CodeTimeout, says: "deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := skill.NewSkillTask(skillID(tt.skill), tt.input, "")
			if tt.timeout > 0 {
				task.Timeout, task.CreatedAt = tt.timeout, time.Now()
			}
			res := ex.Run(context.Background(), task)
			if tt.code == grid.CodeNone {
				if !res.Success || string(res.Output) != string(tt.input.Data) {
					t.Fatalf("result %+v", res)
				}
				return
			}
			if res.Success || res.Code != tt.code || !strings.Contains(res.Error, tt.says) {
				t.Fatalf("result code %v error %q; want %v saying %q", res.Code, res.Error, tt.code, tt.says)
			}
		})
	}
	d := NewSkill(compile(t, e, withSchema, echo))
	if d.Descriptor().Version != "1.0.0" || d.Module() != ModuleIDOf(echo) {
		t.Fatalf("descriptor %+v module %s", d.Descriptor(), d.Module())
	}
}
