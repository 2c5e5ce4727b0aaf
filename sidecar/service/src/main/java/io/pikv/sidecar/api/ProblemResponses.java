package io.pikv.sidecar.api;

import org.eclipse.microprofile.openapi.OASFactory;
import org.eclipse.microprofile.openapi.OASFilter;
import org.eclipse.microprofile.openapi.models.OpenAPI;
import org.eclipse.microprofile.openapi.models.Operation;
import org.eclipse.microprofile.openapi.models.PathItem;
import org.eclipse.microprofile.openapi.models.PathItem.HttpMethod;
import org.eclipse.microprofile.openapi.models.media.Schema;
import org.eclipse.microprofile.openapi.models.media.Schema.SchemaType;
import org.eclipse.microprofile.openapi.models.responses.APIResponses;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Adds the error answers of every {@code /v1} operation to the served OpenAPI document: each as an
 * {@code application/problem+json} {@link Problem} (schema {@code Problem}), with the problem kinds it can carry
 * there, as docs/sidecar-api.md lists them. The REST annotations describe the successful answers only; this keeps
 * the statuses in one table beside {@link Problems}, which produces them. Registered with {@code mp.openapi.filter}.
 * A 500 ({@code internal}) is a defect, not a documented answer; a 405 can come from any path.
 */
public class ProblemResponses implements OASFilter {
    static final String SCHEMA = "Problem";

    private static final String INVALID = "invalid-request or malformed-json: the detail says what (sizes, NaN/Inf, "
            + "ranges, a field the request does not have)";
    private static final String UNKNOWN_SEQUENCE = "unknown-sequence: never created, or closed";
    private static final String TOO_LARGE = "body-too-large: over pikv.api.max-body-bytes";
    private static final String NOT_ACCEPTABLE = "http-406: an Accept this operation cannot answer";
    private static final String UNSUPPORTED = "http-415: a content type this operation does not read";
    private static final String UNDONE = "undone: the request failed once the shard began storing it, and what it had "
            + "stored was taken back (the request did not happen)";
    private static final String GATEWAY = "shard-unavailable: a gateway could not reach a shard it needs, or a shard "
            + "refused it for a reason that is no fault of the request (a refusal the request caused is passed on with "
            + "the shard's 4xx status as shard-refused)";

    private static final String BUDGET_FULL = "budget-exceeded: the store is full and its eviction policy freed "
            + "nothing, or the request needs more than the budget can make room for (entries that do not fit beside "
            + "each other, a step whose token keeps being evicted before its attention)";
    private static final String NOT_READY = "not-ready: the sidecar has not read its control topic to the end yet "
            + "(nor is its start-up wait over); nothing was done, send it again";

    /** Per {@code "METHOD path"}: status → what the problem says. */
    public static final Map<String, Map<String, String>> TABLE = table();

    private static Map<String, Map<String, String>> table() {
        Map<String, Map<String, String>> t = new LinkedHashMap<>();
        t.put("POST /v1/sequences", statuses(
                "400", INVALID,
                "406", NOT_ACCEPTABLE,
                "409", "sequence-exists: the id asked for is in use",
                "413", TOO_LARGE,
                "415", UNSUPPORTED,
                "422", "model-mismatch: the model is not the sidecar's (pikv.model.*)",
                "502", GATEWAY,
                "503", NOT_READY));
        t.put("GET /v1/sequences/{id}", statuses(
                "404", UNKNOWN_SEQUENCE,
                "406", NOT_ACCEPTABLE,
                "502", GATEWAY));
        t.put("DELETE /v1/sequences/{id}", statuses(
                "404", UNKNOWN_SEQUENCE,
                "502", GATEWAY + "; the sequence stays closing until a repeated DELETE succeeds"));
        t.put("POST /v1/sequences/{id}/entries", statuses(
                "400", INVALID,
                "404", UNKNOWN_SEQUENCE,
                "406", NOT_ACCEPTABLE,
                "409", BUDGET_FULL,
                "413", TOO_LARGE,
                "415", UNSUPPORTED,
                "500", UNDONE,
                "502", GATEWAY,
                "503", NOT_READY));
        t.put("POST /v1/sequences/{id}/withdrawals", statuses(
                "400", INVALID,
                "404", UNKNOWN_SEQUENCE,
                "406", NOT_ACCEPTABLE,
                "413", TOO_LARGE,
                "415", UNSUPPORTED,
                "502", GATEWAY));
        t.put("POST /v1/sequences/{id}/attention", statuses(
                "400", INVALID,
                "404", UNKNOWN_SEQUENCE,
                "406", NOT_ACCEPTABLE,
                "413", TOO_LARGE,
                "415", UNSUPPORTED,
                "502", GATEWAY,
                "503", NOT_READY));
        t.put("POST /v1/sequences/{id}/steps", statuses(
                "400", INVALID + "; a position that is not an integer, or a position given to a gateway",
                "404", UNKNOWN_SEQUENCE,
                "406", NOT_ACCEPTABLE,
                "409", BUDGET_FULL,
                "413", TOO_LARGE,
                "415", UNSUPPORTED,
                "500", UNDONE,
                "502", GATEWAY,
                "503", NOT_READY));
        t.put("PUT /v1/blocks/{hash}", statuses(
                "400", "invalid-request: a hash that is not 1 to 16 hex digits, or an empty block",
                "413", TOO_LARGE + "; block-too-large: larger than the whole block cache",
                "415", UNSUPPORTED));
        t.put("GET /v1/blocks/{hash}", statuses(
                "400", "invalid-request: a hash that is not 1 to 16 hex digits",
                "404", "unknown-block: never stored, or evicted",
                "406", NOT_ACCEPTABLE));
        t.put("HEAD /v1/blocks/{hash}", statuses(
                "400", "invalid-request: a hash that is not 1 to 16 hex digits",
                "404", "unknown-block: never stored, or evicted (HEAD answers carry no body)",
                "406", NOT_ACCEPTABLE));
        for (String info : List.of("/v1/stats", "/v1/config", "/v1/shard-map")) {
            t.put("GET " + info, statuses("406", NOT_ACCEPTABLE));
        }
        t.put("PUT /v1/shard-map", statuses(
                "400", INVALID,
                "406", NOT_ACCEPTABLE,
                "409", "stale-epoch: not newer than the map in effect",
                "413", TOO_LARGE,
                "415", UNSUPPORTED,
                "503", NOT_READY));
        return t;
    }

    private static Map<String, String> statuses(String... pairs) {
        Map<String, String> m = new LinkedHashMap<>();
        for (int i = 0; i < pairs.length; i += 2) {
            m.put(pairs[i], pairs[i + 1]);
        }
        return m;
    }

    @Override
    public void filterOpenAPI(OpenAPI openAPI) {
        if (openAPI.getPaths() == null || openAPI.getPaths().getPathItems() == null) {
            return;
        }
        if (openAPI.getComponents() == null) {
            openAPI.setComponents(OASFactory.createComponents());
        }
        openAPI.getComponents().addSchema(SCHEMA, problemSchema());
        for (Map.Entry<String, PathItem> path : openAPI.getPaths().getPathItems().entrySet()) {
            Map<HttpMethod, Operation> operations = path.getValue().getOperations();
            if (operations == null) {
                continue;
            }
            for (Map.Entry<HttpMethod, Operation> op : operations.entrySet()) {
                Map<String, String> errors = TABLE.get(op.getKey() + " " + path.getKey());
                if (errors == null) {
                    continue;
                }
                if (op.getValue().getResponses() == null) {
                    op.getValue().setResponses(OASFactory.createAPIResponses());
                }
                APIResponses responses = op.getValue().getResponses();
                errors.forEach((status, what) -> {
                    if (!responses.hasAPIResponse(status)) {
                        responses.addAPIResponse(status, OASFactory.createAPIResponse().description(what)
                                .content(OASFactory.createContent().addMediaType(Problem.MEDIA_TYPE,
                                        OASFactory.createMediaType().schema(
                                                OASFactory.createSchema().ref(SCHEMA)))));
                    }
                });
            }
        }
    }

    private static Schema problemSchema() {
        return OASFactory.createSchema().addType(SchemaType.OBJECT)
                .description("An RFC 9457 problem detail")
                .addProperty("type", OASFactory.createSchema().addType(SchemaType.STRING).format("uri")
                        .description("urn:pikv:problem:<kind>, e.g. urn:pikv:problem:unknown-sequence"))
                .addProperty("title", OASFactory.createSchema().addType(SchemaType.STRING)
                        .description("short summary of the kind"))
                .addProperty("status", OASFactory.createSchema().addType(SchemaType.INTEGER).format("int32")
                        .description("the HTTP status"))
                .addProperty("detail", OASFactory.createSchema().addType(SchemaType.STRING)
                        .description("what was wrong with this request"))
                .addProperty("instance", OASFactory.createSchema().addType(SchemaType.STRING)
                        .description("the request path"))
                .addRequired("type").addRequired("title").addRequired("status");
    }
}
