package io.pikv.sidecar.api;

import io.pikv.sidecar.BlockStore;
import io.pikv.sidecar.Sidecar;
import jakarta.ws.rs.Consumes;
import jakarta.ws.rs.GET;
import jakarta.ws.rs.PUT;
import jakarta.ws.rs.Path;
import jakarta.ws.rs.PathParam;
import jakarta.ws.rs.Produces;
import jakarta.ws.rs.core.MediaType;
import jakarta.ws.rs.core.Response;
import org.eclipse.microprofile.openapi.annotations.Operation;

/** Prefix blocks by hash, for reuse across requests: put a block's payload, look it up. */
@Path("/v1/blocks/{hash}")
public class BlockResource {
    private final BlockStore blocks;
    private final BodyLimit limit;

    public BlockResource(Sidecar sidecar, BodyLimit limit) {
        this.blocks = sidecar.blocks();
        this.limit = limit;
    }

    @PUT
    @Consumes(MediaType.APPLICATION_OCTET_STREAM)
    @Operation(summary = "Store a prefix block (hash: 1 to 16 hex digits)")
    public Response put(@PathParam("hash") String hash, byte[] body) {
        limit.check(body);
        long key = BlockStore.parseHash(hash);
        blocks.put(key, body == null ? new byte[0] : body);
        return Response.noContent().build();
    }

    @GET
    @Produces(MediaType.APPLICATION_OCTET_STREAM)
    @Operation(summary = "Look up a prefix block; 404 when it is not (or no longer) cached")
    public byte[] get(@PathParam("hash") String hash) {
        byte[] payload = blocks.get(BlockStore.parseHash(hash));
        if (payload == null) {
            throw new BlockNotFoundException(hash);
        }
        return payload;
    }

    /** Whether a block is cached, with its length: a question only, not a lookup (no hit or miss, no recency). */
    @jakarta.ws.rs.HEAD
    @Produces(MediaType.APPLICATION_OCTET_STREAM)
    @Operation(summary = "Whether a prefix block is cached (its length), without counting a lookup")
    public Response head(@PathParam("hash") String hash) {
        int length = blocks.peekLength(BlockStore.parseHash(hash));
        if (length < 0) {
            throw new BlockNotFoundException(hash);
        }
        return Response.ok().header("Content-Length", length).build();
    }

    /** A lookup of a block that is not cached. */
    public static final class BlockNotFoundException extends RuntimeException {
        BlockNotFoundException(String hash) {
            super("block " + hash + " is not cached (never stored, or evicted)");
        }
    }
}
