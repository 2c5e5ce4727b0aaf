package io.pikv.kv.compute;

/** No usable CUDA device: the message says why (no driver, no device, PTX not loadable, …). */
public final class CudaUnavailableException extends RuntimeException {
    public CudaUnavailableException(String message, Throwable cause) {
        super(message, cause);
    }
}
