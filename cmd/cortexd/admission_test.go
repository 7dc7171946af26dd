package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

func TestDaemonAdmissionFollowsTheModeAndTheNetwork(t *testing.T) {
	self, stranger, listed, allowed := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t), test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	cases := []struct {
		name    string
		mode    string
		private bool
		p       peer.ID
		want    skill.PeerClass
	}{
		{"on the public network a new peer is a stranger", config.AdmissionAuto, false, stranger, skill.ClassStranger},
		{"on a private network a new member is known", config.AdmissionAuto, true, stranger, skill.ClassKnown},
		{"strict holds a new member of a private network to the stranger limits", config.AdmissionStrict, true, stranger, skill.ClassStranger},
		{"open makes a new peer on the public network known", config.AdmissionOpen, false, stranger, skill.ClassKnown},
		{"a pre-trusted peer is trusted", config.AdmissionAuto, false, listed, skill.ClassTrusted},
		{"a peer on the allow list is trusted", config.AdmissionAuto, false, allowed, skill.ClassTrusted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Admission.Mode = tc.mode
			cfg.Trust.PreTrusted = []string{listed.String()}
			cfg.Network.AllowPeers = []string{allowed.String()}
			g, err := reputation.NewGraph(self, reputation.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				t.Fatal(err)
			}
			d := &daemon{cfg: &cfg, log: slog.New(slog.DiscardHandler), private: tc.private, trust: g}
			if err := d.buildAdmission(); err != nil {
				t.Fatal(err)
			}
			class, lim := d.admit.PeerAdmission(tc.p)
			if class != tc.want {
				t.Fatalf("class = %v, want %v", class, tc.want)
			}
			wantMax := cfg.Admission.Known.MaxTasks
			if tc.want == skill.ClassStranger {
				wantMax = cfg.Admission.Stranger.MaxTasks
			}
			if lim.MaxTasks != wantMax {
				t.Errorf("max tasks = %d, want %d", lim.MaxTasks, wantMax)
			}
		})
	}
}

func TestPeersTableShowsAdmissionAndUsage(t *testing.T) {
	one := 7
	a := &apiv1.PeerAdmission{Class: apiv1.ClassStranger, Limits: apiv1.PeerLimits{MaxTasks: 2, MaxBytes: 4 << 20},
		Usage: &apiv1.PeerUsage{Tasks: 1, Bytes: 1536 << 10}}
	if got, want := admissionUsage(a), "1/2 tasks, 1.5MiB/4MiB"; got != want {
		t.Errorf("HERE = %q, want %q", got, want)
	}
	a.Usage = nil
	if got, want := admissionUsage(a), "-/2 tasks, -/4MiB"; got != want {
		t.Errorf("HERE without usage = %q, want %q", got, want)
	}
	if got := admissionClass(a); got != "stranger" {
		t.Errorf("CLASS = %q, want stranger", got)
	}
	if admissionClass(nil) != "-" || admissionUsage(nil) != "-" || optInt(nil) != "-" || optInt(&one) != "7" {
		t.Error("a figure the node does not report must read -")
	}
	for n, want := range map[int64]string{0: "0B", 1023: "1023B", 1024: "1KiB", 256 << 20: "256MiB", 3 << 30: "3GiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDevnetNodesAreNotHeldToTheStrangerLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), config.FileName)
	if err := os.WriteFile(path, devnetConfig(1, 3), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admission.Mode != config.AdmissionOpen {
		t.Fatalf("devnet admission.mode = %q, want open: every devnet node is the user's own", cfg.Admission.Mode)
	}
}
