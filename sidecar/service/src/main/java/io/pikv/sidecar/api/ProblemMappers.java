package io.pikv.sidecar.api;

import com.fasterxml.jackson.core.JsonProcessingException;
import io.pikv.kv.KvBudgetExceededException;
import io.pikv.kv.UnknownSequenceException;
import io.pikv.sidecar.BlockStore;
import io.pikv.sidecar.SequenceExistsException;
import jakarta.ws.rs.WebApplicationException;
import jakarta.ws.rs.core.Response;
import jakarta.ws.rs.core.UriInfo;
import org.jboss.logging.Logger;
import org.jboss.resteasy.reactive.RestResponse;
import org.jboss.resteasy.reactive.server.ServerExceptionMapper;

/**
 * Every error as {@code application/problem+json} with the status its cause deserves: malformed or invalid input
 * 400, unknown sequence or block 404, conflicts (id taken, budget full with nothing evictable) 409, too large
 * 413, wrong content type 415, a model other than the sidecar's 422. Anything else is a defect: 500, logged.
 */
public class ProblemMappers {
    private static final Logger LOG = Logger.getLogger(ProblemMappers.class);

    @ServerExceptionMapper
    public RestResponse<Problem> invalid(IllegalArgumentException e, UriInfo uri) {
        return problem(400, "invalid-request", "Invalid request", e.getMessage(), uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> unknownSequence(UnknownSequenceException e, UriInfo uri) {
        return problem(404, "unknown-sequence", "Unknown sequence", e.getMessage(), uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> unknownBlock(BlockResource.BlockNotFoundException e, UriInfo uri) {
        return problem(404, "unknown-block", "Block not cached", e.getMessage(), uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> exists(SequenceExistsException e, UriInfo uri) {
        return problem(409, "sequence-exists", "Sequence exists", e.getMessage(), uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> budget(KvBudgetExceededException e, UriInfo uri) {
        return problem(409, "budget-exceeded", "KV budget exceeded", e.getMessage(), uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> bodyTooLarge(BodyLimit.BodyTooLargeException e, UriInfo uri) {
        return problem(413, "body-too-large", "Request body too large", e.getMessage(), uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> blockTooLarge(BlockStore.BlockTooLargeException e, UriInfo uri) {
        return problem(413, "block-too-large", "Block too large", e.getMessage(), uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> model(ModelMismatchException e, UriInfo uri) {
        return problem(422, "model-mismatch", "Model shape mismatch", e.getMessage(), uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> stale(InfoResource.StaleEpochException e, UriInfo uri) {
        return problem(409, "stale-epoch", "Stale shard map", e.getMessage(), uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> shard(io.pikv.sidecar.ShardFailure e, UriInfo uri) {
        return problem(e.status(), e.status() == 502 ? "shard-unavailable" : "shard-refused",
                e.status() == 502 ? "Shard unavailable" : "Refused by a shard", e.getMessage(), uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> json(JsonProcessingException e, UriInfo uri) {
        return problem(400, "malformed-json", "Malformed JSON", e.getOriginalMessage(), uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> jsonSyntax(com.fasterxml.jackson.core.JsonParseException e, UriInfo uri) {
        return json(e, uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> jsonShape(com.fasterxml.jackson.databind.exc.MismatchedInputException e, UriInfo uri) {
        return json(e, uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> web(WebApplicationException e, UriInfo uri) {
        Response r = e.getResponse();
        int status = r.getStatus();
        String detail = switch (status) {
            case 404 -> "no such resource: " + uri.getPath();
            case 405 -> "method not allowed on " + uri.getPath();
            case 415 -> "unsupported content type: KV payloads are application/octet-stream, control bodies "
                    + "application/json (see docs/sidecar-api.md)";
            case 406 -> "cannot produce the requested media type";
            default -> e.getMessage();
        };
        return problem(status, "http-" + status, r.getStatusInfo().getReasonPhrase(), detail, uri);
    }

    @ServerExceptionMapper
    public RestResponse<Problem> unexpected(Throwable e, UriInfo uri) {
        LOG.error("unexpected failure on " + uri.getPath(), e);
        return problem(500, "internal", "Internal error", "the sidecar failed unexpectedly: " + e, uri);
    }

    private static RestResponse<Problem> problem(int status, String kind, String title, String detail, UriInfo uri) {
        return RestResponse.ResponseBuilder.<Problem>create(status)
                .entity(new Problem("urn:pikv:problem:" + kind, title, status, detail, uri.getPath()))
                .type(Problem.MEDIA_TYPE).build();
    }
}
