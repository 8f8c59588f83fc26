package longread

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of every error the service returns.
const Domain = "longread.dev"

// FieldViolation is one invalid request field, e.g. "generation.temperature".
type FieldViolation struct {
	Field       string
	Description string
	Reason      string
}

// QuotaViolation is one exhausted limit.
type QuotaViolation struct {
	Subject     string
	Description string
}

// ErrorDetails is the decoded google.rpc status of a failed call.
type ErrorDetails struct {
	Code    codes.Code
	Message string
	// Reason and Domain come from ErrorInfo; Reason is an ErrorReason name without its
	// prefix, e.g. "INVALID_FIELD", "RATE_LIMITED".
	Reason   string
	Domain   string
	Metadata map[string]string
	// FieldViolations come from BadRequest (INVALID_ARGUMENT), all of them at once.
	FieldViolations []FieldViolation
	// RetryDelay comes from RetryInfo; HasRetryDelay tells whether the server sent one.
	RetryDelay    time.Duration
	HasRetryDelay bool
	// QuotaViolations come from QuotaFailure (RESOURCE_EXHAUSTED).
	QuotaViolations []QuotaViolation
}

// Details decodes err's gRPC status and its details; ok is false when err is nil or not a
// gRPC status error.
func Details(err error) (d *ErrorDetails, ok bool) {
	if err == nil {
		return nil, false
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil, false
	}
	d = &ErrorDetails{Code: st.Code(), Message: st.Message(), Metadata: map[string]string{}}
	for _, det := range st.Details() {
		switch v := det.(type) {
		case *errdetails.ErrorInfo:
			d.Reason, d.Domain = v.GetReason(), v.GetDomain()
			for k, val := range v.GetMetadata() {
				d.Metadata[k] = val
			}
		case *errdetails.BadRequest:
			for _, fv := range v.GetFieldViolations() {
				d.FieldViolations = append(d.FieldViolations,
					FieldViolation{Field: fv.GetField(), Description: fv.GetDescription(), Reason: fv.GetReason()})
			}
		case *errdetails.RetryInfo:
			d.RetryDelay, d.HasRetryDelay = v.GetRetryDelay().AsDuration(), true
		case *errdetails.QuotaFailure:
			for _, qv := range v.GetViolations() {
				d.QuotaViolations = append(d.QuotaViolations,
					QuotaViolation{Subject: qv.GetSubject(), Description: qv.GetDescription()})
			}
		}
	}
	return d, true
}
