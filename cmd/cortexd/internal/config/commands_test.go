package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCommandSkillsLoad(t *testing.T) {
	c, err := Load(writeConfig(t, `skills:
  commands:
    - name: text.upper
      version: 1.0.0
      argv: [tr, a-z, A-Z]
      schema_file: upper.json
      timeout: 10s
      max_output: 1MiB
      env: [LANG]
      limits: {memory: 256MiB, cpu_time: 5s, open_files: 64, processes: 100}
      fs: {read_only: [/usr], read_write: [/var/tmp]}
      deny_network: true
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	sp := c.Skills.Commands[0].CommandSpec("/repo")
	if sp.Name != "text.upper" || sp.Timeout != 10*time.Second || sp.MaxOutput != 1<<20 || sp.SchemaFile != "/repo/upper.json" ||
		sp.Limits.Memory != 256<<20 || sp.Limits.CPUTime != 5*time.Second || sp.Limits.OpenFiles != 64 || sp.Limits.Processes != 100 ||
		len(sp.FS.ReadOnly) != 1 || len(sp.FS.ReadWrite) != 1 || !sp.DenyNetwork || len(sp.Env) != 1 {
		t.Fatalf("spec %+v does not match the file", sp)
	}
}

func TestBadCommandSkillsAreNamed(t *testing.T) {
	cases := []struct{ name, item, want string }{
		{name: "a bad name", item: "{name: Bad, version: 1, argv: [true]}", want: "skills.commands[0].name"},
		{name: "a built-in's name", item: "{name: echo, version: 1, argv: [true]}", want: "skills.commands[0].name: \"echo\" is a built-in"},
		{name: "no version", item: "{name: a.b, argv: [true]}", want: "skills.commands[0].version"},
		{name: "no argv", item: "{name: a.b, version: 1}", want: "skills.commands[0].argv"},
		{name: "a bad size", item: "{name: a.b, version: 1, argv: [true], max_output: 1 lot}", want: "skills.commands[0].max_output"},
		{name: "an env value", item: "{name: a.b, version: 1, argv: [true], env: [A=B]}", want: "skills.commands[0].env[0]"},
		{name: "a tiny memory limit", item: "{name: a.b, version: 1, argv: [true], limits: {memory: 1KiB}}", want: "skills.commands[0].limits.memory"},
		{name: "too few open files", item: "{name: a.b, version: 1, argv: [true], limits: {open_files: 2}}", want: "skills.commands[0].limits.open_files"},
		{name: "a relative path", item: "{name: a.b, version: 1, argv: [true], fs: {read_write: [tmp]}}", want: "skills.commands[0].fs.read_write[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, "skills:\n  commands:\n    - "+tc.item+"\n"), nil)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrInvalid naming %s", err, tc.want)
			}
		})
	}
	_, err := Load(writeConfig(t, "skills:\n  commands:\n    - {name: a.b, version: 1, argv: [true]}\n    - {name: a.b, version: 2, argv: [true]}\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "skills.commands[1].name: \"a.b\" is also skills.commands[0]") {
		t.Fatalf("a name twice: %v", err)
	}
}
