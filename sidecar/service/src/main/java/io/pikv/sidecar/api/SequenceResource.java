package io.pikv.sidecar.api;

import io.pikv.kv.ModelShape;
import io.pikv.sidecar.Sidecar;
import io.pikv.sidecar.SidecarMetrics;
import io.pikv.sidecar.KvApi;
import io.pikv.sidecar.wire.Wire;
import io.vertx.core.http.HttpServerRequest;
import jakarta.ws.rs.Consumes;
import jakarta.ws.rs.DELETE;
import jakarta.ws.rs.GET;
import jakarta.ws.rs.POST;
import jakarta.ws.rs.Path;
import jakarta.ws.rs.PathParam;
import jakarta.ws.rs.core.Context;
import jakarta.ws.rs.Produces;
import jakarta.ws.rs.core.MediaType;
import jakarta.ws.rs.core.Response;
import org.eclipse.microprofile.openapi.annotations.Operation;
import org.eclipse.microprofile.openapi.annotations.enums.ParameterIn;
import org.eclipse.microprofile.openapi.annotations.enums.SchemaType;
import org.eclipse.microprofile.openapi.annotations.media.Schema;
import org.eclipse.microprofile.openapi.annotations.parameters.Parameter;

import java.net.URI;
import java.util.ArrayList;
import java.util.List;

/** Sequences and their KV: create/close (JSON), append entries, partial attention and decode steps (binary). */
@Path("/v1/sequences")
public class SequenceResource {

    /** Body of a create: the model shape (must equal the sidecar's) and, from a gateway, the id to use. */
    public record CreateRequest(ModelJson model, Long id) {
    }

    /** A sequence: its id, the model, and per layer the next position and the entries resident here. */
    public record SequenceJson(long id, ModelJson model, List<LayerJson> layers) {
    }

    public record LayerJson(int layer, int length, int resident) {
    }

    /** Positions given to appended entries, in request order. */
    public record AppendedJson(int[] positions) {
    }

    /** Entries of one layer to take back (a gateway undoing a request that failed on another shard). */
    public record WithdrawRequest(Integer layer, int[] positions) {
    }

    public record WithdrawnJson(int withdrawn) {
    }

    private final Sidecar sidecar;
    private final BodyLimit limit;
    private final SidecarMetrics metrics;

    public SequenceResource(Sidecar sidecar, BodyLimit limit, SidecarMetrics metrics) {
        this.sidecar = sidecar;
        this.limit = limit;
        this.metrics = metrics;
    }

    @POST
    @Consumes(MediaType.APPLICATION_JSON)
    @Produces(MediaType.APPLICATION_JSON)
    @Operation(summary = "Create a sequence", description = "The model shape must equal the sidecar's; a gateway "
            + "passes the id its shards must use.")
    public Response create(CreateRequest request) {
        if (request == null || request.model() == null) {
            throw new IllegalArgumentException("the body must name the model: {\"model\": {\"layers\": …}}");
        }
        ModelShape asked = request.model().toShape();
        if (!asked.equals(sidecar.shape())) {
            throw new ModelMismatchException(asked, sidecar.shape());
        }
        sidecar.checkServing();
        long id = node().create(request.id());
        return Response.created(URI.create("/v1/sequences/" + id)).entity(describe(id)).build();
    }

    @GET
    @Path("/{id}")
    @Produces(MediaType.APPLICATION_JSON)
    @Operation(summary = "Describe a sequence: per layer its length and the entries resident on this shard")
    public SequenceJson get(@PathParam("id") long id) {
        return describe(id);
    }

    @DELETE
    @Path("/{id}")
    @Operation(summary = "Close a sequence and free its KV")
    public Response close(@PathParam("id") long id) {
        node().close(id);
        return Response.noContent().build();
    }

    @POST
    @Path("/{id}/entries")
    @Consumes(MediaType.APPLICATION_OCTET_STREAM)
    @Produces(MediaType.APPLICATION_JSON)
    @Operation(summary = "Append K/V entries (binary, all or none)")
    public AppendedJson append(@PathParam("id") long id, byte[] body) {
        limit.check(body);
        Wire.AppendRequest request = Wire.decodeAppend(body, sidecar.shape());
        sidecar.checkServing();
        return new AppendedJson(metrics.append().record(() -> node().append(id, request)));
    }

    @POST
    @Path("/{id}/withdrawals")
    @Consumes(MediaType.APPLICATION_JSON)
    @Produces(MediaType.APPLICATION_JSON)
    @Operation(summary = "Take back just-stored entries without counting evictions (undo of a failed request)")
    public WithdrawnJson withdraw(@PathParam("id") long id, WithdrawRequest request) {
        if (request == null || request.layer() == null || request.positions() == null) {
            throw new IllegalArgumentException("the body must name the layer and the positions: "
                    + "{\"layer\": 0, \"positions\": [..]}");
        }
        return new WithdrawnJson(node().withdraw(id, request.layer(), request.positions()));
    }

    @POST
    @Path("/{id}/attention")
    @Consumes(MediaType.APPLICATION_OCTET_STREAM)
    @Produces(MediaType.APPLICATION_OCTET_STREAM)
    @Operation(summary = "Partial attention of a query over this shard's entries (binary, mergeable)")
    public byte[] attend(@PathParam("id") long id, byte[] body) {
        limit.check(body);
        Wire.AttendRequest request = Wire.decodeAttend(body, sidecar.shape());
        sidecar.checkServing();
        return Wire.encodePartial(metrics.attention().record(() -> node().attend(id, request)));
    }

    @POST
    @Path("/{id}/steps")
    @Consumes(MediaType.APPLICATION_OCTET_STREAM)
    @Produces(MediaType.APPLICATION_OCTET_STREAM)
    @Operation(summary = "One decode step: route, store the token's K/V, attend (binary)", description = "With "
            + "?position=P (shard role, chosen experts): store the token at P and answer this shard's partial "
            + "attention instead of the output — the gateway's one round trip to the owning shard.")
    @Parameter(name = "position", in = ParameterIn.QUERY, description = "shard role: the position the gateway gives "
            + "the token", schema = @Schema(type = SchemaType.INTEGER, minimum = "0"))
    public byte[] step(@PathParam("id") long id, @Context HttpServerRequest request, byte[] body) {
        // Read from the raw query as the step route reads it (BinaryRoutes), which a request reaches this method
        // without only when its path has a matrix parameter (steps;x): the framework's query reader would split the
        // value at ';', match the name in any case and stop after 1,024 parameters.
        return step(id, BinaryRoutes.positionValues(request.query()), body);
    }

    /** A step with the query's {@code position} values (none: empty), as {@link BinaryRoutes} serves it. */
    byte[] step(long id, List<String> positionParam, byte[] body) {
        limit.check(body);
        Integer position = position(positionParam);
        Wire.StepRequest request = Wire.decodeStep(body, sidecar.shape());
        sidecar.checkServing();
        if (position != null) {
            if (sidecar.gateway() != null) {
                throw new IllegalArgumentException("a gateway assigns positions itself; send the step without "
                        + "?position");
            }
            return Wire.encodePartial(metrics.step().record(() -> sidecar.shard().stepPartial(id, request, position)));
        }
        return Wire.encodeStepResponse(metrics.step().record(() -> node().step(id, request)));
    }

    /**
     * The {@code position} query parameter: none (absent or empty) or a whole number in ASCII digits, given once (a
     * second value, which one reading would take and another drop, is refused).
     */
    static Integer position(List<String> values) {
        if (values == null || values.isEmpty()) {
            return null;
        }
        if (values.size() > 1) {
            throw new IllegalArgumentException("position must be given once, got " + values.size() + " values "
                    + values);
        }
        String value = values.get(0);
        if (value == null || value.isEmpty()) {
            return null;
        }
        if (!value.chars().allMatch(c -> c >= '0' && c <= '9')) {
            throw new IllegalArgumentException("position must be a whole number in digits 0-9, got '" + value + "'");
        }
        String digits = value.replaceFirst("^0+(?=.)", ""); // leading zeros change nothing
        long position = digits.length() > 10 ? Long.MAX_VALUE : Long.parseLong(digits);
        if (position > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("position must be at most " + Integer.MAX_VALUE + ", got " + value);
        }
        return (int) position;
    }

    private SequenceJson describe(long id) {
        int[][] read = node().layers(id);
        List<LayerJson> layers = new ArrayList<>(read[0].length);
        for (int layer = 0; layer < read[0].length; layer++) {
            layers.add(new LayerJson(layer, read[0][layer], read[1][layer]));
        }
        return new SequenceJson(id, ModelJson.of(sidecar.shape()), layers);
    }

    private KvApi node() {
        return sidecar.kv();
    }
}
