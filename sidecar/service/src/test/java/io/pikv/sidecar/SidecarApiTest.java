package io.pikv.sidecar;

import com.fasterxml.jackson.databind.JsonNode;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.sidecar.client.SidecarClient;
import io.pikv.sidecar.client.SidecarException;
import io.pikv.sidecar.wire.Wire;
import io.quarkus.test.common.http.TestHTTPResource;
import io.quarkus.test.junit.QuarkusTest;
import io.restassured.http.ContentType;
import org.junit.jupiter.api.Test;

import java.net.URL;
import java.time.Duration;
import java.util.Random;

import static io.restassured.RestAssured.given;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.containsString;
import static org.hamcrest.Matchers.containsInAnyOrder;
import static org.hamcrest.Matchers.equalTo;
import static org.hamcrest.Matchers.startsWith;

/**
 * The /v1 API of a shard-role sidecar (test profile: a small model, 8 pages of budget, no eviction, attention split
 * over its 2 buckets on 2 threads, so the in-process references below split the same way; Kafka clients on the
 * suite's test broker).
 */
@QuarkusTest
class SidecarApiTest {
    static final ModelShape SHAPE = new ModelShape(2, 4, 2, 16, 4, 2);
    static final String MODEL = "{\"layers\":2,\"qHeads\":4,\"kvHeads\":2,\"headDim\":16,\"experts\":4,\"topK\":2}";
    static final String PROBLEM = "application/problem+json";

    @TestHTTPResource("/")
    URL url;

    /** A POST of octets sent as written (no client re-encodes the target); the answer's head and body as text. */
    String rawPost(String target, byte[] body) throws Exception {
        try (java.net.Socket s = new java.net.Socket(url.getHost(), url.getPort())) {
            s.setSoTimeout(10_000);
            String head = "POST " + target + " HTTP/1.1\r\nHost: " + url.getHost() + ":" + url.getPort()
                    + "\r\nContent-Type: application/octet-stream\r\nContent-Length: " + body.length
                    + "\r\nConnection: close\r\n\r\n";
            s.getOutputStream().write(head.getBytes(java.nio.charset.StandardCharsets.US_ASCII));
            s.getOutputStream().write(body);
            s.getOutputStream().flush();
            return new String(s.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        }
    }

    /** Clients and sequences a test opened: closed after it whatever its outcome (the app is shared by the tests). */
    private final java.util.List<SidecarClient> clients = new java.util.ArrayList<>();
    private final java.util.List<Long> opened = new java.util.ArrayList<>();

    SidecarClient client() throws Exception {
        SidecarClient c = new SidecarClient(url.toURI(), SHAPE);
        clients.add(c);
        return c;
    }

    /** A new sequence, closed after the test even when it fails (its pages would leave the next tests short). */
    long open(SidecarClient client) {
        long seq = client.createSequence(null);
        opened.add(seq);
        return seq;
    }

    @org.junit.jupiter.api.AfterEach
    void closeWhatTheTestOpened() {
        for (long seq : opened) {
            given().delete("/v1/sequences/" + seq); // 204, or 404 when the test closed it itself
        }
        opened.clear();
        clients.forEach(SidecarClient::close);
        clients.clear();
    }

    static Wire.AppendRequest.Entry entry(int position, int expert, Random rnd) {
        return new Wire.AppendRequest.Entry(position, expert, gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd));
    }

    static float[] gaussian(int n, Random rnd) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) rnd.nextGaussian();
        }
        return x;
    }

    static Wire.AppendRequest entries(int layer, int n, Random rnd) {
        Wire.AppendRequest.Entry[] e = new Wire.AppendRequest.Entry[n];
        for (int i = 0; i < n; i++) {
            e[i] = entry(Wire.NEXT_POSITION, rnd.nextInt(SHAPE.experts()), rnd);
        }
        return new Wire.AppendRequest(layer, e);
    }

    @Test
    void sequenceLifecycle() {
        int id = given().contentType(ContentType.JSON).body("{\"model\":" + MODEL + "}")
                .post("/v1/sequences").then().statusCode(201)
                .header("Location", containsString("/v1/sequences/"))
                .body("model.experts", equalTo(4)).body("layers.size()", equalTo(2))
                .extract().path("id");
        given().get("/v1/sequences/" + id).then().statusCode(200).body("layers[0].length", equalTo(0));
        given().delete("/v1/sequences/" + id).then().statusCode(204);
        given().delete("/v1/sequences/" + id).then().statusCode(404).contentType(PROBLEM)
                .body("type", equalTo("urn:pikv:problem:unknown-sequence"))
                .body("detail", containsString("unknown sequence " + id));
        // A gateway's id is honoured once; a second create with it conflicts.
        given().contentType(ContentType.JSON).body("{\"model\":" + MODEL + ",\"id\":777}").post("/v1/sequences")
                .then().statusCode(201).body("id", equalTo(777));
        given().contentType(ContentType.JSON).body("{\"model\":" + MODEL + ",\"id\":777}").post("/v1/sequences")
                .then().statusCode(409).contentType(PROBLEM).body("detail", equalTo("sequence 777 already exists"));
        given().delete("/v1/sequences/777").then().statusCode(204);
    }

    @Test
    void badControlRequestsGetProblems() {
        given().contentType(ContentType.JSON).body("{\"model\":" + MODEL.replace("\"experts\":4", "\"experts\":5") + "}")
                .post("/v1/sequences").then().statusCode(422).contentType(PROBLEM)
                .body("detail", containsString("experts=5"));
        given().contentType(ContentType.JSON).body("{\"model\":{\"layers\":2}}").post("/v1/sequences")
                .then().statusCode(400).contentType(PROBLEM).body("detail", equalTo("model.qHeads is required"));
        given().contentType(ContentType.JSON).body("{\"model\": [").post("/v1/sequences")
                .then().statusCode(400).contentType(PROBLEM);
        int open = given().get("/v1/stats").then().statusCode(200).extract().path("sequences");
        given().contentType(ContentType.JSON).body("{\"model\":" + MODEL + ",\"id\":\"\"}").post("/v1/sequences")
                .then().statusCode(400).contentType(PROBLEM).body("type", equalTo("urn:pikv:problem:malformed-json"));
        given().get("/v1/stats").then().body("sequences", equalTo(open)); // nothing created under a fresh id
        given().contentType(ContentType.TEXT).body("hello").post("/v1/sequences")
                .then().statusCode(415).contentType(PROBLEM).body("detail", containsString("unsupported content type"));
        given().get("/v1/nothing-here").then().statusCode(404).contentType(PROBLEM);
        given().get("/v1/sequences/not-a-number").then().statusCode(404).contentType(PROBLEM);
        // Bytes that the JSON reader takes for UTF-32 and finds no text in: a 400, not a failure of the sidecar.
        given().contentType(ContentType.JSON).body(new byte[] {0, 0x7B, 0, 0}).post("/v1/sequences")
                .then().statusCode(400).contentType(PROBLEM).body("type", equalTo("urn:pikv:problem:malformed-json"))
                .body("detail", startsWith("the body is not JSON text in UTF-8, UTF-16 or UTF-32: "));
    }

    @Test
    void attentionOverHttpEqualsTheEngineInProcess() throws Exception {
        SidecarClient client = client();
        long seq = open(client);
        Random rnd = new Random(5);
        Wire.AppendRequest first = entries(1, 20, rnd);
        Wire.AppendRequest second = entries(1, 7, rnd);
        assertThat(client.append(seq, first)).containsExactly(java.util.stream.IntStream.range(0, 20).toArray());
        assertThat(client.append(seq, second)[0]).isEqualTo(20);
        float[] q = gaussian(SHAPE.queryWidth(), rnd);
        try (ShardNode local = new ShardNode(0, SHAPE, StorageType.FP16, 16, 2, 1 << 20, ShardPolicy.of("reject"), 2)) {
            long ref = local.create(null);
            local.append(ref, first);
            local.append(ref, second);
            for (int[] scope : new int[][] {{}, {1, 3}}) {
                Wire.AttendRequest attend = new Wire.AttendRequest(1, scope, q);
                float[] over = client.attend(seq, attend).finish().output();
                float[] in = local.attend(ref, attend).finish().output();
                assertThat(over).as("scope %s", java.util.Arrays.toString(scope)).containsExactly(in);
            }
        }
        client.closeSequence(seq);
    }

    @Test
    void stepsRouteStoreAndAttend() throws Exception {
        SidecarClient client = client();
        long seq = open(client);
        Random rnd = new Random(9);
        try (ShardNode local = new ShardNode(0, SHAPE, StorageType.FP16, 16, 2, 1 << 20, ShardPolicy.of("reject"), 2)) {
            long ref = local.create(null);
            for (int t = 0; t < 12; t++) {
                float[] logits = {t < 6 ? -2f : 3f, 2f, -1f, 1f};
                Wire.StepRequest step = new Wire.StepRequest(0, Wire.GATE_LOGITS, t % 2, logits, null,
                        gaussian(SHAPE.queryWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd),
                        gaussian(SHAPE.kvWidth(), rnd));
                Wire.StepResponse over = client.step(seq, step);
                Wire.StepResponse in = local.step(ref, step);
                assertThat(over.position()).isEqualTo(t);
                assertThat(over.experts()).containsExactly(t < 6 ? new int[] {1, 3} : new int[] {0, 1});
                assertThat(over.output()).containsExactly(in.output());
            }
        }
        given().get("/v1/sequences/" + seq).then().statusCode(200).body("layers[0].length", equalTo(12))
                .body("layers[0].resident", equalTo(12));
        // Chosen experts: fewer than topK (what cache-aware routing may keep) is a step too; none or more are not.
        Wire.StepResponse one = client.step(seq, new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, 0, null, new int[] {2},
                gaussian(SHAPE.queryWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd)));
        assertThat(one.position()).isEqualTo(12);
        assertThat(one.experts()).containsExactly(2);
        for (int[] experts : new int[][] {{}, {0, 1, 2}}) {
            rejects(seq, "steps", Wire.encodeStep(new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, 0, null, experts,
                    gaussian(SHAPE.queryWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd),
                    gaussian(SHAPE.kvWidth(), rnd))), 400, "names 1 to 2 of them, got " + experts.length);
        }
        // A query the attention refuses (finite, but beyond ±2^50) is refused before the token is stored.
        float[] huge = gaussian(SHAPE.queryWidth(), rnd);
        huge[0] = 1e20f;
        rejects(seq, "steps", Wire.encodeStep(new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, 0, null, new int[] {2},
                huge, gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd))), 400, "query[0] is 1.0E20");
        given().get("/v1/sequences/" + seq).then().body("layers[0].length", equalTo(13))
                .body("layers[0].resident", equalTo(13));
        client.closeSequence(seq);
    }

    @Test
    void badBinaryRequestsLeaveTheStoreUnchanged() throws Exception {
        SidecarClient client = client();
        long seq = open(client);
        Random rnd = new Random(2);
        client.append(seq, entries(0, 5, rnd));
        JsonNode before = client.stats();

        // Wrong size: one float missing.
        byte[] good = Wire.encodeAppend(entries(0, 2, rnd));
        rejects(seq, "entries", java.util.Arrays.copyOf(good, good.length - 4), 400, "body is " + (good.length - 4)
                + " bytes");
        // Too short for its header: the body's length and what the header needs.
        rejects(seq, "entries", new byte[7], 400, "body is 7 bytes, too short for the append header (layer, count): 8"
                + " bytes needed at byte 0, 7 left");
        rejects(seq, "attention", new byte[7], 400, "body is 7 bytes, too short for the attend header (layer, expert"
                + " count): 8 bytes needed at byte 0, 7 left");
        // NaN in the second entry's V.
        Wire.AppendRequest nan = entries(0, 2, rnd);
        nan.entries()[1].v()[3] = Float.NaN;
        rejects(seq, "entries", Wire.encodeAppend(nan), 400, "entry 1 V[3] is NaN");
        // Expert out of range in the second entry: refused before the first is stored.
        Wire.AppendRequest expert = new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
            entry(Wire.NEXT_POSITION, 0, rnd), entry(Wire.NEXT_POSITION, 4, rnd)});
        rejects(seq, "entries", Wire.encodeAppend(expert), 400, "entry 1: expert 4 is out of range");
        // Position already stored.
        Wire.AppendRequest dup = new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {entry(2, 0, rnd)});
        rejects(seq, "entries", Wire.encodeAppend(dup), 400, "position 2 of sequence " + seq + " layer 0 is already stored");
        // Positions beyond the largest a sequence may use (one where position + 1 overflows, one 2^28): refused
        // before anything is written, and the shard keeps working.
        for (int far : new int[] {Integer.MAX_VALUE, 1 << 28}) {
            Wire.AppendRequest beyond = new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {entry(far, 0, rnd)});
            rejects(seq, "entries", Wire.encodeAppend(beyond), 400, "position must be in [0, 16777215]");
        }
        // Withdrawals of negative positions.
        given().contentType(ContentType.JSON).body("{\"layer\":0,\"positions\":[-1]}")
                .post("/v1/sequences/" + seq + "/withdrawals").then().statusCode(400).contentType(PROBLEM)
                .body("detail", containsString("positions must be in [0, 16777215], got -1"));
        // A fraction or a null where a whole number goes is refused, not truncated (3.7 is not position 3, null not 0);
        // the detail names the field.
        int residentBefore = given().get("/v1/sequences/" + seq).then().extract().jsonPath().getInt("layers[0].resident");
        given().contentType(ContentType.JSON).body("{\"layer\":0,\"positions\":[1.7]}")
                .post("/v1/sequences/" + seq + "/withdrawals").then().statusCode(400).contentType(PROBLEM)
                .body("type", equalTo("urn:pikv:problem:malformed-json")).body("detail", containsString("at positions[0]"));
        given().contentType(ContentType.JSON).body("{\"layer\":0,\"positions\":[null]}")
                .post("/v1/sequences/" + seq + "/withdrawals").then().statusCode(400).contentType(PROBLEM)
                .body("type", equalTo("urn:pikv:problem:malformed-json"));
        given().contentType(ContentType.JSON).body("{\"layer\":0.9,\"positions\":[0]}")
                .post("/v1/sequences/" + seq + "/withdrawals").then().statusCode(400).contentType(PROBLEM)
                .body("detail", containsString("at layer"));
        given().contentType(ContentType.JSON).body("{\"layer\":0,\"positions\":[0}")
                .post("/v1/sequences/" + seq + "/withdrawals").then().statusCode(400).contentType(PROBLEM)
                .body("detail", containsString("at positions[1]: Unexpected close marker '}'"));
        // A string where a number goes, a field the request does not have, a field twice, text after the value.
        for (String body : new String[] {"{\"layer\":\"0\",\"positions\":[0]}",
            "{\"layer\":0,\"positions\":[0],\"Layer\":1}", "{\"layer\":1,\"layer\":0,\"positions\":[0]}",
            "{\"layer\":0,\"positions\":[0]}{\"layer\":0,\"positions\":[1]}"}) {
            given().contentType(ContentType.JSON).body(body).post("/v1/sequences/" + seq + "/withdrawals").then()
                    .statusCode(400).contentType(PROBLEM).body("type", equalTo("urn:pikv:problem:malformed-json"));
        }
        long sequencesBefore = given().get("/v1/stats").then().extract().jsonPath().getLong("sequences");
        given().contentType(ContentType.JSON).body("{\"model\":" + MODEL + ",\"Id\":7}").post("/v1/sequences")
                .then().statusCode(400).contentType(PROBLEM).body("detail", containsString("Id"));
        given().get("/v1/stats").then().body("sequences", equalTo((int) sequencesBefore));
        given().get("/v1/sequences/" + seq).then().body("layers[0].resident", equalTo(residentBefore));
        // Layer out of range.
        rejects(seq, "entries", Wire.encodeAppend(entries(2, 1, rnd)), 400, "layer 2 is out of range");
        // More than the budget (8 pages of 16 tokens, 2 buckets, no eviction): nothing of it is kept.
        rejects(seq, "entries", Wire.encodeAppend(entries(0, 200, rnd)), 409, "no entry of the request was stored");
        // Unknown sequence.
        rejects(seq + 1000, "entries", Wire.encodeAppend(entries(0, 1, rnd)), 404, "unknown sequence");
        // Attention with a bad expert scope and with a wrong query size.
        byte[] attend = Wire.encodeAttend(new Wire.AttendRequest(0, new int[] {7}, gaussian(SHAPE.queryWidth(), rnd)));
        rejects(seq, "attention", attend, 400, "scope expert 0 is 7: experts are 0..3");
        // An id far out of range is refused before anything is sized from it; a repeated one too.
        rejects(seq, "attention", Wire.encodeAttend(new Wire.AttendRequest(0, new int[] {0, Integer.MAX_VALUE},
                gaussian(SHAPE.queryWidth(), rnd))), 400, "scope expert 1 is 2147483647");
        rejects(seq, "attention", Wire.encodeAttend(new Wire.AttendRequest(0, new int[] {2, 2},
                gaussian(SHAPE.queryWidth(), rnd))), 400, "scope expert 2 appears twice");
        rejects(seq, "attention", new byte[] {0, 0, 0, 0, 0, 0, 0, 0, 1}, 400, "body is 9 bytes");
        // Step with chosen experts repeated.
        byte[] step = Wire.encodeStep(new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, 0, null, new int[] {1, 1},
                gaussian(SHAPE.queryWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd)));
        rejects(seq, "steps", step, 400, "expert 1 is chosen twice");
        // Body over pikv.api.max-body-bytes (65536 in tests).
        rejects(seq, "entries", new byte[70_000], 413, "over the limit of 65536 bytes");
        // Wrong content type on a binary endpoint.
        given().contentType(ContentType.JSON).body("{}").post("/v1/sequences/" + seq + "/entries")
                .then().statusCode(415).contentType(PROBLEM);

        JsonNode after = client.stats();
        assertThat(after.get("entries")).isEqualTo(before.get("entries"));
        assertThat(after.get("bytesInUse")).isEqualTo(before.get("bytesInUse"));
        assertThat(after.get("evictions").asLong()).isZero();
        // Refused before any lookup: nothing is counted either (the docs' "nothing is counted").
        assertThat(after.get("lookups")).isEqualTo(before.get("lookups"));
        assertThat(after.get("hits")).isEqualTo(before.get("hits"));
        assertThat(after.get("misses")).isEqualTo(before.get("misses"));
        given().get("/v1/sequences/" + seq).then().body("layers[0].length", equalTo(5))
                .body("layers[0].resident", equalTo(5));
        client.closeSequence(seq);
    }

    /**
     * The step and attention requests are served on routes of their own ahead of the REST layer
     * ({@code BinaryRoutes}): each refusal of the transport gets the same problem+json as the other endpoints, and
     * none reaches the store.
     */
    @Test
    void binaryRoutesRefuseLikeTheRestOfTheApi() throws Exception {
        SidecarClient client = client();
        long seq = open(client);
        Random rnd = new Random(4);
        client.append(seq, entries(0, 3, rnd));
        byte[] step = Wire.encodeStep(new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, 0, null, new int[] {1},
                gaussian(SHAPE.queryWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd)));
        String steps = "/v1/sequences/" + seq + "/steps";
        // Over pikv.api.max-body-bytes (65536 in tests).
        given().contentType("application/octet-stream").body(new byte[70_000]).post(steps)
                .then().statusCode(413).contentType(PROBLEM)
                .body("type", equalTo("urn:pikv:problem:body-too-large"))
                .body("detail", equalTo("the request body is 70000 bytes, over the limit of 65536 bytes "
                        + "(pikv.api.max-body-bytes); send fewer entries per request"))
                .body("instance", equalTo(steps));
        given().contentType("application/octet-stream").body(new byte[65_537])
                .post("/v1/sequences/" + seq + "/attention").then().statusCode(413).contentType(PROBLEM)
                .body("detail", containsString("65537 bytes, over the limit of 65536 bytes"));
        // A request target that does not decode (a bad %-escape) is not HTTP the server takes: it answers 400 itself,
        // with no body, and closes the connection; nothing reaches the store.
        for (String target : new String[] {"/v1/sequences/" + seq + "%zz/steps", steps + "?position=%zz"}) {
            assertThat(rawPost(target, step)).as(target).startsWith("HTTP/1.1 400").containsIgnoringCase(
                    "connection: close");
        }
        assertThat(client.resident(seq, 0)).as("nothing stored").isEqualTo(3);
        // A step with chosen experts counts them: a stray word after it, or a count out of range, is refused (read
        // by its size, the stray word would have been a second expert and every float after it shifted by one).
        byte[] stray = java.util.Arrays.copyOf(step, step.length + 4);
        given().contentType("application/octet-stream").body(stray).post(steps).then().statusCode(400)
                .contentType(PROBLEM).body("detail", containsString("a step with 1 chosen expert(s)"));
        for (int k : new int[] {0, SHAPE.topK() + 1}) {
            byte[] counted = step.clone();
            java.nio.ByteBuffer.wrap(counted).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(12, k);
            given().contentType("application/octet-stream").body(counted).post(steps).then().statusCode(400)
                    .contentType(PROBLEM).body("detail", containsString("names 1 to " + SHAPE.topK() + " of them, got "
                            + k));
        }
        // The layout before the count (mode 1, counted by the size) is refused, not read as one with a count.
        byte[] uncounted = step.clone();
        java.nio.ByteBuffer.wrap(uncounted).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(4, 1);
        given().contentType("application/octet-stream").body(uncounted).post(steps).then().statusCode(400)
                .contentType(PROBLEM).body("detail", containsString("step mode 1 (chosen experts counted by the "
                        + "body's size) is not taken: send mode 2"));
        assertThat(client.resident(seq, 0)).as("nothing stored").isEqualTo(3);
        // Content type, accepted answer types, the id, the position, the method.
        given().contentType(ContentType.JSON).body("{}").post(steps).then().statusCode(415).contentType(PROBLEM)
                .body("detail", containsString("KV payloads are application/octet-stream"));
        given().contentType("Application/Octet-Stream; foo=bar").accept("application/json").body(step).post(steps)
                .then().statusCode(406).contentType(PROBLEM);
        given().contentType("application/octet-stream").body(step).post("/v1/sequences/abc/steps")
                .then().statusCode(404).contentType(PROBLEM).body("detail", equalTo("no such resource: /v1/sequences/abc/steps"));
        given().contentType("application/octet-stream").body(step).post(steps + "?position=x")
                .then().statusCode(400).contentType(PROBLEM)
                .body("detail", equalTo("position must be a whole number in digits 0-9, got 'x'"));
        // No sign, no other script's digits, one value (which of two a reader would take is not the client's guess).
        for (String[] bad : new String[][] {{"-1", "-1"}, {"%2B5", "+5"}, {"%D9%A5", "\u0665"}}) {
            given().contentType("application/octet-stream").body(step).urlEncodingEnabled(false)
                    .post(steps + "?position=" + bad[0]).then().statusCode(400).contentType(PROBLEM)
                    .body("detail", equalTo("position must be a whole number in digits 0-9, got '" + bad[1] + "'"));
        }
        given().contentType("application/octet-stream").body(step).urlEncodingEnabled(false)
                .post(steps + "?position=&position=5").then().statusCode(400).contentType(PROBLEM)
                .body("detail", equalTo("position must be given once, got 2 values [, 5]"));
        // Parameters are separated by '&' only: a ';' is part of the value, not a second parameter.
        given().contentType("application/octet-stream").body(step).urlEncodingEnabled(false)
                .post(steps + "?position=7;8").then().statusCode(400).contentType(PROBLEM)
                .body("detail", equalTo("position must be a whole number in digits 0-9, got '7;8'"));
        // The same with a matrix parameter on the last segment (served by the REST layer, not the step route).
        given().contentType("application/octet-stream").body(step).urlEncodingEnabled(false)
                .post(steps + ";m?position=7;8").then().statusCode(400).contentType(PROBLEM)
                .body("detail", equalTo("position must be a whole number in digits 0-9, got '7;8'"));
        given().contentType("application/octet-stream").body(step).post(steps + "?position=2147483648")
                .then().statusCode(400).contentType(PROBLEM)
                .body("detail", equalTo("position must be at most 2147483647, got 2147483648"));
        given().contentType("application/octet-stream").body(step).post(steps + "?position=99999999999999999999999")
                .then().statusCode(400).contentType(PROBLEM)
                .body("detail", equalTo("position must be at most 2147483647, got 99999999999999999999999"));
        given().contentType("application/octet-stream").post(steps).then().statusCode(400).contentType(PROBLEM)
                .body("detail", containsString("0 bytes"));
        given().get(steps).then().statusCode(405).contentType(PROBLEM);
        // Forms and multipart bodies are refused for their type before anything reads them.
        given().contentType(ContentType.URLENC).formParam("a", "1").post(steps).then().statusCode(415)
                .contentType(PROBLEM);
        given().multiPart("part", "abc").post(steps).then().statusCode(415).contentType(PROBLEM);
        given().get("/v1/sequences/" + seq).then().body("layers[0].length", equalTo(3));
        // What the REST layer takes, these routes take: no content type (octets), an Accept over two headers, an
        // expectation other than 100-continue (ignored), an empty position (none: the shard routes the step itself).
        given().header("Expect", "something").header("Accept", "application/json").header("Accept", "*/*")
                .body(step).post(steps + "?position=").then().statusCode(200);
        given().get("/v1/sequences/" + seq).then().body("layers[0].length", equalTo(4));
        java.net.http.HttpClient http = java.net.http.HttpClient.newBuilder()
                .version(java.net.http.HttpClient.Version.HTTP_1_1).build();
        java.net.URI at = url.toURI().resolve(steps.substring(1));
        java.net.http.HttpResponse<String> untyped = http.send(java.net.http.HttpRequest.newBuilder(at)
                .POST(java.net.http.HttpRequest.BodyPublishers.ofByteArray(step)).build(),
                java.net.http.HttpResponse.BodyHandlers.ofString());
        assertThat(untyped.statusCode()).as(untyped.body()).isEqualTo(200);
        assertThat(untyped.request().headers().firstValue("Content-Type")).isEmpty();
        given().get("/v1/sequences/" + seq).then().body("layers[0].length", equalTo(5));
        // A body without a declared length is counted as it is read, and refused once it passes the limit.
        java.net.http.HttpResponse<String> chunked = http.send(java.net.http.HttpRequest.newBuilder(at)
                .header("Content-Type", "application/octet-stream")
                .POST(java.net.http.HttpRequest.BodyPublishers.ofInputStream(
                        () -> new java.io.ByteArrayInputStream(new byte[70_000]))).build(),
                java.net.http.HttpResponse.BodyHandlers.ofString());
        assertThat(chunked.statusCode()).isEqualTo(413);
        assertThat(chunked.headers().firstValue("Content-Type")).contains(PROBLEM);
        assertThat(chunked.body()).contains("more than 65536 bytes, over the limit of 65536 bytes");
        // A refusal before a body the client holds back for 100 Continue closes the connection: nothing would mark
        // where the next request starts.
        try (java.net.Socket raw = new java.net.Socket(url.getHost(), url.getPort())) {
            raw.setSoTimeout(10_000);
            raw.getOutputStream().write(("POST " + steps + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + "Expect: 100-continue\r\nContent-Length: 100\r\n\r\n").getBytes(java.nio.charset.StandardCharsets.US_ASCII));
            String answer = new String(raw.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.US_ASCII);
            assertThat(answer).startsWith("HTTP/1.1 415").containsIgnoringCase("connection: close")
                    .contains("unsupported content type");
        }
        // Then a good step at the position the gateway gives, with parameters in the content type.
        given().contentType("application/octet-stream; charset=binary").accept("application/octet-stream, */*")
                .body(step).post(steps + "?position=5").then().statusCode(200).contentType("application/octet-stream");
        given().get("/v1/sequences/" + seq).then().body("layers[0].length", equalTo(6));
        // Leading zeros are digits too: position 6.
        given().contentType("application/octet-stream").body(step).post(steps + "?position=000000000006").then()
                .statusCode(200);
        given().get("/v1/sequences/" + seq).then().body("layers[0].length", equalTo(7));
        client.closeSequence(seq);
    }

    private static void rejects(long seq, String endpoint, byte[] body, int status, String detail) {
        given().contentType("application/octet-stream").body(body).post("/v1/sequences/" + seq + "/" + endpoint)
                .then().statusCode(status).contentType(PROBLEM).body("status", equalTo(status))
                .body("detail", containsString(detail));
    }

    @jakarta.inject.Inject
    Sidecar sidecar;

    @Test
    void kvRequestsWaitUntilTheSidecarServesWhileRemovalsAndReadsDoNot() throws Exception {
        SidecarClient client = client();
        long seq = open(client);
        Random rnd = new Random(4);
        client.append(seq, entries(0, 3, rnd));
        JsonNode before = client.stats();
        sidecar.servingGate(() -> "it is still reading control topic pikv.control");
        sidecar.manualMapGate(() -> "it is still reading control topic pikv.control");
        try {
            String notReady = "the sidecar is not ready to serve KV: it is still reading control topic pikv.control";
            given().contentType(ContentType.JSON).body("{\"model\":" + MODEL + "}").post("/v1/sequences").then()
                    .statusCode(503).contentType(PROBLEM).body("type", equalTo("urn:pikv:problem:not-ready"))
                    .body("detail", containsString(notReady));
            rejects(seq, "entries", Wire.encodeAppend(entries(0, 2, rnd)), 503, notReady);
            rejects(seq, "attention", Wire.encodeAttend(new Wire.AttendRequest(0, new int[0],
                    gaussian(SHAPE.queryWidth(), rnd))), 503, notReady);
            rejects(seq, "steps", Wire.encodeStep(new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, 0, null,
                    new int[] {1}, gaussian(SHAPE.queryWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd),
                    gaussian(SHAPE.kvWidth(), rnd))), 503, notReady);
            // A map by hand would outrank the control records still being read.
            long epoch = given().get("/v1/shard-map").then().statusCode(200).extract().jsonPath().getLong("epoch");
            given().contentType(ContentType.JSON).body("{\"epoch\":" + (epoch + 1) + ",\"shards\":1,\"shardOfExpert\":"
                    + java.util.Arrays.toString(new int[SHAPE.experts()]) + "}").put("/v1/shard-map").then()
                    .statusCode(503).contentType(PROBLEM).body("detail", containsString(notReady));
            given().get("/v1/shard-map").then().statusCode(200).body("epoch", equalTo((int) epoch));
            // Nothing was stored or counted; reading and removing do not wait.
            given().get("/v1/sequences/" + seq).then().statusCode(200).body("layers[0].length", equalTo(3));
            JsonNode after = client.stats();
            for (String figure : new String[] {"entries", "bytesInUse", "lookups", "hits", "misses", "sequences"}) {
                assertThat(after.get(figure)).as(figure).isEqualTo(before.get(figure));
            }
            given().contentType(ContentType.JSON).body("{\"layer\":0,\"positions\":[2]}")
                    .post("/v1/sequences/" + seq + "/withdrawals").then().statusCode(200).body("withdrawn", equalTo(1));
            given().delete("/v1/sequences/" + seq).then().statusCode(204);
            // Serving again while the read goes on (a broker silent past the start-up wait): KV is served, a map by
            // hand still waits for the read's end.
            sidecar.servingGate(() -> null);
            sidecar.manualMapGate(() -> "it is still reading control topic pikv.control (serving meanwhile)");
            long served = open(client);
            given().contentType(ContentType.JSON).body("{\"epoch\":" + (epoch + 1) + ",\"shards\":1,\"shardOfExpert\":"
                    + java.util.Arrays.toString(new int[SHAPE.experts()]) + "}").put("/v1/shard-map").then()
                    .statusCode(503).contentType(PROBLEM).body("type", equalTo("urn:pikv:problem:not-ready"))
                    .body("detail", containsString("(serving meanwhile)"));
            given().get("/v1/shard-map").then().statusCode(200).body("epoch", equalTo((int) epoch));
            client.closeSequence(served);
        } finally {
            // The listener has read the topic (AwaitServing), and stays ready with its read over.
            sidecar.servingGate(() -> null);
            sidecar.manualMapGate(() -> null);
        }
    }

    @Test
    void prefixBlocks() throws Exception {
        SidecarClient client = client();
        client.putBlock("00ff", new byte[] {1, 2, 3});
        assertThat(client.getBlock("ff")).containsExactly(1, 2, 3);
        assertThat(client.getBlock("abc")).isNull();
        client.putBlock("1", new byte[600]);
        client.putBlock("2", new byte[600]); // capacity 1000 bytes: block 1 goes
        assertThat(client.getBlock("1")).isNull();
        assertThat(client.getBlock("2")).hasSize(600);
        // The block cache runs the adaptive policy (LRU active at first) with ghosts of its four candidates. It was
        // sized from the first block (1000 / 3 = 333 blocks); the second put kept that size (of two sizes, the cache's
        // own), and the third resized it to the typical size stored (the middle of three), 600 bytes: one block (block
        // 00ff went to make room, then block 1). The ghosts restarted
        // with that count and saw the two lookups since: block 1 missed, block 2 hit.
        given().get("/v1/stats").then().statusCode(200).body("blocks.policy", equalTo("adaptive/lru"))
                .body("blocks.capacityBlocks", equalTo(1)).body("blocks.evictions", equalTo(2))
                .body("blocks.hits", equalTo(2)).body("blocks.misses", equalTo(2))
                .body("blocks.ghostHitRates.lru", equalTo(0.5f))
                .body("blocks.ghostHitRates.keySet()", containsInAnyOrder("lru", "h2o", "utility", "lrfu"));
        // HEAD asks without looking up: the length of a cached block, 404 for another, and no hit or miss counted.
        given().head("/v1/blocks/2").then().statusCode(200).header("Content-Length", "600");
        given().head("/v1/blocks/1").then().statusCode(404);
        given().get("/v1/stats").then().body("blocks.hits", equalTo(2)).body("blocks.misses", equalTo(2));
        assertThatThrownBy(() -> client.putBlock("3", new byte[1001])).isInstanceOf(SidecarException.class)
                .hasMessageContaining("413").hasMessageContaining("exceeds the block cache capacity of 1000 bytes");
        given().get("/v1/blocks/xyz").then().statusCode(400).contentType(PROBLEM)
                .body("detail", equalTo("a block hash is 1 to 16 hex digits, got 'xyz'"));
        // The client checks a hash before sending it (IllegalArgumentException, not a 400 from the sidecar).
        for (String bad : new String[] {"", "a b", "0 HTTP/1.1\r\n\r\nDELETE /v1/sequences/1", "1/2", "12345678901234567"}) {
            assertThatThrownBy(() -> client.getBlock(bad)).as(bad).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("1 to 16 hex digits");
            assertThatThrownBy(() -> client.putBlock(bad, new byte[1])).as(bad)
                    .isInstanceOf(IllegalArgumentException.class);
        }
    }

    @Test
    void configStatsAndOperability() {
        given().get("/v1/config").then().statusCode(200).body("role", equalTo("shard")).body("pageTokens", equalTo(16))
                .body("budgetBytes", equalTo(16384)).body("compute", equalTo("auto"))
                .body("attention", containsString("CPU thread(s)")).body("eviction", equalTo("reject"))
                .body("evictionParameters", equalTo(null)).body("kernel", equalTo("auto"))
                .body("sequenceIdleTimeout", equalTo("PT1H")).body("telemetryTopic", equalTo("pikv.cache-events"))
                .body("controlTopic", equalTo("pikv.control"));
        given().get("/v1/shard-map").then().statusCode(200).body("shardOfExpert.size()", equalTo(4));
        // A hand-applied map may not jump the epoch far ahead (control records up to it would be ignored).
        long epoch = given().get("/v1/shard-map").then().extract().jsonPath().getLong("epoch");
        given().contentType(ContentType.JSON).body("{\"epoch\":1000000000000,\"shards\":1,\"shardOfExpert\":[0,0,0,0]}")
                .put("/v1/shard-map").then().statusCode(400).contentType(PROBLEM)
                .body("detail", containsString("epoch 1000000000000 jumps more than 1000 past the map in effect"));
        given().get("/v1/shard-map").then().body("epoch", equalTo((int) epoch));
        // A missing or null required field is said by name (not read as 0, not a parse error).
        for (String[] bad : new String[][] {{"{\"shards\":1,\"shardOfExpert\":[0,0,0,0]}", "epoch"},
                {"{\"epoch\":null,\"shards\":1,\"shardOfExpert\":[0,0,0,0]}", "epoch"},
                {"{\"epoch\":5,\"shardOfExpert\":[0,0,0,0]}", "shards"},
                {"{\"epoch\":5,\"shards\":1}", "shardOfExpert"}}) {
            given().contentType(ContentType.JSON).body(bad[0]).put("/v1/shard-map").then().statusCode(400)
                    .contentType(PROBLEM).body("type", equalTo("urn:pikv:problem:invalid-request"))
                    .body("detail", equalTo(bad[1] + " is required"));
        }
        given().get("/v1/shard-map").then().body("epoch", equalTo((int) epoch));
        // The source is the sidecar's to say (manual for a map by hand): a body naming one is refused, not ignored.
        given().contentType(ContentType.JSON).body("{\"epoch\":" + (epoch + 1) + ",\"shards\":1,\"shardOfExpert\":"
                        + "[0,0,0,0],\"source\":\"control\"}")
                .put("/v1/shard-map").then().statusCode(400).contentType(PROBLEM)
                .body("type", equalTo("urn:pikv:problem:malformed-json")).body("detail", containsString("source"));
        given().get("/v1/shard-map").then().body("epoch", equalTo((int) epoch));
        given().get("/v1/stats").then().statusCode(200).body("budgetBytes", equalTo(16384));
        // Ready once the control topic has been read (the suite's broker serves it).
        await().atMost(Duration.ofSeconds(10)).untilAsserted(() -> given().get("/q/health/ready").then().statusCode(200));
        given().get("/q/health/ready").then().statusCode(200)
                .body("checks.find { it.name == 'kv' }.data.budgetBytes", equalTo(16384));
        given().accept("text/plain").get("/q/metrics").then().statusCode(200)
                .body(containsString("pikv_kv_budget_bytes")).body(containsString("pikv_kv_resident_bytes"))
                .body(containsString("pikv_kv_hit_ratio"))
                .body(containsString("pikv_blocks_capacity_bytes")).body(containsString("pikv_blocks_hits_total"))
                .body(containsString("pikv_request_seconds_bucket"));
        given().get("/q/openapi").then().statusCode(200).body(containsString("/v1/sequences/{id}/steps"));
        given().accept("application/json").get("/q/openapi").then().statusCode(200)
                .body("paths.'/v1/sequences/{id}/steps'.post.parameters.find { it.name == 'position' }.schema.type",
                        equalTo("integer"));
    }

    @Test
    void openApiDocumentsEveryOperationsProblems() throws Exception {
        JsonNode doc = new com.fasterxml.jackson.databind.ObjectMapper().readTree(
                given().accept("application/json").get("/q/openapi").then().statusCode(200).extract().asString());
        java.util.Set<String> served = new java.util.TreeSet<>();
        doc.get("paths").fields().forEachRemaining(path -> path.getValue().fieldNames().forEachRemaining(method -> {
            if (path.getKey().startsWith("/v1") && java.util.Set.of("get", "put", "post", "delete", "head", "patch")
                    .contains(method)) {
                served.add(method.toUpperCase(java.util.Locale.ROOT) + " " + path.getKey());
            }
        }));
        // Every /v1 operation has its errors in the table, and the table names no operation that is not served.
        assertThat(served).isEqualTo(new java.util.TreeSet<>(io.pikv.sidecar.api.ProblemResponses.TABLE.keySet()));
        JsonNode steps = doc.at("/paths/~1v1~1sequences~1{id}~1steps/post/responses");
        assertThat(steps.at("/404/content/application~1problem+json/schema/$ref").asText())
                .isEqualTo("#/components/schemas/Problem");
        assertThat(steps.at("/404/description").asText()).contains("unknown-sequence");
        assertThat(steps.has("200")).isTrue(); // the success answer is still the annotations'
        assertThat(doc.at("/paths/~1v1~1shard-map/put/responses/409/description").asText()).contains("stale-epoch");
        assertThat(doc.at("/components/schemas/Problem/properties/detail/type").asText()).isEqualTo("string");
    }
}
