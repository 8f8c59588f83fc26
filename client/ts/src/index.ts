/**
 * Node.js client for longread, the gRPC service that has long documents analysed by LLMs.
 *
 * `LongreadClient` wraps the generated Connect client with what the generated API leaves to
 * the caller (API key, default deadline, collecting a Stream, trace context);
 * `errorDetails` decodes the google.rpc details of a failed call. The generated messages and
 * the `AnalysisService` descriptor are re-exported for everything else.
 *
 * @packageDocumentation
 */
export {
  LongreadClient,
  MAX_MESSAGE_BYTES,
  text,
  type AnalyzeRequestInit,
  type CallOptions,
  type ClientOptions,
  type EstimateRequestInit,
  type StreamRequestInit,
  type StreamResult,
} from "./client.js";
export { DEFAULT_RETRY_POLICY, retryInterceptor, type RetryPolicy } from "./retry.js";
export {
  DOMAIN,
  codeName,
  errorDetails,
  type ErrorDetails,
  type FieldViolation,
  type QuotaViolation,
} from "./errors.js";
export * from "./gen/longread/v1/analysis_service_pb.js";
export * from "./gen/longread/v1/types_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";
// int64 fields (token counts) are `bigint`, which `JSON.stringify` refuses: these give a
// message's canonical proto3 JSON (int64 as strings) and read it back.
export { create, fromJson, toJson, toJsonString } from "@bufbuild/protobuf";
