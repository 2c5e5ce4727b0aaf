package io.pikv.sidecar.api;

import com.fasterxml.jackson.core.JsonProcessingException;
import jakarta.ws.rs.WebApplicationException;
import jakarta.ws.rs.core.Response;
import jakarta.ws.rs.core.UriInfo;
import org.jboss.resteasy.reactive.RestResponse;
import org.jboss.resteasy.reactive.server.ServerExceptionMapper;

/**
 * The REST layer's errors as {@code application/problem+json}, by {@link Problems}' table. The JSON exceptions are
 * named here because the Jackson extension maps them itself otherwise; the HTTP layer's own refusals (no route,
 * method, media type) keep their status with an actionable detail.
 */
public class ProblemMappers {

    @ServerExceptionMapper
    public RestResponse<Problem> json(JsonProcessingException e, UriInfo uri) {
        return respond(Problems.of(e, uri.getPath()));
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
        if (e.getCause() instanceof JsonProcessingException json) {
            // The JSON reader wraps what Jackson found (a syntax error) in a bare 400: say what and where.
            return json(json, uri);
        }
        Response r = e.getResponse();
        return respond(Problems.http(r.getStatus(), r.getStatusInfo().getReasonPhrase(), e.getMessage(),
                uri.getPath()));
    }

    @ServerExceptionMapper
    public RestResponse<Problem> any(Throwable e, UriInfo uri) {
        return respond(Problems.of(e, uri.getPath()));
    }

    private static RestResponse<Problem> respond(Problem problem) {
        return RestResponse.ResponseBuilder.<Problem>create(problem.status()).entity(problem)
                .type(Problem.MEDIA_TYPE).build();
    }
}
