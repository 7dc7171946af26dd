package command

import (
	"fmt"

	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// Confinement says what Landlock enforces for a skill on this kernel.
type Confinement struct {
	// LandlockABI is the kernel's Landlock ABI version; 0: no Landlock
	// (an old kernel, or not enabled at boot: add "landlock" to the lsm=
	// boot parameter).
	LandlockABI int
	// Filesystem: Spec.FS is enforced. False with FS rules set means the
	// program may use every path the daemon's user may.
	Filesystem bool
	// Network: TCP connect and bind are denied (Spec.DenyNetwork, ABI 4);
	// UDP too from ABI 10 (NetworkUDP).
	Network    bool
	NetworkUDP bool
	// Signals: the program cannot signal processes outside its task, the
	// daemon among them (ABI 6).
	Signals bool
}

// String describes c for a log line.
func (c Confinement) String() string {
	if c.LandlockABI == 0 {
		return "no Landlock on this kernel: no filesystem, network or signal rules"
	}
	return fmt.Sprintf("Landlock ABI %d: filesystem rules %s, network denied %s, signal scope %s",
		c.LandlockABI, onOff(c.Filesystem), netText(c), onOff(c.Signals))
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func netText(c Confinement) string {
	switch {
	case c.NetworkUDP:
		return "on (TCP, UDP)"
	case c.Network:
		return "on (TCP only)"
	}
	return "off"
}

// landlockABI returns the kernel's Landlock ABI version, 0 if none.
func landlockABI() int {
	v, err := llsys.LandlockGetABIVersion()
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// confinement is what Landlock enforces for s at ABI abi.
func confinement(s Spec, abi int) Confinement {
	return Confinement{
		LandlockABI: abi,
		Filesystem:  abi >= 1 && !s.FS.empty(),
		Network:     abi >= 4 && s.DenyNetwork,
		NetworkUDP:  abi >= 10 && s.DenyNetwork,
		Signals:     abi >= 6,
	}
}
