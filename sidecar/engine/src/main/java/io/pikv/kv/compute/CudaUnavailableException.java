package io.pikv.kv.compute;

/** No usable CUDA device: the message says why (no driver, no device, PTX not loadable, …). */
public final class CudaUnavailableException extends RuntimeException {
    private final boolean deviceFound;

    public CudaUnavailableException(String message, Throwable cause) {
        this(message, cause, false);
    }

    /** {@code deviceFound}: the driver reported the device, which could not be used (old driver, old GPU, …). */
    public CudaUnavailableException(String message, Throwable cause, boolean deviceFound) {
        super(message, cause);
        this.deviceFound = deviceFound;
    }

    /** Whether a device was there but could not be used, rather than no driver or no device at all. */
    public boolean deviceFound() {
        return deviceFound;
    }
}
