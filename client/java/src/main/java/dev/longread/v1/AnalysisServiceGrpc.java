package dev.longread.v1;

import static io.grpc.MethodDescriptor.generateFullMethodName;

/**
 * <pre>
 * Analyses long documents with LLMs: plans the work, runs it against the
 * configured vendors through caching, rate limits, breakers and retries, and
 * reports usage and cost.
 * Errors are google.rpc.Status values with an ErrorInfo detail (domain
 * "longread.dev", reason from ErrorReason) and, where they apply, BadRequest
 * field violations, RetryInfo and QuotaFailure.
 * </pre>
 */
@io.grpc.stub.annotations.GrpcGenerated
public final class AnalysisServiceGrpc {

  private AnalysisServiceGrpc() {}

  public static final java.lang.String SERVICE_NAME = "longread.v1.AnalysisService";

  // Static method descriptors that strictly reflect the proto.
  private static volatile io.grpc.MethodDescriptor<dev.longread.v1.EstimateRequest,
      dev.longread.v1.EstimateResponse> getEstimateMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Estimate",
      requestType = dev.longread.v1.EstimateRequest.class,
      responseType = dev.longread.v1.EstimateResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.longread.v1.EstimateRequest,
      dev.longread.v1.EstimateResponse> getEstimateMethod() {
    io.grpc.MethodDescriptor<dev.longread.v1.EstimateRequest, dev.longread.v1.EstimateResponse> getEstimateMethod;
    if ((getEstimateMethod = AnalysisServiceGrpc.getEstimateMethod) == null) {
      synchronized (AnalysisServiceGrpc.class) {
        if ((getEstimateMethod = AnalysisServiceGrpc.getEstimateMethod) == null) {
          AnalysisServiceGrpc.getEstimateMethod = getEstimateMethod =
              io.grpc.MethodDescriptor.<dev.longread.v1.EstimateRequest, dev.longread.v1.EstimateResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Estimate"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.longread.v1.EstimateRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.longread.v1.EstimateResponse.getDefaultInstance()))
              .setSchemaDescriptor(new AnalysisServiceMethodDescriptorSupplier("Estimate"))
              .build();
        }
      }
    }
    return getEstimateMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.longread.v1.AnalyzeRequest,
      dev.longread.v1.AnalyzeResponse> getAnalyzeMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Analyze",
      requestType = dev.longread.v1.AnalyzeRequest.class,
      responseType = dev.longread.v1.AnalyzeResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<dev.longread.v1.AnalyzeRequest,
      dev.longread.v1.AnalyzeResponse> getAnalyzeMethod() {
    io.grpc.MethodDescriptor<dev.longread.v1.AnalyzeRequest, dev.longread.v1.AnalyzeResponse> getAnalyzeMethod;
    if ((getAnalyzeMethod = AnalysisServiceGrpc.getAnalyzeMethod) == null) {
      synchronized (AnalysisServiceGrpc.class) {
        if ((getAnalyzeMethod = AnalysisServiceGrpc.getAnalyzeMethod) == null) {
          AnalysisServiceGrpc.getAnalyzeMethod = getAnalyzeMethod =
              io.grpc.MethodDescriptor.<dev.longread.v1.AnalyzeRequest, dev.longread.v1.AnalyzeResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Analyze"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.longread.v1.AnalyzeRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.longread.v1.AnalyzeResponse.getDefaultInstance()))
              .setSchemaDescriptor(new AnalysisServiceMethodDescriptorSupplier("Analyze"))
              .build();
        }
      }
    }
    return getAnalyzeMethod;
  }

  private static volatile io.grpc.MethodDescriptor<dev.longread.v1.StreamRequest,
      dev.longread.v1.StreamResponse> getStreamMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Stream",
      requestType = dev.longread.v1.StreamRequest.class,
      responseType = dev.longread.v1.StreamResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
  public static io.grpc.MethodDescriptor<dev.longread.v1.StreamRequest,
      dev.longread.v1.StreamResponse> getStreamMethod() {
    io.grpc.MethodDescriptor<dev.longread.v1.StreamRequest, dev.longread.v1.StreamResponse> getStreamMethod;
    if ((getStreamMethod = AnalysisServiceGrpc.getStreamMethod) == null) {
      synchronized (AnalysisServiceGrpc.class) {
        if ((getStreamMethod = AnalysisServiceGrpc.getStreamMethod) == null) {
          AnalysisServiceGrpc.getStreamMethod = getStreamMethod =
              io.grpc.MethodDescriptor.<dev.longread.v1.StreamRequest, dev.longread.v1.StreamResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Stream"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.longread.v1.StreamRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  dev.longread.v1.StreamResponse.getDefaultInstance()))
              .setSchemaDescriptor(new AnalysisServiceMethodDescriptorSupplier("Stream"))
              .build();
        }
      }
    }
    return getStreamMethod;
  }

  /**
   * Creates a new async stub that supports all call types for the service
   */
  public static AnalysisServiceStub newStub(io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<AnalysisServiceStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<AnalysisServiceStub>() {
        @java.lang.Override
        public AnalysisServiceStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new AnalysisServiceStub(channel, callOptions);
        }
      };
    return AnalysisServiceStub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports all types of calls on the service
   */
  public static AnalysisServiceBlockingV2Stub newBlockingV2Stub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<AnalysisServiceBlockingV2Stub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<AnalysisServiceBlockingV2Stub>() {
        @java.lang.Override
        public AnalysisServiceBlockingV2Stub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new AnalysisServiceBlockingV2Stub(channel, callOptions);
        }
      };
    return AnalysisServiceBlockingV2Stub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports unary and streaming output calls on the service
   */
  public static AnalysisServiceBlockingStub newBlockingStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<AnalysisServiceBlockingStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<AnalysisServiceBlockingStub>() {
        @java.lang.Override
        public AnalysisServiceBlockingStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new AnalysisServiceBlockingStub(channel, callOptions);
        }
      };
    return AnalysisServiceBlockingStub.newStub(factory, channel);
  }

  /**
   * Creates a new ListenableFuture-style stub that supports unary calls on the service
   */
  public static AnalysisServiceFutureStub newFutureStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<AnalysisServiceFutureStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<AnalysisServiceFutureStub>() {
        @java.lang.Override
        public AnalysisServiceFutureStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new AnalysisServiceFutureStub(channel, callOptions);
        }
      };
    return AnalysisServiceFutureStub.newStub(factory, channel);
  }

  /**
   * <pre>
   * Analyses long documents with LLMs: plans the work, runs it against the
   * configured vendors through caching, rate limits, breakers and retries, and
   * reports usage and cost.
   * Errors are google.rpc.Status values with an ErrorInfo detail (domain
   * "longread.dev", reason from ErrorReason) and, where they apply, BadRequest
   * field violations, RetryInfo and QuotaFailure.
   * </pre>
   */
  public interface AsyncService {

    /**
     * <pre>
     * Counts tokens, plans the chunks, lists the models that fit and estimates
     * the cost. Never calls a model.
     * </pre>
     */
    default void estimate(dev.longread.v1.EstimateRequest request,
        io.grpc.stub.StreamObserver<dev.longread.v1.EstimateResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getEstimateMethod(), responseObserver);
    }

    /**
     * <pre>
     * Runs the analysis and returns the result with usage and cost.
     * </pre>
     */
    default void analyze(dev.longread.v1.AnalyzeRequest request,
        io.grpc.stub.StreamObserver<dev.longread.v1.AnalyzeResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getAnalyzeMethod(), responseObserver);
    }

    /**
     * <pre>
     * Runs the same job as Analyze, streaming the plan, chunk progress and
     * answer tokens; the last message carries the result Analyze would return.
     * </pre>
     */
    default void stream(dev.longread.v1.StreamRequest request,
        io.grpc.stub.StreamObserver<dev.longread.v1.StreamResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getStreamMethod(), responseObserver);
    }
  }

  /**
   * Base class for the server implementation of the service AnalysisService.
   * <pre>
   * Analyses long documents with LLMs: plans the work, runs it against the
   * configured vendors through caching, rate limits, breakers and retries, and
   * reports usage and cost.
   * Errors are google.rpc.Status values with an ErrorInfo detail (domain
   * "longread.dev", reason from ErrorReason) and, where they apply, BadRequest
   * field violations, RetryInfo and QuotaFailure.
   * </pre>
   */
  public static abstract class AnalysisServiceImplBase
      implements io.grpc.BindableService, AsyncService {

    @java.lang.Override public final io.grpc.ServerServiceDefinition bindService() {
      return AnalysisServiceGrpc.bindService(this);
    }
  }

  /**
   * A stub to allow clients to do asynchronous rpc calls to service AnalysisService.
   * <pre>
   * Analyses long documents with LLMs: plans the work, runs it against the
   * configured vendors through caching, rate limits, breakers and retries, and
   * reports usage and cost.
   * Errors are google.rpc.Status values with an ErrorInfo detail (domain
   * "longread.dev", reason from ErrorReason) and, where they apply, BadRequest
   * field violations, RetryInfo and QuotaFailure.
   * </pre>
   */
  public static final class AnalysisServiceStub
      extends io.grpc.stub.AbstractAsyncStub<AnalysisServiceStub> {
    private AnalysisServiceStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected AnalysisServiceStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new AnalysisServiceStub(channel, callOptions);
    }

    /**
     * <pre>
     * Counts tokens, plans the chunks, lists the models that fit and estimates
     * the cost. Never calls a model.
     * </pre>
     */
    public void estimate(dev.longread.v1.EstimateRequest request,
        io.grpc.stub.StreamObserver<dev.longread.v1.EstimateResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getEstimateMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Runs the analysis and returns the result with usage and cost.
     * </pre>
     */
    public void analyze(dev.longread.v1.AnalyzeRequest request,
        io.grpc.stub.StreamObserver<dev.longread.v1.AnalyzeResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getAnalyzeMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Runs the same job as Analyze, streaming the plan, chunk progress and
     * answer tokens; the last message carries the result Analyze would return.
     * </pre>
     */
    public void stream(dev.longread.v1.StreamRequest request,
        io.grpc.stub.StreamObserver<dev.longread.v1.StreamResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncServerStreamingCall(
          getChannel().newCall(getStreamMethod(), getCallOptions()), request, responseObserver);
    }
  }

  /**
   * A stub to allow clients to do synchronous rpc calls to service AnalysisService.
   * <pre>
   * Analyses long documents with LLMs: plans the work, runs it against the
   * configured vendors through caching, rate limits, breakers and retries, and
   * reports usage and cost.
   * Errors are google.rpc.Status values with an ErrorInfo detail (domain
   * "longread.dev", reason from ErrorReason) and, where they apply, BadRequest
   * field violations, RetryInfo and QuotaFailure.
   * </pre>
   */
  public static final class AnalysisServiceBlockingV2Stub
      extends io.grpc.stub.AbstractBlockingStub<AnalysisServiceBlockingV2Stub> {
    private AnalysisServiceBlockingV2Stub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected AnalysisServiceBlockingV2Stub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new AnalysisServiceBlockingV2Stub(channel, callOptions);
    }

    /**
     * <pre>
     * Counts tokens, plans the chunks, lists the models that fit and estimates
     * the cost. Never calls a model.
     * </pre>
     */
    public dev.longread.v1.EstimateResponse estimate(dev.longread.v1.EstimateRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getEstimateMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Runs the analysis and returns the result with usage and cost.
     * </pre>
     */
    public dev.longread.v1.AnalyzeResponse analyze(dev.longread.v1.AnalyzeRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getAnalyzeMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Runs the same job as Analyze, streaming the plan, chunk progress and
     * answer tokens; the last message carries the result Analyze would return.
     * </pre>
     */
    @io.grpc.ExperimentalApi("https://github.com/grpc/grpc-java/issues/10918")
    public io.grpc.stub.BlockingClientCall<?, dev.longread.v1.StreamResponse>
        stream(dev.longread.v1.StreamRequest request) {
      return io.grpc.stub.ClientCalls.blockingV2ServerStreamingCall(
          getChannel(), getStreamMethod(), getCallOptions(), request);
    }
  }

  /**
   * A stub to allow clients to do limited synchronous rpc calls to service AnalysisService.
   * <pre>
   * Analyses long documents with LLMs: plans the work, runs it against the
   * configured vendors through caching, rate limits, breakers and retries, and
   * reports usage and cost.
   * Errors are google.rpc.Status values with an ErrorInfo detail (domain
   * "longread.dev", reason from ErrorReason) and, where they apply, BadRequest
   * field violations, RetryInfo and QuotaFailure.
   * </pre>
   */
  public static final class AnalysisServiceBlockingStub
      extends io.grpc.stub.AbstractBlockingStub<AnalysisServiceBlockingStub> {
    private AnalysisServiceBlockingStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected AnalysisServiceBlockingStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new AnalysisServiceBlockingStub(channel, callOptions);
    }

    /**
     * <pre>
     * Counts tokens, plans the chunks, lists the models that fit and estimates
     * the cost. Never calls a model.
     * </pre>
     */
    public dev.longread.v1.EstimateResponse estimate(dev.longread.v1.EstimateRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getEstimateMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Runs the analysis and returns the result with usage and cost.
     * </pre>
     */
    public dev.longread.v1.AnalyzeResponse analyze(dev.longread.v1.AnalyzeRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getAnalyzeMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Runs the same job as Analyze, streaming the plan, chunk progress and
     * answer tokens; the last message carries the result Analyze would return.
     * </pre>
     */
    public java.util.Iterator<dev.longread.v1.StreamResponse> stream(
        dev.longread.v1.StreamRequest request) {
      return io.grpc.stub.ClientCalls.blockingServerStreamingCall(
          getChannel(), getStreamMethod(), getCallOptions(), request);
    }
  }

  /**
   * A stub to allow clients to do ListenableFuture-style rpc calls to service AnalysisService.
   * <pre>
   * Analyses long documents with LLMs: plans the work, runs it against the
   * configured vendors through caching, rate limits, breakers and retries, and
   * reports usage and cost.
   * Errors are google.rpc.Status values with an ErrorInfo detail (domain
   * "longread.dev", reason from ErrorReason) and, where they apply, BadRequest
   * field violations, RetryInfo and QuotaFailure.
   * </pre>
   */
  public static final class AnalysisServiceFutureStub
      extends io.grpc.stub.AbstractFutureStub<AnalysisServiceFutureStub> {
    private AnalysisServiceFutureStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected AnalysisServiceFutureStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new AnalysisServiceFutureStub(channel, callOptions);
    }

    /**
     * <pre>
     * Counts tokens, plans the chunks, lists the models that fit and estimates
     * the cost. Never calls a model.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.longread.v1.EstimateResponse> estimate(
        dev.longread.v1.EstimateRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getEstimateMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Runs the analysis and returns the result with usage and cost.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<dev.longread.v1.AnalyzeResponse> analyze(
        dev.longread.v1.AnalyzeRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getAnalyzeMethod(), getCallOptions()), request);
    }
  }

  private static final int METHODID_ESTIMATE = 0;
  private static final int METHODID_ANALYZE = 1;
  private static final int METHODID_STREAM = 2;

  private static final class MethodHandlers<Req, Resp> implements
      io.grpc.stub.ServerCalls.UnaryMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ServerStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ClientStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.BidiStreamingMethod<Req, Resp> {
    private final AsyncService serviceImpl;
    private final int methodId;

    MethodHandlers(AsyncService serviceImpl, int methodId) {
      this.serviceImpl = serviceImpl;
      this.methodId = methodId;
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public void invoke(Req request, io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        case METHODID_ESTIMATE:
          serviceImpl.estimate((dev.longread.v1.EstimateRequest) request,
              (io.grpc.stub.StreamObserver<dev.longread.v1.EstimateResponse>) responseObserver);
          break;
        case METHODID_ANALYZE:
          serviceImpl.analyze((dev.longread.v1.AnalyzeRequest) request,
              (io.grpc.stub.StreamObserver<dev.longread.v1.AnalyzeResponse>) responseObserver);
          break;
        case METHODID_STREAM:
          serviceImpl.stream((dev.longread.v1.StreamRequest) request,
              (io.grpc.stub.StreamObserver<dev.longread.v1.StreamResponse>) responseObserver);
          break;
        default:
          throw new AssertionError();
      }
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public io.grpc.stub.StreamObserver<Req> invoke(
        io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        default:
          throw new AssertionError();
      }
    }
  }

  public static final io.grpc.ServerServiceDefinition bindService(AsyncService service) {
    return io.grpc.ServerServiceDefinition.builder(getServiceDescriptor())
        .addMethod(
          getEstimateMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              dev.longread.v1.EstimateRequest,
              dev.longread.v1.EstimateResponse>(
                service, METHODID_ESTIMATE)))
        .addMethod(
          getAnalyzeMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              dev.longread.v1.AnalyzeRequest,
              dev.longread.v1.AnalyzeResponse>(
                service, METHODID_ANALYZE)))
        .addMethod(
          getStreamMethod(),
          io.grpc.stub.ServerCalls.asyncServerStreamingCall(
            new MethodHandlers<
              dev.longread.v1.StreamRequest,
              dev.longread.v1.StreamResponse>(
                service, METHODID_STREAM)))
        .build();
  }

  private static abstract class AnalysisServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoFileDescriptorSupplier, io.grpc.protobuf.ProtoServiceDescriptorSupplier {
    AnalysisServiceBaseDescriptorSupplier() {}

    @java.lang.Override
    public com.google.protobuf.Descriptors.FileDescriptor getFileDescriptor() {
      return dev.longread.v1.AnalysisServiceProto.getDescriptor();
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.ServiceDescriptor getServiceDescriptor() {
      return getFileDescriptor().findServiceByName("AnalysisService");
    }
  }

  private static final class AnalysisServiceFileDescriptorSupplier
      extends AnalysisServiceBaseDescriptorSupplier {
    AnalysisServiceFileDescriptorSupplier() {}
  }

  private static final class AnalysisServiceMethodDescriptorSupplier
      extends AnalysisServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoMethodDescriptorSupplier {
    private final java.lang.String methodName;

    AnalysisServiceMethodDescriptorSupplier(java.lang.String methodName) {
      this.methodName = methodName;
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.MethodDescriptor getMethodDescriptor() {
      return getServiceDescriptor().findMethodByName(methodName);
    }
  }

  private static volatile io.grpc.ServiceDescriptor serviceDescriptor;

  public static io.grpc.ServiceDescriptor getServiceDescriptor() {
    io.grpc.ServiceDescriptor result = serviceDescriptor;
    if (result == null) {
      synchronized (AnalysisServiceGrpc.class) {
        result = serviceDescriptor;
        if (result == null) {
          serviceDescriptor = result = io.grpc.ServiceDescriptor.newBuilder(SERVICE_NAME)
              .setSchemaDescriptor(new AnalysisServiceFileDescriptorSupplier())
              .addMethod(getEstimateMethod())
              .addMethod(getAnalyzeMethod())
              .addMethod(getStreamMethod())
              .build();
        }
      }
    }
    return result;
  }
}
