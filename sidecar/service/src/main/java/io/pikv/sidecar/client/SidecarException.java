package io.pikv.sidecar.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.nio.charset.StandardCharsets;

/** A sidecar answered with an error status; carries the status, the problem type and its detail. */
public final class SidecarException extends RuntimeException {
    private static final ObjectMapper JSON = new ObjectMapper();

    private final int status;
    private final String type;
    private final String detail;

    public SidecarException(int status, String type, String detail, String message) {
        super(message);
        this.status = status;
        this.type = type;
        this.detail = detail;
    }

    /** Characters of an answer's detail kept in the exception. */
    static final int MAX_DETAIL = 512;

    static SidecarException of(String call, int status, byte[] body) {
        String type = null;
        // Only what the exception keeps is decoded: an answer's body may be large (a proxy's page).
        String detail = new String(body, 0, Math.min(body.length, 4 * MAX_DETAIL), StandardCharsets.UTF_8);
        try {
            JsonNode problem = JSON.readTree(body);
            if (problem != null && problem.isObject()) {
                JsonNode t = problem.get("type");
                type = t != null && t.isTextual() ? t.asText() : null;
                if (problem.has("detail")) {
                    detail = problem.get("detail").asText();
                }
            }
        } catch (java.io.IOException ignored) {
            // not problem+json: keep the raw body as the detail
        }
        if (detail.length() > MAX_DETAIL) {
            // A proxy's error page or a stray body must not travel whole into messages, problems and logs.
            // (A body cut by the client at its limit for error answers was longer still.)
            detail = detail.substring(0, MAX_DETAIL) + "… (" + (body.length == Http1Client.ERROR_BODY_BYTES
                    ? "at least " : "") + body.length + " bytes)";
        }
        return new SidecarException(status, type, detail, call + " → " + status
                + ": " + detail);
    }

    public int status() {
        return status;
    }

    /** The problem type URI ({@code urn:pikv:problem:…}), or null when the body was not problem+json. */
    public String type() {
        return type;
    }

    public String detail() {
        return detail;
    }
}
