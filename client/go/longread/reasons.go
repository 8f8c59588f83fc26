package longread

import (
	"strings"

	longreadv1 "github.com/longread-dev/longread/client/go/longread/v1"
)

// The ErrorInfo reasons the service returns (ErrorDetails.Reason): the ErrorReason enum's
// names without their prefix. reasons_test.go checks that every enum value has its constant.
const (
	ReasonInvalidField        = "INVALID_FIELD"
	ReasonDocumentTooLarge    = "DOCUMENT_TOO_LARGE"
	ReasonUnknownModel        = "UNKNOWN_MODEL"
	ReasonUnauthenticated     = "UNAUTHENTICATED"
	ReasonRateLimited         = "RATE_LIMITED"
	ReasonBudgetExceeded      = "BUDGET_EXCEEDED"
	ReasonUpstreamUnavailable = "UPSTREAM_UNAVAILABLE"
	ReasonUpstreamRejected    = "UPSTREAM_REJECTED"
	ReasonNotCached           = "NOT_CACHED"
	ReasonDoesNotFit          = "DOES_NOT_FIT"
	ReasonInternal            = "INTERNAL"
	ReasonOverloaded          = "OVERLOADED"
	ReasonDraining            = "DRAINING"
	ReasonMalformedRequest    = "MALFORMED_REQUEST"
	ReasonUpstreamAuthFailed  = "UPSTREAM_AUTH_FAILED"
)

// ReasonOf is the ErrorInfo reason of an ErrorReason value, e.g. "RATE_LIMITED".
func ReasonOf(r longreadv1.ErrorReason) string {
	return strings.TrimPrefix(r.String(), "ERROR_REASON_")
}

// Is reports whether the error's reason is reason (a Reason constant, or ReasonOf a value).
func (d *ErrorDetails) Is(reason string) bool { return d != nil && d.Reason == reason }
