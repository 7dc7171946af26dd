package reputation

import (
	"math"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Check is what a requester knows about whether a peer's answer for a
// deterministic skill was right.
type Check int

// Checks.
const (
	// Unchecked: nobody compared the answer with another run.
	Unchecked Check = iota
	// CheckMatched: another run agreed with the answer.
	CheckMatched
	// CheckWrong: a check found the answer wrong.
	CheckWrong
)

// maxCheckWeight caps the weight of one checked answer (1/rate): with a
// tiny rate, one lucky check would otherwise outweigh hours of failures.
const maxCheckWeight = 100

// AnswerEvidence is the one rule for how a peer's answer of a
// deterministic skill counts in trust when a fraction rate, in [0, 1], of
// such answers is spot-checked. It returns the outcome to record and its
// weight, or ok false for no evidence at all.
//
//   - rate 0 (no checks): every answer is a success of weight 1, as nothing
//     better is known.
//   - Unchecked, rate > 0: no evidence. An unchecked answer says nothing
//     about correctness (a liar's answers look like anyone's); counting
//     them as successes lets liars earn trust, and with colluders passing
//     it around global trust then does worse than none.
//   - CheckMatched: a success of weight 1/rate (at most 100), so that an
//     honest peer's expected evidence per answer stays 1, as with rate 0.
//   - CheckWrong: a wrong result of weight 1 (four failures), as any
//     detected wrong answer.
//
// Liveness and latency are not this rule's business: a failure or timeout
// counts as always, and an unchecked answer still counts in metrics.
func AnswerEvidence(rate float64, c Check) (o Outcome, weight float64, ok bool) {
	switch {
	case math.IsNaN(rate) || rate <= 0:
		if c == CheckWrong {
			return OutcomeWrongResult, 1, true
		}
		return OutcomeSuccess, 1, true
	case c == CheckMatched:
		return OutcomeSuccess, min(1/min(rate, 1), maxCheckWeight), true
	case c == CheckWrong:
		return OutcomeWrongResult, 1, true
	}
	return 0, 0, false
}

// RecordAnswer records the evidence that AnswerEvidence gives for an answer
// of p for skill, checked c, under spot checks at rate.
func (g *Graph) RecordAnswer(p peer.ID, skill SkillID, rate float64, c Check) {
	if o, w, ok := AnswerEvidence(rate, c); ok {
		g.record(p, skill, o, w)
	}
}
