package command_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/command"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestTheExecutorMapsErrorsToCodes runs command skills through a
// skill.Executor, as the daemon does, and checks each outcome's code.
func TestTheExecutorMapsErrorsToCodes(t *testing.T) {
	schema := filepath.Join(t.TempDir(), "schema.json")
	if err := os.WriteFile(schema, []byte(`{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	specs := []command.Spec{
		{Name: "cmd.upper", Version: "1.0.0", Argv: sh("tr a-z A-Z")},
		{Name: "cmd.fail", Argv: sh("echo 'no such record' >&2; exit 4")},
		{Name: "cmd.flood", Argv: []string{"yes"}, MaxOutput: 4096},
		{Name: "cmd.hang", Argv: sh(`trap "" TERM; sleep 1000`)},
		{Name: "cmd.json", Argv: []string{"cat"}, SchemaFile: schema},
	}
	reg := skill.NewRegistry()
	for _, sp := range specs {
		if err := reg.Register(newSkill(t, sp)); err != nil {
			t.Fatal(err)
		}
	}
	ex, err := skill.NewExecutor(reg, peer.ID("self"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		skill   string
		in      skill.SkillInput
		timeout time.Duration
		code    grid.ErrorCode
		want    string // in the output on success, in the error otherwise
	}{
		{name: "a success returns stdout", skill: "cmd.upper", in: rawInput("abc"), code: grid.CodeNone, want: "ABC"},
		{name: "a non-zero exit is execution_failed with stderr", skill: "cmd.fail", in: rawInput(""), code: grid.CodeExecutionFailed, want: "exited with code 4; stderr: no such record"},
		{name: "output over the cap is execution_failed", skill: "cmd.flood", in: rawInput(""), code: grid.CodeExecutionFailed, want: "more than 4096 bytes"},
		{name: "the task's deadline is timeout", skill: "cmd.hang", in: rawInput(""), timeout: 300 * time.Millisecond, code: grid.CodeTimeout, want: "deadline"},
		{name: "JSON that fails the schema is invalid_input", skill: "cmd.json", in: jsonInput(t, `{"n":"x"}`), code: grid.CodeInvalidInput, want: "/n"},
		{name: "raw input to a skill with a schema is invalid_input", skill: "cmd.json", in: rawInput(`{"n":1}`), code: grid.CodeInvalidInput, want: "not raw bytes"},
		{name: "JSON that matches the schema reaches the program", skill: "cmd.json", in: jsonInput(t, `{"n":1}`), code: grid.CodeNone, want: `{"n":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := skill.NewSkillTask(reputation.SkillID(tt.skill), tt.in, "")
			task.ID = grid.NewTaskID()
			if tt.timeout > 0 {
				task.WithTimeout(tt.timeout).CreatedAt = time.Now()
			}
			res := ex.Run(context.Background(), task)
			if res.Code != tt.code {
				t.Fatalf("code %s (error %q), want %s", res.Code, res.Error, tt.code)
			}
			got := res.Error
			if tt.code == grid.CodeNone {
				got = string(res.Output)
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want it to contain %q", got, tt.want)
			}
		})
	}
}

func jsonInput(t testing.TB, s string) skill.SkillInput {
	t.Helper()
	in, err := skill.JSONInput(json.RawMessage(s))
	if err != nil {
		t.Fatal(err)
	}
	return in
}
