/*
 * Shim for the Pub/Sub emulator 0.8.20 jar (Cloud SDK 528.0.0).
 *
 * That jar bundles grpc-core 1.68.1, whose ServerImpl calls
 * InternalStatus.asRuntimeException(Status, Metadata, boolean), but it also
 * carries an older io.grpc.InternalStatus that lacks the method. Every client
 * stream cancellation then dies with NoSuchMethodError in onRstStreamRead()
 * and the dead StreamingPull stream is never unregistered, so messages keep
 * being dealt to it. Putting this class before the jar on the classpath
 * provides both the old and the new method.
 *
 * Compiled by the test harness with `javac --release 8`; never shipped.
 */
package io.grpc;

public final class InternalStatus {
    private InternalStatus() {}

    public static final Metadata.Key<String> MESSAGE_KEY = Status.MESSAGE_KEY;

    public static final Metadata.Key<Status> CODE_KEY = Status.CODE_KEY;

    public static StatusRuntimeException asRuntimeExceptionWithoutStacktrace(
            Status status, Metadata trailers) {
        return new InternalStatusRuntimeException(status, trailers);
    }

    public static StatusRuntimeException asRuntimeException(
            Status status, Metadata trailers, boolean withStackTrace) {
        if (withStackTrace) {
            return new StatusRuntimeException(status, trailers);
        }
        return new InternalStatusRuntimeException(status, trailers);
    }
}
