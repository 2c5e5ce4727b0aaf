package io.pikv.sidecar.client;

import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.SSLSocketFactory;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.URI;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

/**
 * A blocking HTTP/1.1 client of one origin with kept-alive connections, where the calling thread does its own I/O.
 *
 * <p>Why not the JDK's {@code HttpClient}: it hands every exchange to its selector thread and completes it on an
 * executor, three thread wake-ups per call that cost 1.5–3 ms per hop on the 2-core machines this was measured on
 * (docs/sidecar-api.md, Benchmark); here a call is a write and a read on the caller's thread. {@link #start} sends a
 * request without waiting for its answer, so a caller fans out to several shards by starting every call and then
 * reading each answer ({@link Exchange#await}), with no thread per call.
 *
 * <p>Requests carry {@code Content-Length}; answers may use {@code Content-Length}, chunked transfer coding, or
 * close-delimited bodies. A connection goes back to the idle pool after a complete answer unless either side asked
 * to close it, and is taken from it only if it is still open with nothing unread on it. Each exchange has one
 * deadline (the timeout) for connecting, sending and reading its whole answer; past it the connection is closed and
 * the call fails as timed out. An idempotent request (not a POST) whose kept connection fails before any byte of an
 * answer arrived is sent once more on a new connection; a POST never is, since the server may have acted on it.
 * {@code https} origins use the JDK's default TLS socket factory (or the one given) with host name verification.
 */
final class Http1Client implements AutoCloseable {
    /** Longest status line plus headers accepted in an answer. */
    static final int MAX_HEAD_BYTES = 64 * 1024;
    /** Informational (1xx) answers accepted before the real one. */
    static final int MAX_INFORMATIONAL = 16;

    /** Most of an answer's body reserved before its bytes arrive. */
    static final int INITIAL_BODY_BYTES = 64 << 10;
    /**
     * Bytes of an answer that is not 2xx kept (its problem's detail is in them): the rest is not read, and the
     * connection is closed rather than kept.
     */
    static final int ERROR_BODY_BYTES = 64 << 10;
    private final URI origin;
    private final String host;
    private final int port;
    private final boolean tls;
    private final String hostHeader;
    private final int connectTimeoutMs;
    private final int timeoutMs;
    private final long maxBodyBytes;
    private final int maxIdle;
    /** Longest a pooled connection is reused after its last answer: 60 s. */
    static final long MAX_IDLE_NANOS = 60_000_000_000L;
    /** {@link #MAX_IDLE_NANOS}, shorter in tests. */
    volatile long maxIdleNanos = MAX_IDLE_NANOS;
    private final SSLSocketFactory tlsFactory;
    private final ArrayDeque<Connection> idle = new ArrayDeque<>();
    /** Closes the connection of an exchange that runs past its deadline (one thread for every client). */
    private static final ScheduledThreadPoolExecutor DEADLINES = deadlines();
    private boolean closed;

    /** An answer: status, content type (null if none) and the body (of an answer that is not 2xx, its first 64 KiB). */
    record Response(int status, String contentType, byte[] body) {
    }

    Http1Client(URI origin, Duration connectTimeout, Duration timeout, long maxBodyBytes, int maxIdle) {
        this(origin, connectTimeout, timeout, maxBodyBytes, maxIdle, (SSLSocketFactory) SSLSocketFactory.getDefault());
    }

    /** With the TLS socket factory for {@code https} origins (tests pass one that trusts their own certificate). */
    Http1Client(URI origin, Duration connectTimeout, Duration timeout, long maxBodyBytes, int maxIdle,
                SSLSocketFactory tlsFactory) {
        String scheme = origin.getScheme() == null ? "" : origin.getScheme().toLowerCase(Locale.ROOT);
        if (!scheme.equals("http") && !scheme.equals("https")) {
            throw new IllegalArgumentException("'" + origin + "' is not an http or https URL");
        }
        if (origin.getHost() == null) {
            throw new IllegalArgumentException("'" + origin + "' has no host");
        }
        String path = origin.getRawPath();
        if (path != null && !path.isEmpty() && !path.equals("/") || origin.getRawQuery() != null
                || origin.getRawFragment() != null) {
            throw new IllegalArgumentException("'" + origin + "' must be an origin (scheme, host and port): the sidecar "
                    + "serves its API at the root, so a path, query or fragment would be ignored");
        }
        this.origin = origin;
        this.tls = scheme.equals("https");
        this.host = origin.getHost();
        this.port = origin.getPort() >= 0 ? origin.getPort() : tls ? 443 : 80;
        String h = host.contains(":") && !host.startsWith("[") ? "[" + host + "]" : host;
        this.hostHeader = origin.getPort() >= 0 ? h + ":" + port : h;
        this.connectTimeoutMs = millis(connectTimeout);
        this.timeoutMs = millis(timeout);
        this.maxBodyBytes = maxBodyBytes;
        this.maxIdle = maxIdle;
        this.tlsFactory = tlsFactory;
    }

    /**
     * Resolves host names off the calling thread, so that a connect's budget bounds the lookup too (the JDK's
     * resolver has no timeout of its own: a slow cluster DNS would hold a call past its deadline). A lookup left
     * behind by its call ends on its own and fills the JDK's address cache for the next.
     */
    private static final java.util.concurrent.ExecutorService RESOLVER = java.util.concurrent.Executors
            .newCachedThreadPool(r -> {
                Thread t = new Thread(r, "pikv-http-resolve");
                t.setDaemon(true);
                return t;
            });

    /** An IPv4 literal (each part 0 to 255) or a bracketed IPv6 one, which needs no lookup. */
    private static final java.util.regex.Pattern LITERAL = java.util.regex.Pattern.compile(
            "((25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)\\.){3}(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)"
                    + "|\\[[0-9A-Fa-f:.]+(%[0-9A-Za-z._-]+)?]");

    /**
     * Lookups under way, by host: callers of one name share one (a resolver that hangs holds one thread per name, not
     * one per call that gave up on it).
     */
    private static final java.util.concurrent.ConcurrentHashMap<String,
            java.util.concurrent.Future<java.net.InetAddress>> LOOKUPS = new java.util.concurrent.ConcurrentHashMap<>();

    /** {@code host}'s address within {@code timeoutMs}; a name not resolved by then fails as a timeout. */
    static InetSocketAddress resolve(String host, int port, int timeoutMs) throws IOException {
        if (literal(host)) {
            return new InetSocketAddress(host, port);
        }
        return resolve(host, port, timeoutMs, () -> java.net.InetAddress.getByName(host));
    }

    /** Whether {@code host} is an address literal (no lookup needed). */
    static boolean literal(String host) {
        return LITERAL.matcher(host).matches();
    }

    /** The lookup of {@code host} under way, or a new one; it leaves {@link #LOOKUPS} when it ends. */
    private static java.util.concurrent.Future<java.net.InetAddress> lookup(
            String host, java.util.concurrent.Callable<java.net.InetAddress> byName) {
        return LOOKUPS.computeIfAbsent(host, h -> {
            var f = new java.util.concurrent.CompletableFuture<java.net.InetAddress>();
            RESOLVER.execute(() -> {
                try {
                    f.complete(byName.call());
                } catch (Throwable e) {
                    f.completeExceptionally(e);
                } finally {
                    LOOKUPS.remove(h, f);
                }
            });
            return f;
        });
    }

    /** {@link #resolve(String, int, int)} with the lookup given (a test's, which may block). */
    static InetSocketAddress resolve(String host, int port, int timeoutMs,
                                     java.util.concurrent.Callable<java.net.InetAddress> byName) throws IOException {
        java.util.concurrent.Future<java.net.InetAddress> lookup = lookup(host, byName);
        try {
            return new InetSocketAddress(lookup.get(timeoutMs, TimeUnit.MILLISECONDS), port);
        } catch (java.util.concurrent.TimeoutException e) {
            throw new SocketTimeoutException("resolving " + host + " took more than " + timeoutMs + " ms");
        } catch (java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof IOException io) {
                throw io; // UnknownHostException, said as such
            }
            throw new IOException("resolving " + host + ": " + e.getCause(), e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt(); // the lookup goes on for the other callers of the name
            throw new java.io.InterruptedIOException("interrupted resolving " + host);
        }
    }

    private static ScheduledThreadPoolExecutor deadlines() {
        ScheduledThreadPoolExecutor e = new ScheduledThreadPoolExecutor(1, r -> {
            Thread t = new Thread(r, "pikv-http-deadlines");
            t.setDaemon(true);
            return t;
        });
        e.setRemoveOnCancelPolicy(true);
        return e;
    }

    private static int millis(Duration d) {
        return (int) Math.max(1, Math.min(Integer.MAX_VALUE, d.toMillis()));
    }

    /**
     * Sends the request on the caller's thread (connecting first when no kept connection is free) and returns the
     * exchange whose answer {@link Exchange#await} reads. The request is out when this returns, unless a server does
     * not take its body: then this waits, at most until the exchange's deadline.
     */
    Exchange start(String method, String target, String contentType, String accept, byte[] body) {
        return start(method, target, contentType, accept, body, maxBodyBytes);
    }

    /**
     * As {@link #start(String, String, String, String, byte[])}, with a smaller limit on a successful answer's body
     * (one whose size the caller knows, as a partial's): a larger one fails as soon as its length is read, rather than
     * after it was read whole. Answers that are not 2xx keep the client's limit (a problem's detail).
     */
    Exchange start(String method, String target, String contentType, String accept, byte[] body, long answerLimit) {
        // The target goes into the request line as it is: anything but visible ASCII (a space, CR or LF) would end
        // it early or start another request on the same connection.
        if (target.isEmpty() || target.charAt(0) != '/' || !target.chars().allMatch(c -> c > 0x20 && c < 0x7f)) {
            throw new IllegalArgumentException("a request target is '/' and visible ASCII characters only, got '"
                    + target + "'");
        }
        return new Exchange(method, target, contentType, accept, body, Math.min(answerLimit, maxBodyBytes));
    }

    /** Sends the request and reads its answer. */
    Response send(String method, String target, String contentType, String accept, byte[] body) {
        return start(method, target, contentType, accept, body).await();
    }

    /** Closes the idle connections; exchanges in flight finish and close theirs. */
    @Override
    public void close() {
        synchronized (idle) {
            closed = true;
            for (Connection c : idle) {
                c.closeQuietly();
            }
            idle.clear();
        }
    }

    /** Makes the idle connections after the {@code skip} most recent ones {@code nanos} older (for tests). */
    void ageIdle(int skip, long nanos) {
        synchronized (idle) {
            int i = 0;
            for (Connection c : idle) {
                if (i++ >= skip) {
                    c.idleSince -= nanos;
                }
            }
        }
    }

    /** Idle connections held (for tests). */
    int idleConnections() {
        synchronized (idle) {
            return idle.size();
        }
    }

    /**
     * The most recently used idle connection, if one was used within {@link #maxIdleNanos}: a connection idle longer
     * may have been dropped silently on the way (a load balancer, connection tracking), and a POST sent on it would
     * wait out the whole timeout and is never sent twice. Older ones are closed.
     */
    private Connection pooled() {
        List<Connection> stale = new ArrayList<>();
        Connection found = null;
        long now = System.nanoTime();
        synchronized (idle) {
            Connection c = idle.pollFirst();
            if (c != null && now - c.idleSince <= maxIdleNanos) {
                found = c;
            } else if (c != null) {
                stale.add(c);
                stale.addAll(idle); // the pool is last-in first-out: every other one is older still
                idle.clear();
            }
        }
        stale.forEach(Connection::closeQuietly);
        return found;
    }

    private void release(Connection c) {
        long now = System.nanoTime();
        c.idleSince = now;
        List<Connection> stale = new ArrayList<>();
        boolean kept = false;
        synchronized (idle) {
            if (!closed && idle.size() < maxIdle) {
                idle.addFirst(c);
                kept = true;
            }
            // The pool is last-in first-out: under steady traffic its head is always fresh, so the connections a burst
            // left behind would otherwise wait at its tail, unused, for as long as the traffic lasts.
            Connection oldest;
            while ((oldest = idle.peekLast()) != null && now - oldest.idleSince > maxIdleNanos) {
                stale.add(idle.pollLast());
            }
        }
        stale.forEach(Connection::closeQuietly);
        if (!kept) {
            c.closeQuietly();
        }
    }

    private Connection connect(int timeout) throws IOException {
        SocketChannel channel = SocketChannel.open();
        Socket socket = channel.socket();
        try {
            socket.setTcpNoDelay(true);
            socket.setKeepAlive(true);
            long start = System.nanoTime();
            InetSocketAddress address = resolve(host, port, timeout);
            // What the lookup left of the budget (at least a millisecond: 0 would mean no timeout at all).
            socket.connect(address, (int) Math.max(1, timeout - (System.nanoTime() - start) / 1_000_000));
            socket.setSoTimeout(timeoutMs);
            Socket stream = socket;
            if (tls) {
                SSLSocket ssl = (SSLSocket) tlsFactory.createSocket(socket, host, port, true);
                SSLParameters params = ssl.getSSLParameters();
                params.setEndpointIdentificationAlgorithm("HTTPS");
                ssl.setSSLParameters(params);
                ssl.setSoTimeout(timeoutMs);
                stream = ssl;
            }
            return new Connection(channel, stream);
        } catch (IOException | RuntimeException e) {
            try {
                channel.close();
            } catch (IOException ignored) {
                // already failing
            }
            throw e;
        }
    }

    /** One request on one connection; its answer is read once, by {@link #await}. */
    final class Exchange {
        private final String method;
        private final String target;
        private final String contentType;
        private final String accept;
        private final byte[] body;
        private final long started;
        private final ScheduledFuture<?> deadline;
        /** Most bytes a 2xx answer's body may have. */
        private final long answerLimit;
        private Connection connection;
        private boolean reused;
        /** Whether a connection was had for this request (kept or new): until then no byte of it went out. */
        private volatile boolean opened;
        private IOException sendFailure;
        private Response response;
        private RuntimeException failure;
        private boolean done;
        // Guarded by this: the deadline closes the connection only while the exchange has not finished with it.
        private boolean finished;
        private volatile boolean expired;

        private Exchange(String method, String target, String contentType, String accept, byte[] body,
                         long answerLimit) {
            this.answerLimit = answerLimit;
            this.method = method;
            this.target = target;
            this.contentType = contentType;
            this.accept = accept;
            this.body = body;
            this.started = System.nanoTime();
            this.deadline = DEADLINES.schedule(this::expire, timeoutMs, TimeUnit.MILLISECONDS);
            send(live());
        }

        /** Writes the request on {@code c} (a kept connection) or on a new one; a failure is kept for await. */
        private void send(Connection c) {
            reused = c != null;
            sendFailure = null;
            synchronized (this) {
                connection = null;
            }
            try {
                Connection chosen = c != null ? c : connect(connectBudget());
                opened = true;
                synchronized (this) {
                    connection = chosen;
                    if (expired) {
                        chosen.abort();
                    }
                }
                chosen.write(request(), body);
            } catch (IOException e) {
                sendFailure = e;
            } catch (RuntimeException e) {
                sendFailure = new IOException(e.toString(), e); // e.g. an unresolvable host from the channel
            }
        }

        /** Milliseconds a connect may take: the connect timeout, within what is left of the deadline. */
        private int connectBudget() throws SocketTimeoutException {
            long left = timeoutMs - (System.nanoTime() - started) / 1_000_000;
            if (left <= 0 || expired) {
                throw new SocketTimeoutException("no answer within " + timeoutMs + " ms");
            }
            return (int) Math.min(connectTimeoutMs, left);
        }

        /** Closes the connection when the exchange is still running at its deadline (write, read or connect). */
        private void expire() {
            synchronized (this) {
                if (finished) {
                    return;
                }
                expired = true;
                if (connection != null) {
                    connection.abort();
                }
            }
        }

        private byte[] request() {
            StringBuilder head = new StringBuilder(160).append(method).append(' ').append(target)
                    .append(" HTTP/1.1\r\nHost: ").append(hostHeader).append("\r\n");
            if (accept != null) {
                head.append("Accept: ").append(accept).append("\r\n");
            }
            if (body != null) {
                if (contentType != null) {
                    head.append("Content-Type: ").append(contentType).append("\r\n");
                }
                head.append("Content-Length: ").append(body.length).append("\r\n");
            } else if (method.equals("POST") || method.equals("PUT")) {
                head.append("Content-Length: 0\r\n");
            }
            return head.append("\r\n").toString().getBytes(StandardCharsets.ISO_8859_1);
        }

        /**
         * Whether no byte of the request can have reached the server: no connection could be had for it (connecting
         * was refused or timed out, or the deadline passed first), so the server cannot have acted on it.
         */
        boolean sentNothing() {
            return !opened;
        }

        /** The answer (read on the first call); a transport failure is an {@link UncheckedIOException}. */
        Response await() {
            if (!done) {
                done = true;
                try {
                    response = exchange();
                } catch (IOException e) {
                    failure = new UncheckedIOException(method + " " + origin.resolve(target) + " failed: "
                            + describe(e), e);
                } catch (RuntimeException e) {
                    failure = e;
                } catch (Error e) {
                    failure = new IllegalStateException(method + " " + origin.resolve(target) + " failed: " + e, e);
                    throw e;
                } finally {
                    deadline.cancel(false);
                }
            }
            if (failure != null) {
                throw failure;
            }
            return response;
        }

        private Response exchange() throws IOException {
            try {
                return attempt();
            } catch (IOException e) {
                boolean idempotent = !method.equals("POST");
                if (!reused || !idempotent || connection == null || connection.answerBytes > 0 || expired) {
                    throw e;
                }
                // A kept connection that the server closed after the check that it was open, without an answer:
                // sent once more on a new connection, which is harmless for an idempotent request (POSTs are not
                // sent twice: the server may have acted on the first one).
                send(null);
                return attempt();
            }
        }

        private Response attempt() throws IOException {
            Connection c = connection;
            if (c == null) {
                throw timedOut(sendFailure);
            }
            Response r;
            try {
                r = c.readResponse(method, answerLimit);
            } catch (Throwable e) {
                c.closeQuietly();
                if (e instanceof IOException io) {
                    // Not sent whole and no answer: the send's failure says why.
                    throw timedOut(sendFailure != null ? sendFailure : io);
                }
                throw e;
            }
            boolean keep;
            synchronized (this) {
                finished = true;
                keep = !expired;
            }
            if (keep && sendFailure == null && !c.mustClose) {
                release(c);
            } else {
                c.closeQuietly();
            }
            return r;
        }

        /** {@code e}, or a timeout saying so when the deadline closed the connection under it. */
        private IOException timedOut(IOException e) {
            if (!expired || e instanceof SocketTimeoutException) {
                return e;
            }
            SocketTimeoutException t = new SocketTimeoutException("no answer within " + timeoutMs + " ms");
            t.initCause(e);
            return t;
        }
    }

    /** A pooled connection still open with nothing unread on it, or null (stale ones are closed). */
    private Connection live() {
        Connection c;
        while ((c = pooled()) != null) {
            if (c.idleAndOpen()) {
                return c;
            }
            c.closeQuietly();
        }
        return null;
    }

    /** A socket with its buffered streams and what the last answer said about keeping it. */
    private final class Connection {
        private final SocketChannel channel;
        private final Socket socket;
        private final InputStream in;
        private final OutputStream out;
        private final ByteBuffer probe = ByteBuffer.allocate(1);
        private long answerBytes;
        private boolean mustClose;
        /** When it last went back to the pool ({@link System#nanoTime}). */
        private long idleSince;

        Connection(SocketChannel channel, Socket socket) throws IOException {
            this.channel = channel;
            this.socket = socket;
            this.in = new BufferedInputStream(socket.getInputStream(), 64 * 1024);
            this.out = new BufferedOutputStream(socket.getOutputStream(), 64 * 1024);
        }

        /**
         * Whether a kept connection can carry the next request: still open, and nothing arrived on it while idle
         * (an answer to no request, e.g. a server's 408 before it closes, must not be read as the next one's).
         */
        boolean idleAndOpen() {
            try {
                if (in.available() > 0) {
                    return false;
                }
                channel.configureBlocking(false);
                try {
                    probe.clear();
                    return channel.read(probe) == 0;
                } finally {
                    channel.configureBlocking(true);
                }
            } catch (IOException | RuntimeException e) {
                return false;
            }
        }

        void write(byte[] head, byte[] body) throws IOException {
            answerBytes = 0;
            mustClose = false;
            out.write(head);
            if (body != null) {
                out.write(body);
            }
            out.flush();
        }

        void closeQuietly() {
            try {
                socket.close(); // a TLS socket says close_notify first
            } catch (IOException | RuntimeException ignored) {
                // closing anyway
            }
            abort();
        }

        /**
         * Closes the channel under the socket, which unblocks a thread reading or writing it. Unlike closing a TLS
         * socket, it takes no lock that such a thread holds, so another thread (the deadline) can always do it.
         */
        void abort() {
            try {
                channel.close();
            } catch (IOException | RuntimeException ignored) {
                // closing anyway
            }
        }

        /** The limit of the answer being read: {@code answerLimit} for a 2xx one, the client's for any other. */
        private long bodyLimit;
        /** Where the answer being read is cut (-1: never, a 2xx one), and whether it was: then the rest is unread. */
        private long clipAt;
        private boolean clipped;

        Response readResponse(String method, long answerLimit) throws IOException {
            for (int informational = 0; ; informational++) {
                if (informational > MAX_INFORMATIONAL) {
                    throw new IOException("more than " + MAX_INFORMATIONAL + " informational (1xx) answers");
                }
                String status = line();
                if (!status.startsWith("HTTP/1.")) {
                    throw new IOException("not an HTTP/1.x answer: '" + abbreviate(status) + "'");
                }
                int code = statusCode(status);
                boolean http10 = status.startsWith("HTTP/1.0");
                long length = -1;
                boolean chunked = false;
                boolean encoded = false;
                String contentType = null;
                // Connection options as one list over every Connection header: a close anywhere wins, and an
                // HTTP/1.0 answer keeps its connection only when it says keep-alive.
                boolean closeAsked = false;
                boolean keepAliveAsked = false;
                int headBytes = status.length();
                while (true) {
                    String h = line();
                    headBytes += h.length() + 2;
                    if (headBytes > MAX_HEAD_BYTES) {
                        throw new IOException("the answer's headers exceed " + MAX_HEAD_BYTES + " bytes");
                    }
                    if (h.isEmpty()) {
                        break;
                    }
                    if (h.charAt(0) == ' ' || h.charAt(0) == '\t') {
                        // Obsolete line folding (RFC 9112 5.2): a continuation must never be read as a field of its
                        // own (a folded "Content-Length: 99" would frame the body).
                        throw new IOException("folded header line '" + abbreviate(h) + "' (obsolete line folding)");
                    }
                    int colon = h.indexOf(':');
                    if (colon <= 0) {
                        throw new IOException("malformed header line '" + abbreviate(h) + "'");
                    }
                    String name = h.substring(0, colon).trim().toLowerCase(Locale.ROOT);
                    String value = h.substring(colon + 1).trim();
                    switch (name) {
                        case "content-length" -> {
                            long n = contentLength(value);
                            if (length >= 0 && n != length) {
                                throw new IOException("conflicting Content-Length headers (" + length + " and " + n
                                        + ")");
                            }
                            length = n;
                        }
                        case "transfer-encoding" -> {
                            // The last coding of the combined list decides how the body ends (RFC 9112 6.3): chunked,
                            // or the connection's end. Empty elements are no coding; a header of none is malformed.
                            encoded = true;
                            String last = null;
                            for (String coding : value.toLowerCase(Locale.ROOT).split(",")) {
                                if (!coding.isBlank()) {
                                    last = coding.trim();
                                }
                            }
                            if (last == null) {
                                throw new IOException("a Transfer-Encoding header names no coding");
                            }
                            chunked = last.equals("chunked");
                        }
                        case "content-type" -> contentType = value;
                        case "connection" -> {
                            for (String option : value.toLowerCase(Locale.ROOT).split(",")) {
                                closeAsked |= option.trim().equals("close");
                                keepAliveAsked |= option.trim().equals("keep-alive");
                            }
                        }
                        default -> {
                        }
                    }
                }
                if (code == 101) {
                    // Never asked for (no request names Upgrade): what follows is another protocol, not an answer.
                    throw new IOException("unexpected 101 Switching Protocols");
                }
                if (code >= 100 && code < 200) {
                    continue; // informational (e.g. 100 Continue): the real answer follows
                }
                boolean success = code >= 200 && code < 300;
                bodyLimit = success ? answerLimit : maxBodyBytes;
                clipAt = success ? -1 : ERROR_BODY_BYTES;
                clipped = false;
                // An HTTP/1.0 answer with a Transfer-Encoding is framed faultily (RFC 9112 6.1): never reused.
                boolean close = closeAsked || http10 && (!keepAliveAsked || encoded);
                byte[] body;
                if (method.equals("HEAD") || code == 204 || code == 304) {
                    body = new byte[0];
                } else if (chunked) {
                    body = chunkedBody();
                    // With a Content-Length as well the framing is ambiguous to whatever else is on the way: the
                    // connection is not trusted for another request.
                    close |= length >= 0;
                } else if (encoded) {
                    body = untilClose();
                    close = true;
                } else if (length >= 0) {
                    body = fixedBody(length);
                } else {
                    body = untilClose();
                    close = true;
                }
                mustClose = close || clipped; // a body left unread: the connection cannot serve another request
                return new Response(code, contentType, body);
            }
        }

        private int statusCode(String status) throws IOException {
            // "HTTP/1.x" SP 3DIGIT [SP reason]: three digits from 100 to 599, then the end or a space.
            int space = status.indexOf(' ');
            if (space < 0 || status.length() < space + 4 || status.length() > space + 4 && status.charAt(space + 4) != ' '
                    || !status.substring(space + 1, space + 4).chars().allMatch(c -> c >= '0' && c <= '9')) {
                throw new IOException("malformed status line '" + abbreviate(status) + "'");
            }
            int code = Integer.parseInt(status.substring(space + 1, space + 4));
            if (code < 100 || code > 599) {
                throw new IOException("malformed status line '" + abbreviate(status) + "'");
            }
            return code;
        }

        private long contentLength(String value) throws IOException {
            try {
                // 1*DIGIT only (RFC 9110 8.6): no sign, which Long.parseLong would take.
                if (value.isEmpty() || !value.chars().allMatch(c -> c >= '0' && c <= '9')) {
                    throw new NumberFormatException();
                }
                return Long.parseLong(value);
            } catch (NumberFormatException e) {
                throw new IOException("malformed Content-Length '" + abbreviate(value) + "'");
            }
        }

        private byte[] fixedBody(long length) throws IOException {
            if (clipAt >= 0 && length > clipAt) {
                clipped = true;
                length = clipAt;
            }
            checkSize(length);
            // At most 64 KiB before any byte arrives, doubling as they come: a declared length alone (a server that
            // then sends nothing) holds no more memory than that until the deadline.
            byte[] body = new byte[(int) Math.min(length, INITIAL_BODY_BYTES)];
            int off = 0;
            while (off < length) {
                if (off == body.length) {
                    body = java.util.Arrays.copyOf(body, (int) Math.min(length, 2L * body.length));
                }
                int n = in.read(body, off, body.length - off);
                if (n < 0) {
                    throw new EOFException("the answer ended after " + off + " of " + length + " body bytes");
                }
                off += n;
            }
            return body;
        }

        private byte[] chunkedBody() throws IOException {
            ByteArrayOutputStream body = new ByteArrayOutputStream();
            while (true) {
                String sizeLine = line();
                int semi = sizeLine.indexOf(';');
                String hex = (semi >= 0 ? sizeLine.substring(0, semi) : sizeLine).trim();
                if (hex.isEmpty() || hex.length() > 15 || !hex.chars().allMatch(c -> Character.digit(c, 16) >= 0
                        && c < 128)) {
                    throw new IOException("malformed chunk size '" + abbreviate(sizeLine) + "'");
                }
                long size = Long.parseLong(hex, 16);
                if (size == 0) {
                    int trailerBytes = 0;
                    for (String trailer = line(); !trailer.isEmpty(); trailer = line()) {
                        trailerBytes += trailer.length() + 2; // ignored, within the bound of a head
                        if (trailerBytes > MAX_HEAD_BYTES) {
                            throw new IOException("the answer's trailers exceed " + MAX_HEAD_BYTES + " bytes");
                        }
                    }
                    return body.toByteArray();
                }
                if (clipAt >= 0 && body.size() + size > clipAt) {
                    body.write(fixedBody(clipAt - body.size())); // the rest of the chunk and those after: unread
                    clipped = true;
                    return body.toByteArray();
                }
                checkSize(body.size() + size);
                body.write(fixedBody(size));
                if (!line().isEmpty()) {
                    throw new IOException("a chunk is not followed by CRLF");
                }
            }
        }

        private byte[] untilClose() throws IOException {
            ByteArrayOutputStream body = new ByteArrayOutputStream();
            byte[] buf = new byte[16 * 1024];
            int n;
            while ((n = in.read(buf)) >= 0) {
                answerBytes += n;
                if (clipAt >= 0 && body.size() + (long) n > clipAt) {
                    body.write(buf, 0, (int) (clipAt - body.size()));
                    clipped = true;
                    break;
                }
                checkSize(body.size() + (long) n);
                body.write(buf, 0, n);
            }
            return body.toByteArray();
        }

        private void checkSize(long size) throws IOException {
            if (size > bodyLimit) {
                throw new IOException("the answer's body is over " + bodyLimit + " bytes");
            }
        }

        /** One line of the head, without its CRLF (a bare LF is accepted). */
        private String line() throws IOException {
            StringBuilder s = new StringBuilder(64);
            while (true) {
                int b = in.read();
                if (b < 0) {
                    throw new EOFException(answerBytes == 0 ? "the connection closed before an answer"
                            : "the connection closed in the middle of the answer");
                }
                answerBytes++;
                if (b == '\n') {
                    int len = s.length();
                    if (len > 0 && s.charAt(len - 1) == '\r') {
                        s.setLength(len - 1);
                    }
                    return s.toString();
                }
                if (s.length() >= MAX_HEAD_BYTES) {
                    throw new IOException("a header line exceeds " + MAX_HEAD_BYTES + " bytes");
                }
                s.append((char) b);
            }
        }
    }

    private static String abbreviate(String s) {
        return s.length() <= 80 ? s : s.substring(0, 80) + "…";
    }

    /** A transport failure in words: some carry no message (an unknown host on JDK 17, an interrupted channel). */
    static String describe(IOException e) {
        if (e instanceof java.net.UnknownHostException) {
            return "unknown host" + (e.getMessage() == null ? "" : " " + e.getMessage());
        }
        return e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
    }
}
