package io.pikv.sidecar.api;

import io.pikv.kv.ModelShape;

/** A create asked for a model shape other than the one this sidecar's cluster holds. */
public final class ModelMismatchException extends RuntimeException {
    public ModelMismatchException(ModelShape asked, ModelShape served) {
        super("this sidecar holds KV of " + served + ", not " + asked);
    }
}
