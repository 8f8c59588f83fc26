import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** The ErrorInfo domain of every error the service returns. */
export const DOMAIN = "longread.dev";

/** One invalid request field, e.g. `generation.temperature`. */
export interface FieldViolation {
  field: string;
  description: string;
  reason: string;
}

/** One exhausted limit. */
export interface QuotaViolation {
  subject: string;
  description: string;
}

/** The decoded google.rpc status of a failed call. */
export interface ErrorDetails {
  /** The gRPC status code. */
  code: Code;
  /** Its canonical name: "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", ... */
  codeName: string;
  /** The server's message. */
  message: string;
  /** ErrorInfo reason, an ErrorReason name without its prefix ("INVALID_FIELD", "RATE_LIMITED"). */
  reason: string;
  /** ErrorInfo domain ("longread.dev"). */
  domain: string;
  /** ErrorInfo metadata. */
  metadata: Record<string, string>;
  /** BadRequest field violations (INVALID_ARGUMENT), all of them at once. */
  fieldViolations: FieldViolation[];
  /** RetryInfo delay in milliseconds, when the server sent one. */
  retryDelayMs?: number;
  /** QuotaFailure violations (RESOURCE_EXHAUSTED). */
  quotaViolations: QuotaViolation[];
}

const CODE_NAMES: Record<Code, string> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/** The canonical gRPC name of a status code ("DEADLINE_EXCEEDED"). */
export function codeName(code: Code): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

/**
 * Decodes the rich status a failed call carries (ErrorInfo, BadRequest, RetryInfo,
 * QuotaFailure). Returns undefined for anything that is not a ConnectError.
 */
export function errorDetails(err: unknown): ErrorDetails | undefined {
  if (!(err instanceof ConnectError)) {
    return undefined;
  }
  const out: ErrorDetails = {
    code: err.code,
    codeName: codeName(err.code),
    message: err.rawMessage,
    reason: "",
    domain: "",
    metadata: {},
    fieldViolations: [],
    quotaViolations: [],
  };
  const [info] = err.findDetails(ErrorInfoSchema);
  if (info) {
    out.reason = info.reason;
    out.domain = info.domain;
    out.metadata = { ...info.metadata };
  }
  for (const br of err.findDetails(BadRequestSchema)) {
    for (const v of br.fieldViolations) {
      out.fieldViolations.push({ field: v.field, description: v.description, reason: v.reason });
    }
  }
  const [retry] = err.findDetails(RetryInfoSchema);
  if (retry?.retryDelay) {
    out.retryDelayMs =
      Number(retry.retryDelay.seconds) * 1000 + retry.retryDelay.nanos / 1_000_000;
  }
  for (const qf of err.findDetails(QuotaFailureSchema)) {
    for (const v of qf.violations) {
      out.quotaViolations.push({ subject: v.subject, description: v.description });
    }
  }
  return out;
}
