package config

import (
	"errors"
	"strings"
	"testing"
)

func TestConfigAdmissionErrors(t *testing.T) {
	cases := []struct {
		name  string
		file  string
		env   map[string]string
		wants []string // each must appear in the error
	}{
		{
			name:  "a moved per-peer key in the file names its replacement",
			file:  "tasks:\n  peer_rate_limit: 100\n  max_in_flight_per_peer: 8\n",
			wants: []string{"tasks.peer_rate_limit", "moved to admission.known.rate", "tasks.max_in_flight_per_peer", "moved to admission.known.max_tasks"},
		},
		{
			name:  "a moved per-peer key in the environment names the new variable",
			env:   map[string]string{"CORTEXD_TASKS_PEER_BURST": "10"},
			wants: []string{"$CORTEXD_TASKS_PEER_BURST", "admission.known.burst", "$CORTEXD_ADMISSION_KNOWN_BURST"},
		},
		{
			name:  "a misspelt admission key is named with a suggestion",
			file:  "admission:\n  stranger:\n    max_task: 3\n",
			wants: []string{"admission.stranger.max_task: unknown key", "did you mean admission.stranger.max_tasks?"},
		},
		{
			name:  "an unknown mode names the choices",
			file:  "admission:\n  mode: lax\n",
			wants: []string{"admission.mode: must be one of auto, strict, open"},
		},
		{
			name:  "a known trust at neutral would make every stranger known",
			file:  "admission:\n  known_trust: 0.5\n",
			wants: []string{"admission.known_trust: must be above trust.neutral (0.5)"},
		},
		{
			name:  "a known trust below the accept threshold is refused",
			file:  "trust:\n  accept_threshold: 0.8\nadmission:\n  known_trust: 0.7\n",
			wants: []string{"admission.known_trust: must not be below trust.accept_threshold (0.8)"},
		},
		{
			name:  "a stranger allowed more than a known peer is refused",
			file:  "admission:\n  stranger:\n    max_tasks: 5000\n    max_bytes: 1073741824\n",
			wants: []string{"admission.stranger.max_tasks: must not exceed admission.known.max_tasks (4096)", "admission.stranger.max_bytes"},
		},
		{
			name:  "an unlimited stranger rate under a limited known rate is refused",
			file:  "admission:\n  stranger:\n    rate: 0\n",
			wants: []string{"admission.stranger.rate: must not exceed admission.known.rate"},
		},
		{
			name:  "a rate without a burst names the burst",
			file:  "admission:\n  known:\n    burst: 0\n",
			wants: []string{"admission.known.burst: must be at least 1"},
		},
		{
			name:  "bad limits each name their key",
			file:  "admission:\n  stranger:\n    rate: -1\n    max_tasks: 0\n    max_bytes: 0\n",
			wants: []string{"admission.stranger.rate: must be a number", "admission.stranger.max_tasks: must be at least 1", "admission.stranger.max_bytes: must be at least 1 byte"},
		},
		{
			name:  "a node budget below a known peer's is refused",
			file:  "admission:\n  node_max_bytes: 1048576\n",
			wants: []string{"admission.node_max_bytes: must be at least admission.known.max_bytes (268435456)"},
		},
		{
			name:  "a bad limit from the environment names the variable",
			env:   map[string]string{"CORTEXD_ADMISSION_STRANGER_MAX_TASKS": "0"},
			wants: []string{"admission.stranger.max_tasks", "(set by $CORTEXD_ADMISSION_STRANGER_MAX_TASKS)"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := Load(writeConfig(t, tc.file), nil)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigAdmissionKeysLoad(t *testing.T) {
	t.Setenv("CORTEXD_ADMISSION_STRANGER_MAX_TASKS", "3")
	c, err := Load(writeConfig(t, "admission:\n  mode: strict\n  known_trust: 0.75\n  stranger:\n    rate: 2\n    burst: 4\n    max_bytes: 1048576\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Admission
	want := PeerLimits{Rate: 2, Burst: 4, MaxTasks: 3, MaxBytes: 1 << 20}
	if a.Mode != AdmissionStrict || a.KnownTrust != 0.75 || a.Stranger != want || a.Known != Default().Admission.Known {
		t.Fatalf("admission = %+v; want strict, 0.75, stranger %+v and the default known limits", a, want)
	}
}

func TestConfigMovedKeysAreNotNotedAsUnknownEnv(t *testing.T) {
	if got := UnknownEnv([]string{"CORTEXD_TASKS_PEER_RATE_LIMIT=5"}); len(got) != 0 {
		t.Fatalf("UnknownEnv = %q; Load names the moved key's replacement, so no second note", got)
	}
}
