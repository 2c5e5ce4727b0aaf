package io.pikv.sidecar.client;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * {@link Http1Client} against a scripted server on loopback: each accepted connection runs a script that reads
 * requests and writes raw answers, so framing, connection reuse and failures are exact.
 */
class Http1ClientTest {
    /** What one connection does: reads requests from {@code in}, writes answers to {@code out}. */
    interface Script {
        void run(int connection, InputStream in, OutputStream out) throws IOException;
    }

    private ServerSocket server;
    private final List<Socket> accepted = new ArrayList<>();
    private final BlockingQueue<String> requests = new LinkedBlockingQueue<>();
    private final AtomicInteger connections = new AtomicInteger();
    /** Released when a test ends: scripted servers that stall or pace wait on it. */
    private final java.util.concurrent.CountDownLatch stopped = new java.util.concurrent.CountDownLatch(1);
    private Http1Client client;

    private URI serve(Script script) throws IOException {
        return serve(new ServerSocket(0, 50, InetAddress.getLoopbackAddress()), script, "http");
    }

    /** Serves {@code script} on each connection {@code socket} accepts (a TLS one after its handshake). */
    private URI serve(ServerSocket socket, Script script, String scheme) {
        server = socket;
        Thread acceptor = new Thread(() -> {
            while (!server.isClosed()) {
                try {
                    Socket s = server.accept();
                    synchronized (accepted) {
                        accepted.add(s);
                    }
                    int n = connections.getAndIncrement();
                    Thread t = new Thread(() -> {
                        try (s) {
                            if (s instanceof javax.net.ssl.SSLSocket tls) {
                                tls.startHandshake();
                            }
                            script.run(n, s.getInputStream(), s.getOutputStream());
                        } catch (IOException ignored) {
                            // the client went away
                        }
                    });
                    t.setDaemon(true);
                    t.start();
                } catch (IOException e) {
                    return;
                }
            }
        });
        acceptor.setDaemon(true);
        acceptor.start();
        return URI.create(scheme + "://127.0.0.1:" + server.getLocalPort());
    }

    private Http1Client client(URI origin, Duration timeout) {
        client = new Http1Client(origin, Duration.ofSeconds(2), timeout, 1 << 20, 4);
        return client;
    }

    @AfterEach
    void stop() throws IOException {
        stopped.countDown();
        if (client != null) {
            client.close();
        }
        if (server != null) {
            server.close();
        }
        synchronized (accepted) {
            for (Socket s : accepted) {
                s.close();
            }
        }
    }

    /** Reads one request (head and Content-Length body), records "METHOD target body" and returns it. */
    private String readRequest(InputStream in) throws IOException {
        ByteArrayOutputStream head = new ByteArrayOutputStream();
        int matched = 0;
        while (matched < 4) {
            int b = in.read();
            if (b < 0) {
                return null;
            }
            head.write(b);
            matched = (b == '\r' && matched % 2 == 0) || (b == '\n' && matched % 2 == 1) ? matched + 1 : 0;
        }
        String[] lines = head.toString(StandardCharsets.ISO_8859_1).split("\r\n");
        int length = 0;
        for (String line : lines) {
            if (line.toLowerCase().startsWith("content-length:")) {
                length = Integer.parseInt(line.substring(15).trim());
            }
        }
        String body = new String(in.readNBytes(length), StandardCharsets.ISO_8859_1);
        String[] first = lines[0].split(" ");
        String request = first[0] + " " + first[1] + " " + body;
        requests.add(request);
        return request;
    }

    private static void write(OutputStream out, String raw) throws IOException {
        out.write(raw.getBytes(StandardCharsets.ISO_8859_1));
        out.flush();
    }

    @Test
    void aHostNameIsResolvedWithinTheConnectBudget() throws IOException {
        // Literals need no lookup; a name is looked up off the calling thread, and waited for at most the budget.
        assertThat(Http1Client.resolve("127.0.0.1", 8080, 1).getAddress().getHostAddress()).isEqualTo("127.0.0.1");
        assertThat(Http1Client.resolve("[::1]", 8080, 1).getAddress().isLoopbackAddress()).isTrue();
        assertThat(Http1Client.resolve("localhost", 8080, 10_000).getAddress().isLoopbackAddress()).isTrue();
        // A lookup that hangs (a DNS server that does not answer) fails as a timeout once the budget is spent.
        java.util.concurrent.CountDownLatch never = new java.util.concurrent.CountDownLatch(1);
        long start = System.nanoTime();
        assertThatThrownBy(() -> Http1Client.resolve("shard-1.pikv", 8080, 300, () -> {
            never.await();
            return java.net.InetAddress.getLoopbackAddress();
        })).isInstanceOf(java.net.SocketTimeoutException.class)
                .hasMessage("resolving shard-1.pikv took more than 300 ms");
        double waited = (System.nanoTime() - start) / 1e9;
        assertThat(waited).as("seconds").isBetween(0.29, 5.0);
        // A second caller of the name while that lookup still hangs joins it rather than start another.
        java.util.concurrent.atomic.AtomicInteger lookups = new java.util.concurrent.atomic.AtomicInteger();
        assertThatThrownBy(() -> Http1Client.resolve("shard-1.pikv", 8080, 100, () -> {
            lookups.incrementAndGet();
            return java.net.InetAddress.getLoopbackAddress();
        })).isInstanceOf(java.net.SocketTimeoutException.class);
        assertThat(lookups).hasValue(0);
        never.countDown();
        // One that fails says why: an unknown host stays an UnknownHostException.
        assertThatThrownBy(() -> Http1Client.resolve("shard-2.pikv", 8080, 10_000, () -> {
            throw new java.net.UnknownHostException("shard-2.pikv");
        })).isInstanceOf(java.net.UnknownHostException.class).hasMessage("shard-2.pikv");
        // Literals are addresses only: digits and dots that are none are a name, looked up within the budget (as a
        // literal, the JDK would look it up on the caller's thread without one).
        for (String literal : new String[] {"127.0.0.1", "255.255.255.254", "0.0.0.0", "[::1]", "[fe80::1%eth0]"}) {
            assertThat(Http1Client.literal(literal)).as(literal).isTrue();
        }
        for (String name : new String[] {"999.1.1.1", "1.2.3", "01.2.3.4", "localhost", "shard-0.pikv", "[x]"}) {
            assertThat(Http1Client.literal(name)).as(name).isFalse();
        }
    }

    @Test
    void failuresAreDescribedEvenWithoutAMessageAndLongBodiesAreCut() {
        assertThat(Http1Client.describe(new java.net.UnknownHostException())).isEqualTo("unknown host");
        assertThat(Http1Client.describe(new java.net.UnknownHostException("shard-1"))).isEqualTo("unknown host shard-1");
        assertThat(Http1Client.describe(new java.nio.channels.ClosedByInterruptException()))
                .isEqualTo("ClosedByInterruptException");
        assertThat(Http1Client.describe(new IOException("reset"))).isEqualTo("reset");
        byte[] page = ("<html>" + "x".repeat(100_000) + "</html>").getBytes(StandardCharsets.UTF_8);
        SidecarException e = SidecarException.of("GET http://s/v1/stats", 502, page);
        assertThat(e.detail()).hasSizeLessThan(SidecarException.MAX_DETAIL + 40).endsWith("… (100013 bytes)");
        assertThat(e.getMessage()).hasSizeLessThan(SidecarException.MAX_DETAIL + 80);
        assertThat(SidecarException.of("GET x", 409, "{\"detail\":\"taken\"}".getBytes(StandardCharsets.UTF_8))
                .detail()).isEqualTo("taken");
    }

    @Test
    void readsLengthChunkedAndCloseDelimitedBodiesAndReusesTheConnection() throws Exception {
        URI origin = serve((n, in, out) -> {
            readRequest(in);
            write(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello");
            readRequest(in);
            write(out, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\n"
                    + "X-Trailer: t\r\n\r\n");
            readRequest(in);
            write(out, "HTTP/1.1 204 No Content\r\n\r\n");
            readRequest(in);
            write(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));

        Http1Client.Response a = c.send("POST", "/a?x=1", "application/octet-stream", null, new byte[] {'q'});
        assertThat(a.status()).isEqualTo(200);
        assertThat(a.contentType()).isEqualTo("application/json");
        assertThat(new String(a.body(), StandardCharsets.UTF_8)).isEqualTo("hello");
        assertThat(c.idleConnections()).isEqualTo(1);

        Http1Client.Response b = c.send("PUT", "/b", null, null, "xyz".getBytes(StandardCharsets.UTF_8));
        assertThat(b.status()).isEqualTo(201);
        assertThat(new String(b.body(), StandardCharsets.UTF_8)).isEqualTo("abcdefg");

        assertThat(c.send("DELETE", "/c", null, null, null).body()).isEmpty();
        Http1Client.Response d = c.send("GET", "/d", null, null, null);
        assertThat(new String(d.body(), StandardCharsets.UTF_8)).isEqualTo("until the end");
        // All four on one connection; the last answer asked to close it, so nothing is kept.
        assertThat(connections.get()).isEqualTo(1);
        assertThat(c.idleConnections()).isZero();
        assertThat(requests).containsExactly("POST /a?x=1 q", "PUT /b xyz", "DELETE /c ", "GET /d ");
    }

    @Test
    void aLargeBodyArrivingInPiecesIsReadWhole() throws Exception {
        // Larger than the 64 KiB reserved up front: the buffer grows as the bytes come, and the body is exact.
        byte[] big = new byte[300_000];
        new java.util.Random(3).nextBytes(big);
        URI origin = serve((n, in, out) -> {
            readRequest(in);
            out.write(("HTTP/1.1 200 OK\r\nContent-Length: " + big.length + "\r\n\r\n").getBytes(StandardCharsets.ISO_8859_1));
            for (int off = 0; off < big.length; off += 7_000) {
                out.write(big, off, Math.min(7_000, big.length - off));
                out.flush();
            }
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        assertThat(c.send("GET", "/big", null, null, null).body()).isEqualTo(big);
    }

    @Test
    void startedExchangesRunAtOnceOnTheirOwnConnections() throws Exception {
        // Each connection answers only after a second request has arrived on another connection: the client must
        // have sent both before reading either answer.
        java.util.concurrent.CountDownLatch both = new java.util.concurrent.CountDownLatch(2);
        URI origin = serve((n, in, out) -> {
            String r = readRequest(in);
            both.countDown();
            boolean together;
            try {
                together = both.await(2, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                return;
            }
            String body = together ? r.substring(r.lastIndexOf(' ') + 1) : "late";
            write(out, "HTTP/1.1 200 OK\r\nContent-Length: " + body.length() + "\r\n\r\n" + body);
            readRequest(in);
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        Http1Client.Exchange one = c.start("POST", "/1", null, null, "one".getBytes(StandardCharsets.UTF_8));
        Http1Client.Exchange two = c.start("POST", "/2", null, null, "two".getBytes(StandardCharsets.UTF_8));
        assertThat(new String(two.await().body(), StandardCharsets.UTF_8)).isEqualTo("two");
        assertThat(new String(one.await().body(), StandardCharsets.UTF_8)).isEqualTo("one");
        assertThat(connections.get()).isEqualTo(2);
        assertThat(c.idleConnections()).isEqualTo(2);
    }

    @Test
    void aConnectionIdleTooLongIsClosedRatherThanUsed() throws Exception {
        URI origin = serve((n, in, out) -> {
            while (readRequest(in) != null) {
                write(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nc" + n);
            }
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        assertThat(new String(c.send("POST", "/a", null, null, null).body(), StandardCharsets.UTF_8)).isEqualTo("c0");
        assertThat(new String(c.send("POST", "/b", null, null, null).body(), StandardCharsets.UTF_8)).isEqualTo("c0");
        c.maxIdleNanos = 0; // every kept connection is now too old: a silently dropped one would hang a POST
        assertThat(new String(c.send("POST", "/c", null, null, null).body(), StandardCharsets.UTF_8)).isEqualTo("c1");
        assertThat(connections.get()).isEqualTo(2);
        assertThat(c.idleConnections()).isEqualTo(1);
    }

    @Test
    void connectionsABurstLeftIdleAreClosedOnceTooOldThoughNewerOnesServe() throws Exception {
        java.util.concurrent.CountDownLatch burst = new java.util.concurrent.CountDownLatch(3);
        URI origin = serve((n, in, out) -> {
            String r = readRequest(in);
            burst.countDown(); // the burst's three exchanges are all sent before any is answered
            try {
                burst.await(2, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                return;
            }
            while (r != null) {
                write(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nc" + n);
                r = readRequest(in);
            }
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        List<Http1Client.Exchange> sent = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            sent.add(c.start("POST", "/" + i, null, null, null));
        }
        for (Http1Client.Exchange e : sent) {
            e.await();
        }
        assertThat(c.idleConnections()).isEqualTo(3);
        // The two least recently used have been idle past the limit; the newest has not and serves the next call.
        c.ageIdle(1, c.maxIdleNanos + 1);
        c.send("POST", "/next", null, null, null);
        assertThat(connections.get()).isEqualTo(3);
        assertThat(c.idleConnections()).as("the stale ones closed when the serving one went back").isEqualTo(1);
    }

    @Test
    void aKeptConnectionTheServerClosedIsNotUsed() throws Exception {
        URI origin = serve((n, in, out) -> {
            readRequest(in);
            write(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nc" + n);
            // connection 0 then closes while the client keeps it idle; later connections serve on
            if (n > 0) {
                while (readRequest(in) != null) {
                    write(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nc" + n);
                }
            }
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        assertThat(new String(c.send("GET", "/x", null, null, null).body(), StandardCharsets.UTF_8)).isEqualTo("c0");
        awaitClosedByServer();
        assertThat(new String(c.send("POST", "/y", null, null, "p".getBytes(StandardCharsets.UTF_8)).body(),
                StandardCharsets.UTF_8)).isEqualTo("c1");
        // The request reached the server once only: on the new connection.
        assertThat(requests).containsExactly("GET /x ", "POST /y p");
    }

    private void awaitClosedByServer() {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (System.nanoTime() < deadline) {
            synchronized (accepted) {
                if (!accepted.isEmpty() && accepted.get(0).isClosed()) {
                    return;
                }
            }
            Thread.onSpinWait();
        }
        throw new AssertionError("the server did not close its first connection");
    }

    @Test
    void aPostWhoseKeptConnectionDropsIsNotSentTwice() throws Exception {
        URI origin = serve((n, in, out) -> {
            readRequest(in);
            write(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            readRequest(in); // then closes without an answer, after acting on it
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        c.send("GET", "/warm", null, null, null);
        assertThatThrownBy(() -> c.send("POST", "/p", null, null, "once".getBytes(StandardCharsets.UTF_8)))
                .isInstanceOf(UncheckedIOException.class).hasMessageContaining("closed before an answer");
        assertThat(requests).containsExactly("GET /warm ", "POST /p once");
        assertThat(connections.get()).isEqualTo(1);
    }

    @Test
    void anIdempotentRequestWhoseKeptConnectionDropsIsSentOnceMore() throws Exception {
        URI origin = serve((n, in, out) -> {
            if (n == 0) {
                readRequest(in);
                write(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                readRequest(in); // and closes without an answer
                return;
            }
            readRequest(in);
            write(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain");
            readRequest(in);
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        c.send("GET", "/warm", null, null, null);
        assertThat(new String(c.send("PUT", "/b", null, null, "x".getBytes(StandardCharsets.UTF_8)).body(),
                StandardCharsets.UTF_8)).isEqualTo("again");
        assertThat(requests).containsExactly("GET /warm ", "PUT /b x", "PUT /b x");
        assertThat(connections.get()).isEqualTo(2);
    }

    @Test
    void bytesArrivingOnAnIdleConnectionRetireIt() throws Exception {
        java.util.concurrent.CountDownLatch sent = new java.util.concurrent.CountDownLatch(1);
        URI origin = serve((n, in, out) -> {
            readRequest(in);
            if (n == 0) {
                write(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                // A server giving up on an idle connection: an answer to no request, then it waits to close.
                write(out, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
                sent.countDown();
                in.read();
                return;
            }
            write(out, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew");
            readRequest(in);
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        c.send("GET", "/warm", null, null, null);
        assertThat(sent.await(5, TimeUnit.SECONDS)).isTrue();
        Http1Client.Response r = c.send("POST", "/x", null, null, "b".getBytes(StandardCharsets.UTF_8));
        assertThat(r.status()).isEqualTo(200);
        assertThat(new String(r.body(), StandardCharsets.UTF_8)).isEqualTo("new");
        assertThat(requests).containsExactly("GET /warm ", "POST /x b");
    }

    @Test
    void aServerThatReadsNothingTimesOutTheSend() throws Exception {
        URI origin = serve((n, in, out) -> {
            try {
                stopped.await(10, TimeUnit.SECONDS); // accepts, never reads: the client's large body fills the buffers
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        Http1Client c = client(origin, Duration.ofMillis(300));
        long t0 = System.nanoTime();
        assertThatThrownBy(() -> c.send("POST", "/big", null, null, new byte[64 << 20]))
                .isInstanceOf(UncheckedIOException.class).hasMessageContaining("no answer within 300 ms")
                .hasCauseInstanceOf(SocketTimeoutException.class);
        assertThat((System.nanoTime() - t0) / 1e9).isLessThan(5);
    }

    @Test
    void aTricklingAnswerTimesOut() throws Exception {
        URI origin = serve((n, in, out) -> {
            readRequest(in);
            write(out, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
            for (int i = 0; i < 100; i++) {
                write(out, "x");
                try {
                    if (stopped.await(50, TimeUnit.MILLISECONDS)) {
                        return; // one byte every 50 ms until the test ends
                    }
                } catch (InterruptedException e) {
                    return;
                }
            }
        });
        Http1Client c = client(origin, Duration.ofMillis(400));
        long t0 = System.nanoTime();
        assertThatThrownBy(() -> c.send("GET", "/slow", null, null, null))
                .isInstanceOf(UncheckedIOException.class).hasMessageContaining("no answer within 400 ms");
        assertThat((System.nanoTime() - t0) / 1e9).isLessThan(3);
        assertThat(c.idleConnections()).isZero();
    }

    @Test
    void answersWithoutBodiesAndChunkingOverLengthFrameCorrectly() throws Exception {
        URI origin = serve((n, in, out) -> {
            if (n == 0) {
                readRequest(in);
                write(out, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"); // HEAD: the length, no body
                readRequest(in);
                write(out, "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n");
                readRequest(in);
                write(out, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n"
                        + "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n");
            }
            // Chunks and a length in one answer: read by the chunks, and the connection is not used again.
            readRequest(in);
            write(out, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast");
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        assertThat(c.send("HEAD", "/h", null, null, null).body()).isEmpty();
        assertThat(c.send("GET", "/n", null, null, null).status()).isEqualTo(304);
        assertThat(new String(c.send("GET", "/c", null, null, null).body(), StandardCharsets.UTF_8)).isEqualTo("hi");
        assertThat(new String(c.send("GET", "/l", null, null, null).body(), StandardCharsets.UTF_8)).isEqualTo("last");
        assertThat(connections.get()).isEqualTo(2);
    }

    @Test
    void aNewConnectionThatFailsIsNotRetried() throws Exception {
        URI origin = serve((n, in, out) -> {
            readRequest(in); // and close without an answer: the server may have acted on it
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        assertThatThrownBy(() -> c.send("POST", "/z", null, null, "once".getBytes(StandardCharsets.UTF_8)))
                .isInstanceOf(UncheckedIOException.class)
                .hasMessageContaining("POST " + origin + "/z failed")
                .hasMessageContaining("closed before an answer");
        assertThat(requests).containsExactly("POST /z once");
        assertThat(connections.get()).isEqualTo(1);
    }

    @Test
    void aSilentServerTimesOutWithoutARetry() throws Exception {
        URI origin = serve((n, in, out) -> {
            readRequest(in);
            write(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            readRequest(in);
            in.read(); // never answers the second request
        });
        Http1Client c = client(origin, Duration.ofMillis(1000));
        c.send("GET", "/warm", null, null, null);
        assertThatThrownBy(() -> c.send("POST", "/slow", null, null, "s".getBytes(StandardCharsets.UTF_8)))
                .isInstanceOf(UncheckedIOException.class)
                .hasCauseInstanceOf(SocketTimeoutException.class);
        assertThat(requests).containsExactly("GET /warm ", "POST /slow s");
        assertThat(c.idleConnections()).isZero();
    }

    @Test
    void anAnswerSentBeforeTheBodyWasReadIsReturned() throws Exception {
        URI origin = serve((n, in, out) -> {
            // Reads only the head, answers 413 and closes: the client's large body may not get through.
            int matched = 0;
            while (matched < 4) {
                int b = in.read();
                matched = (b == '\r' && matched % 2 == 0) || (b == '\n' && matched % 2 == 1) ? matched + 1 : 0;
            }
            write(out, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/problem+json\r\n"
                    + "Content-Length: 15\r\nConnection: close\r\n\r\n{\"detail\":\"no\"}");
            in.transferTo(OutputStream.nullOutputStream()); // then discards the body until the client closes
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        Http1Client.Response r = c.send("POST", "/big", "application/octet-stream", null, new byte[8 << 20]);
        assertThat(r.status()).isEqualTo(413);
        assertThat(new String(r.body(), StandardCharsets.UTF_8)).isEqualTo("{\"detail\":\"no\"}");
        assertThat(c.idleConnections()).isZero();
    }

    @Test
    void ambiguousOrUnframedBodiesAreReadWithoutTrustingTheConnectionAgain() throws Exception {
        String[] answers = {
            // chunked and a Content-Length: the chunks frame the body (RFC 9112), the connection is not kept
            "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            // an encoding that is not chunked last: the body ends with the connection
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzipped",
            // the combined list ends in gzip (an empty element is no coding): the body ends with the connection
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip, \r\n\r\nlast",
            // close in one Connection header and keep-alive in another: close wins
            "HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        };
        String[] bodies = {"hi", "zipped", "last", "ok"};
        URI origin = serve((n, in, out) -> {
            readRequest(in);
            write(out, answers[n]);
            out.close();
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        for (int i = 0; i < answers.length; i++) {
            Http1Client.Response r = c.send("GET", "/a", null, null, null);
            assertThat(new String(r.body(), StandardCharsets.UTF_8)).isEqualTo(bodies[i]);
            assertThat(c.idleConnections()).as(answers[i]).isZero();
        }
    }

    /**
     * A successful answer larger than the exchange's own limit (a partial's exact size) fails as soon as its length is
     * read, not once 200 MB arrived or the deadline passed; an error answer keeps the client's limit.
     */
    @Test
    void anAnswerOverTheExchangesLimitFailsOnItsLength() throws Exception {
        URI origin = serve((n, in, out) -> {
            readRequest(in);
            if (n == 0) {
                write(out, "HTTP/1.1 200 OK\r\nContent-Length: 200000000\r\n\r\n0123456789");
            } else {
                // A small error answer, kept alive; then on the same connection an error page far larger than its
                // detail (70,000 of its 200 MB sent).
                write(out, "HTTP/1.1 500 Oops\r\nContent-Length: 20\r\n\r\n01234567890123456789");
                readRequest(in);
                write(out, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 200000000\r\n\r\n" + "x".repeat(70_000));
            }
            readRequest(in); // holds the connection open
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        long[] t0 = {System.nanoTime()};
        assertThatThrownBy(() -> c.start("POST", "/p", null, null, new byte[1], 16).await())
                .isInstanceOf(UncheckedIOException.class).hasMessageContaining("over 16 bytes");
        assertThat(System.nanoTime() - t0[0]).as("failed on the length, not by the deadline")
                .isLessThan(TimeUnit.SECONDS.toNanos(3));
        assertThat(c.start("POST", "/p", null, null, new byte[1], 16).await().body()).hasSize(20);
        // An error answer keeps its status and the first 64 KiB of its body, read no further: its connection closed.
        t0[0] = System.nanoTime();
        Http1Client.Response big = c.start("POST", "/p", null, null, new byte[1], 16).await();
        assertThat(big.status()).isEqualTo(502);
        assertThat(big.body()).hasSize(Http1Client.ERROR_BODY_BYTES);
        assertThat(SidecarException.of("POST /p", 502, big.body()).detail()).endsWith("… (at least 65536 bytes)");
        assertThat(System.nanoTime() - t0[0]).isLessThan(TimeUnit.SECONDS.toNanos(3));
        assertThat(c.idleConnections()).isZero();
    }

    /** An HTTP/1.0 answer framed by a Transfer-Encoding is faulty (RFC 9112 6.1): read, and its connection not kept. */
    @Test
    void anHttp10AnswerWithATransferEncodingIsNotKept() throws Exception {
        URI origin = serve((n, in, out) -> {
            readRequest(in);
            write(out, n == 0 ? "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + "2\r\nok\r\n0\r\n\r\n" : "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok");
            readRequest(in); // holds the connection open
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        assertThat(new String(c.send("GET", "/a", null, null, null).body(), StandardCharsets.UTF_8)).isEqualTo("ok");
        assertThat(c.idleConnections()).isZero();
        // The same answer framed by its length is kept (HTTP/1.0 keep-alive).
        assertThat(new String(c.send("GET", "/a", null, null, null).body(), StandardCharsets.UTF_8)).isEqualTo("ok");
        assertThat(c.idleConnections()).isEqualTo(1);
    }

    @Test
    void malformedAnswersFailWithTheReason() throws Exception {
        String[] answers = {
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 2x0 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 -20 OK\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            "HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nhi\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n".replace("200 OK", "100 Continue").repeat(17) + "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi",
            "HTTP/1.1 200 OK\r\nX-A: v\r\n Content-Length: 99\r\nContent-Length: 2\r\n\r\nhi",
            // never asked for (no request names Upgrade): another protocol follows, not an answer
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        };
        String[] reasons = {"not an HTTP/1.x answer", "malformed status line", "malformed status line",
            "malformed status line", "malformed status line", "malformed Content-Length",
            "malformed header line", "malformed chunk size", "ended after 5 of 10 body bytes", "over 1048576 bytes",
            "conflicting Content-Length headers (2 and 3)", "malformed chunk size '+2'",
            "more than 16 informational (1xx) answers", "a Transfer-Encoding header names no coding",
            "malformed Content-Length '+2'", "folded header line", "unexpected 101 Switching Protocols"};
        URI origin = serve((n, in, out) -> {
            readRequest(in);
            write(out, answers[n]);
        });
        Http1Client c = client(origin, Duration.ofSeconds(5));
        for (int i = 0; i < answers.length; i++) {
            assertThatThrownBy(() -> c.send("GET", "/m", null, null, null))
                    .isInstanceOf(UncheckedIOException.class).hasMessageContaining(reasons[i]);
            assertThat(c.idleConnections()).isZero();
        }
    }

    @Test
    void refusedConnectionAndBadOriginsAreClearErrors() throws Exception {
        int port = 1; // privileged and unused: refused at once, and no port freed here that another test could take
        Http1Client c = client(URI.create("http://127.0.0.1:" + port), Duration.ofSeconds(1));
        assertThatThrownBy(() -> c.send("GET", "/", null, null, null))
                .isInstanceOf(UncheckedIOException.class).hasMessageContaining("GET http://127.0.0.1:" + port + "/ failed");
        assertThatThrownBy(() -> new Http1Client(URI.create("ftp://h/"), Duration.ofSeconds(1), Duration.ofSeconds(1),
                1, 1)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("not an http or https URL");
        assertThatThrownBy(() -> new Http1Client(URI.create("http:/nohost"), Duration.ofSeconds(1),
                Duration.ofSeconds(1), 1, 1)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("no host");
        for (String notAnOrigin : new String[] {"http://h:1/pikv", "http://h:1/pikv/", "http://h:1/?a=b", "http://h:1/#f"}) {
            assertThatThrownBy(() -> new Http1Client(URI.create(notAnOrigin), Duration.ofSeconds(1),
                    Duration.ofSeconds(1), 1, 1)).as(notAnOrigin).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("must be an origin");
        }
    }

    @Test
    void aTargetThatWouldSplitTheRequestLineIsRefusedBeforeAnythingIsSent() throws Exception {
        URI origin = serve((n, in, out) -> in.readAllBytes());
        Http1Client c = client(origin, Duration.ofSeconds(1));
        for (String target : new String[] {"/v1/blocks/a b", "/v1/blocks/0 HTTP/1.1\r\nHost: x\r\n\r\nDELETE /v1/x",
            "/v1/\n", "v1/stats", "", "/\u00e9"}) {
            assertThatThrownBy(() -> c.send("GET", target, null, null, null)).as(target)
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("request target");
        }
        assertThat(connections.get()).as("no connection was opened").isZero();
    }

    /** A key store with a self-signed certificate for 127.0.0.1, made by the JDK's keytool. */
    private static java.security.KeyStore selfSigned(java.nio.file.Path dir) throws Exception {
        java.nio.file.Path store = dir.resolve("server.p12");
        Process keytool = new ProcessBuilder(java.nio.file.Path.of(System.getProperty("java.home"), "bin", "keytool")
                .toString(), "-genkeypair", "-alias", "server", "-keyalg", "EC", "-dname", "CN=127.0.0.1",
                "-ext", "SAN=ip:127.0.0.1", "-validity", "2", "-storetype", "PKCS12", "-keystore", store.toString(),
                "-storepass", "secret", "-keypass", "secret").redirectErrorStream(true).start();
        String out = new String(keytool.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(keytool.waitFor()).as(out).isZero();
        java.security.KeyStore ks = java.security.KeyStore.getInstance("PKCS12");
        try (InputStream in = java.nio.file.Files.newInputStream(store)) {
            ks.load(in, "secret".toCharArray());
        }
        return ks;
    }

    @Test
    void overTlsKeptConnectionsWorkAndTheDeadlineEndsABlockedSend(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir)
            throws Exception {
        java.security.KeyStore ks = selfSigned(dir);
        javax.net.ssl.KeyManagerFactory kmf = javax.net.ssl.KeyManagerFactory.getInstance(
                javax.net.ssl.KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(ks, "secret".toCharArray());
        javax.net.ssl.TrustManagerFactory tmf = javax.net.ssl.TrustManagerFactory.getInstance(
                javax.net.ssl.TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        javax.net.ssl.SSLContext serverContext = javax.net.ssl.SSLContext.getInstance("TLS");
        serverContext.init(kmf.getKeyManagers(), null, null);
        javax.net.ssl.SSLContext clientContext = javax.net.ssl.SSLContext.getInstance("TLS");
        clientContext.init(null, tmf.getTrustManagers(), null);

        URI origin = serve(serverContext.getServerSocketFactory().createServerSocket(0, 50,
                InetAddress.getLoopbackAddress()), (n, in, out) -> {
                    if (n == 0) {
                        for (int i = 0; i < 2; i++) {
                            readRequest(in);
                            write(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        }
                    }
                    try {
                        stopped.await(10, TimeUnit.SECONDS); // then reads nothing
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }, "https");
        // A deadline that also covers the first TLS handshake of this JVM (key exchange and certificate checks run
        // cold, slowly on a loaded machine): 5 s, against the 64 MiB write that blocks for good below.
        client = new Http1Client(origin, Duration.ofSeconds(2), Duration.ofMillis(5000), 1 << 20, 4,
                clientContext.getSocketFactory());

        assertThat(new String(client.send("GET", "/a", null, null, null).body(), StandardCharsets.UTF_8))
                .isEqualTo("ok");
        assertThat(new String(client.send("GET", "/b", null, null, null).body(), StandardCharsets.UTF_8))
                .isEqualTo("ok");
        assertThat(connections.get()).isEqualTo(1);

        // Keep connection 0 busy with a call it never answers, so the POST takes a new connection whose server
        // completes the handshake and then reads nothing: the client blocks in a TLS write until the deadline.
        Http1Client.Exchange kept = client.start("GET", "/c", null, null, null);
        long t0 = System.nanoTime();
        assertThatThrownBy(() -> client.send("POST", "/big", null, null, new byte[64 << 20]))
                .isInstanceOf(UncheckedIOException.class).hasMessageContaining("no answer within 5000 ms");
        assertThat((System.nanoTime() - t0) / 1e9).isLessThan(10);
        assertThatThrownBy(kept::await).isInstanceOf(UncheckedIOException.class);
        // The deadline thread is free: a plain exchange afterwards still times out on time.
        long t1 = System.nanoTime();
        assertThatThrownBy(() -> client.send("GET", "/d", null, null, null)).isInstanceOf(UncheckedIOException.class);
        assertThat((System.nanoTime() - t1) / 1e9).isLessThan(10);
    }
}
