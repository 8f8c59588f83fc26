package longread_test

import (
	"strings"
	"testing"

	"github.com/longread-dev/longread/client/go/longread"
	longreadv1 "github.com/longread-dev/longread/client/go/longread/v1"
)

// Every value of the generated enum has its constant, spelled as the server sends it.
func TestEveryErrorReasonHasItsConstant(t *testing.T) {
	constants := map[string]bool{
		longread.ReasonInvalidField: true, longread.ReasonDocumentTooLarge: true,
		longread.ReasonUnknownModel: true, longread.ReasonUnauthenticated: true,
		longread.ReasonRateLimited: true, longread.ReasonBudgetExceeded: true,
		longread.ReasonUpstreamUnavailable: true, longread.ReasonUpstreamRejected: true,
		longread.ReasonNotCached: true, longread.ReasonDoesNotFit: true,
		longread.ReasonInternal: true, longread.ReasonOverloaded: true,
		longread.ReasonDraining: true, longread.ReasonMalformedRequest: true,
		longread.ReasonUpstreamAuthFailed: true,
	}
	for value, name := range longreadv1.ErrorReason_name {
		if value == 0 {
			continue // UNSPECIFIED: never sent
		}
		reason := longread.ReasonOf(longreadv1.ErrorReason(value))
		if reason != strings.TrimPrefix(name, "ERROR_REASON_") || !constants[reason] {
			t.Errorf("ErrorReason %s: no constant %q", name, reason)
		}
		delete(constants, reason)
	}
	for reason := range constants {
		t.Errorf("constant %q names no ErrorReason", reason)
	}
}
