package io.pikv.sidecar.api;

import com.fasterxml.jackson.core.JsonProcessingException;
import io.pikv.kv.KvBudgetExceededException;
import io.pikv.kv.UnknownSequenceException;
import io.pikv.sidecar.BlockStore;
import io.pikv.sidecar.SequenceExistsException;
import io.pikv.sidecar.ShardFailure;
import org.jboss.logging.Logger;

/**
 * What each failure tells a caller, as a {@link Problem}: malformed or invalid input 400, unknown sequence or block
 * 404, conflicts (id taken, budget full with nothing evictable, stale shard map) 409, too large 413, wrong content
 * type 415, a model other than the sidecar's 422, a shard's refusal its 4xx and an unreachable shard 502, KV requests
 * before the control topic was read 503 {@code not-ready}; a request
 * that failed once it began storing and was undone 500 {@code undone}. Anything else is a defect: 500, logged. One
 * table for both ways in: the REST layer's exception mappers ({@link ProblemMappers}) and the binary step routes
 * ({@link BinaryRoutes}).
 */
public final class Problems {
    private static final Logger LOG = Logger.getLogger(Problems.class);

    private Problems() {
    }

    /** The problem that {@code e}, thrown while serving {@code path}, stands for. */
    public static Problem of(Throwable e, String path) {
        if (e instanceof UnknownSequenceException) {
            return problem(404, "unknown-sequence", "Unknown sequence", e.getMessage(), path);
        }
        if (e instanceof BlockResource.BlockNotFoundException) {
            return problem(404, "unknown-block", "Block not cached", e.getMessage(), path);
        }
        if (e instanceof SequenceExistsException) {
            return problem(409, "sequence-exists", "Sequence exists", e.getMessage(), path);
        }
        if (e instanceof KvBudgetExceededException) {
            return problem(409, "budget-exceeded", "KV budget exceeded", e.getMessage(), path);
        }
        if (e instanceof BodyLimit.BodyTooLargeException) {
            return problem(413, "body-too-large", "Request body too large", e.getMessage(), path);
        }
        if (e instanceof BlockStore.BlockTooLargeException) {
            return problem(413, "block-too-large", "Block too large", e.getMessage(), path);
        }
        if (e instanceof ModelMismatchException) {
            return problem(422, "model-mismatch", "Model shape mismatch", e.getMessage(), path);
        }
        if (e instanceof InfoResource.StaleEpochException) {
            return problem(409, "stale-epoch", "Stale shard map", e.getMessage(), path);
        }
        if (e instanceof io.pikv.sidecar.NotReadyException) {
            return problem(503, "not-ready", "Not ready", e.getMessage(), path);
        }
        if (e instanceof io.pikv.sidecar.UndoneException) {
            LOG.error("a request failed on " + path + " and was undone", e);
            return problem(500, "undone", "Failed and undone", e.getMessage(), path);
        }
        if (e instanceof ShardFailure shard) {
            boolean down = shard.status() == 502;
            return problem(shard.status(), down ? "shard-unavailable" : "shard-refused",
                    down ? "Shard unavailable" : "Refused by a shard", e.getMessage(), path);
        }
        if (e instanceof IllegalArgumentException) { // after its subclasses above
            return problem(400, "invalid-request", "Invalid request", e.getMessage(), path);
        }
        if (e instanceof JsonProcessingException json) {
            return problem(400, "malformed-json", "Malformed JSON", jsonDetail(json), path);
        }
        if (e instanceof java.io.CharConversionException chars) {
            // Jackson took the body's first bytes for UTF-16 or UTF-32 and then found no text in them.
            return problem(400, "malformed-json", "Malformed JSON", "the body is not JSON text in UTF-8, UTF-16 or "
                    + "UTF-32: " + chars.getMessage(), path);
        }
        LOG.error("unexpected failure on " + path, e);
        return problem(500, "internal", "Internal error", "the sidecar failed unexpectedly: " + e, path);
    }

    /** What Jackson found wrong, with where: the field's path (e.g. {@code model.layers}) or the line and column. */
    static String jsonDetail(JsonProcessingException json) {
        String what = json.getOriginalMessage();
        if (json instanceof com.fasterxml.jackson.databind.JsonMappingException mapping && !mapping.getPath().isEmpty()) {
            StringBuilder field = new StringBuilder();
            for (com.fasterxml.jackson.databind.JsonMappingException.Reference r : mapping.getPath()) {
                if (r.getFieldName() != null) {
                    field.append(field.length() == 0 ? "" : ".").append(r.getFieldName());
                } else if (r.getIndex() >= 0) {
                    field.append('[').append(r.getIndex()).append(']');
                }
            }
            if (field.length() > 0) {
                return "at " + field + ": " + what;
            }
        }
        com.fasterxml.jackson.core.JsonLocation at = json.getLocation();
        return at != null && at.getLineNr() > 0 ? "at line " + at.getLineNr() + ", column " + at.getColumnNr() + ": "
                + what : what;
    }

    /**
     * A refusal by the HTTP layer itself (no route, method, media type), titled by its reason phrase, with what to do
     * about it; {@code otherwise} is the detail for statuses without a known remedy.
     */
    public static Problem http(int status, String reason, String otherwise, String path) {
        String detail = switch (status) {
            case 404 -> "no such resource: " + path;
            case 405 -> "method not allowed on " + path;
            case 415 -> "unsupported content type: KV payloads are application/octet-stream, control bodies "
                    + "application/json (see docs/sidecar-api.md)";
            case 406 -> "cannot produce the requested media type";
            default -> otherwise;
        };
        return problem(status, "http-" + status, reason, detail, path);
    }

    private static Problem problem(int status, String kind, String title, String detail, String path) {
        return new Problem("urn:pikv:problem:" + kind, title, status, detail, path);
    }
}
