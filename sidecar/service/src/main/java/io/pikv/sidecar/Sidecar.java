package io.pikv.sidecar;

import io.pikv.kv.ExpertShardMap;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.kv.routing.CacheAwareRouter;
import io.pikv.kv.routing.HashRouter;
import io.pikv.kv.routing.Router;
import io.pikv.sidecar.client.SidecarClient;
import io.pikv.sidecar.control.ShardControl;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.runtime.StartupEvent;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.jboss.logging.Logger;

import java.net.URI;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;

/**
 * The sidecar's engine state, built once from {@link SidecarConfig}: the model shape every request is checked
 * against, this process's shard and its block cache, and the desired state the operator controls (shard map,
 * policy, budget) starting from the configuration. A configuration the engine rejects stops start-up with the
 * engine's message, naming the setting.
 */
@ApplicationScoped
public class Sidecar {
    private static final Logger LOG = Logger.getLogger(Sidecar.class);

    private final SidecarConfig config;
    private final ModelShape shape;
    private final ShardNode shard;
    private final BlockStore blocks;
    private final Gateway gateway;
    private final ShardControl control;
    /** Closes idle sequences ({@code pikv.sequence-idle-timeout}); null when they never expire. */
    private java.util.concurrent.ScheduledExecutorService idleSweeper;
    /** How long shutting down waits for an idle-sequence pass under way. */
    private static final int SWEEP_STOP_SECONDS = 5;
    /** Why KV requests are refused now, or null when they are served (see {@link #servingGate}). */
    private volatile java.util.function.Supplier<String> notReady;
    private volatile java.util.function.Supplier<String> mapNotReady;

    public Sidecar(SidecarConfig config) {
        this.config = config;
        for (String unknown : unknownEnvironment(System.getenv())) {
            LOG.warnf("environment variable %s names no sidecar setting and is ignored (a typo? the settings and "
                    + "their variables are in docs/sidecar-api.md)", unknown);
        }
        check("pikv.shard-id", config.shardId() >= 0, "a shard id is >= 0, got " + config.shardId());
        check("pikv.parent-pid", config.parentPid().map(pid -> pid >= 1).orElse(true),
                "a process id is >= 1, got " + config.parentPid().orElse(0L));
        // The cluster keys its control records and the shards' telemetry: a blank one would match no operator's.
        check("pikv.cluster", !config.cluster().isBlank()
                        && config.cluster().chars().noneMatch(Character::isWhitespace),
                "a cluster name is a non-empty name without whitespace (the operator sets <namespace>/<name>), got '"
                        + config.cluster() + "'");
        check("pikv.api.max-body-bytes", config.api().maxBodyBytes() >= 1,
                "the largest request body must be at least 1 byte, got " + config.api().maxBodyBytes());
        check("pikv.sequence-idle-timeout", config.sequenceIdleTimeout().isZero()
                        || config.sequenceIdleTimeout().compareTo(java.time.Duration.ofMinutes(1)) >= 0
                        && config.sequenceIdleTimeout().compareTo(java.time.Duration.ofDays(36_500)) <= 0,
                "the idle timeout of a sequence is 0 (never) or from 1 min (longer than a call may take) to 36,500 "
                        + "days, got " + config.sequenceIdleTimeout());
        java.time.Duration call = config.gateway().callTimeout();
        if (config.role() == Role.gateway && !config.sequenceIdleTimeout().isZero()
                && callTimeoutInRange(call)) { // else the gateway's check says why
            // A call that holds a sequence longer than its idle timeout would find it closed when it ends.
            check("pikv.sequence-idle-timeout", config.sequenceIdleTimeout().compareTo(call.multipliedBy(2)) >= 0,
                    "a gateway's idle timeout must be at least twice pikv.gateway.call-timeout (" + call + "), got "
                            + config.sequenceIdleTimeout());
        }
        check("pikv.control.startup-wait", !config.control().startupWait().isNegative()
                        && config.control().startupWait().compareTo(java.time.Duration.ofDays(1)) <= 0,
                "the start-up wait is from 0 to 1 day, got " + config.control().startupWait());
        check("pikv.control.topic", org.apache.kafka.common.internals.Topic.isValid(config.control().topic()),
                "a Kafka topic name is 1 to 249 of the characters a-z A-Z 0-9 . _ - (and not . or ..), got '"
                        + config.control().topic() + "'");
        check("pikv.telemetry.topic", org.apache.kafka.common.internals.Topic.isValid(config.telemetry().topic()),
                "a Kafka topic name is 1 to 249 of the characters a-z A-Z 0-9 . _ - (and not . or ..), got '"
                        + config.telemetry().topic() + "'");
        check("pikv.telemetry.topic and pikv.control.topic", !(config.telemetry().enabled()
                        && config.control().enabled() && config.telemetry().topic().equals(config.control().topic())),
                "telemetry and control need topics of their own (control is a compacted topic of desired states), got '"
                        + config.telemetry().topic() + "' for both");
        // With control on, KV requests wait for the control listener (installed at start-up): until it has read the
        // topic, the map, policy and budget in effect may be stale.
        notReady = config.control().enabled() ? () -> "it is starting" : () -> null;
        mapNotReady = notReady;
        try {
            // In every role, also where no publisher is made; the publisher's settings hold the rules.
            io.pikv.sidecar.telemetry.TelemetryPublisher.Settings.check(config.telemetry().window(),
                    config.telemetry().bufferRecords(), config.telemetry().sendTimeout());
        } catch (IllegalArgumentException e) {
            throw new IllegalStateException("invalid configuration " + e.getMessage(), e);
        }
        if (config.role() == Role.shard) {
            // Pages live in direct memory: a budget beyond it would start and then fail its appends once full.
            check("pikv.store.budget-bytes", config.store().budgetBytes() <= ShardNode.pageMemoryLimit(),
                    "a budget of " + config.store().budgetBytes() + " bytes exceeds the " + ShardNode.pageMemoryLimit()
                    + " bytes of direct memory this JVM may give pages (-XX:MaxDirectMemorySize, by default the "
                    + "heap's maximum, less " + (ShardNode.SERVER_DIRECT_MEMORY >> 20) + " MiB for the server's "
                    + "buffers): lower the budget or raise -XX:MaxDirectMemorySize");
        }
        // The HTTP layer's limit is Quarkus's setting, outside SidecarConfig; checked before anything is built (in the
        // start-up observer, a refusal came after the shard and its threads were made, and nothing closed them).
        org.eclipse.microprofile.config.ConfigProvider.getConfig().getOptionalValue("quarkus.http.limits.max-body-size",
                io.quarkus.runtime.configuration.MemorySize.class).ifPresent(limit -> {
                    String refused = bodyLimits(config.api().maxBodyBytes(), limit.asLongValue());
                    if (refused != null) {
                        throw new IllegalStateException(refused);
                    }
                });
        this.shape = setting("pikv.model.*", () -> new ModelShape(config.model().layers(), config.model().qHeads(),
                config.model().kvHeads(), config.model().headDim(), config.model().experts(), config.model().topK()));
        StorageType type = setting("pikv.store.dtype", () -> StorageType.parse(config.store().dtype()));
        java.util.Map<String, Double> parameters = setting("pikv.store.eviction-parameters",
                () -> ShardPolicy.parseParameters(config.store().evictionParameters().orElse("")));
        // The name first, then its parameters' values under their own setting (a window of -1 is the parameters'
        // fault, not the policy's).
        check("pikv.store.eviction", ShardPolicy.known().contains(config.store().eviction()), "unknown eviction "
                + "policy '" + config.store().eviction() + "' (this sidecar knows " + String.join(", ",
                ShardPolicy.known()) + ")");
        ShardPolicy policy = setting(config.store().evictionParameters().isPresent() ? "pikv.store.eviction-parameters"
                : "pikv.store.eviction", () -> ShardPolicy.of(config.store().eviction(), parameters));
        SidecarConfig.Pyramid p = config.store().pyramid();
        check("pikv.store.pyramid.budget", p.budget().isPresent()
                        || (p.beta().isEmpty() && p.sinks().isEmpty() && p.window().isEmpty()),
                "pikv.store.pyramid.beta, sinks or window is set but the budget is not, so no pyramid budgets would "
                        + "run; set the budget (the fraction of tokens kept) or remove them");
        ShardPyramid pyramid = p.budget().isEmpty() ? null : setting("pikv.store.pyramid.*",
                () -> new ShardPyramid(shape.layers(), p.budget().get(), p.beta().orElse(ShardPyramid.DEFAULT_BETA),
                        p.sinks().orElse(ShardPyramid.DEFAULT_SINKS), p.window().orElse(ShardPyramid.DEFAULT_WINDOW)));
        this.shard = setting("pikv.store.*", () -> new ShardNode(config.shardId(), shape, type,
                config.store().pageTokens(), config.store().buckets(), config.store().budgetBytes(),
                policy, attentionThreads(config.store().attentionThreads()), pyramid, config.store().kernel()));
        try {
            long maxHeap = configuredMaxHeap();
            setting("pikv.blocks.capacity-bytes", () -> {
                checkTheBlocksFit(config.blocks().capacityBytes(), config.api().maxBodyBytes(), maxHeap);
                return null;
            });
            // An lrfu policy configured with a history remembers that many evictions on the heap too.
            long history = config.store().eviction().equals("lrfu")
                    ? (long) (double) parameters.getOrDefault("historyLimit", 0.0)
                    * io.pikv.kv.scheduling.Lrfu.HEAP_PER_HISTORY_BYTES : 0;
            warnIfTheHeapIsShort(config.role() == Role.shard ? shard : null, history, config.blocks().capacityBytes(),
                    config.api().maxBodyBytes(), maxHeap);
            setting("pikv.compute", () -> {
                if (config.role() == Role.shard) {
                    // A cuda choice that cannot be kept stops start-up with the reason; auto falls back.
                    shard.useCompute(config.compute());
                } else {
                    // A gateway attends nowhere, but a misspelt value is still refused rather than passed over.
                    io.pikv.kv.compute.ComputeBackends.checkPreference(config.compute());
                }
                return null;
            });
            this.blocks = setting("pikv.blocks.*", () -> new BlockStore(config.blocks().capacityBytes(),
                    config.blocks().policy()));
            this.gateway = config.role() == Role.gateway ? setting("pikv.gateway.*", () -> gateway(config, shape))
                    : null;
            // Until the operator publishes a map: experts round-robin over the gateway's shards, or all on this one. A
            // gateway routes by every map control applies (a map for another number of shards is rejected).
            ExpertShardMap initial = gateway != null ? gateway.shardMap()
                    : ExpertShardMap.roundRobin(shape.experts(), 1);
            this.control = new ShardControl(config.cluster(), config.shardId(), initial, policy,
                    ShardControl.Budget.forRole(config.role(), shard, config.store().budgetBytes()),
                    gateway != null ? gateway::applyShardMap : map -> {
                    });
        } catch (RuntimeException | Error e) {
            // A start-up stopped by a later setting: the shard's attention threads, and the device memory a shard
            // attached to a GPU holds, go with it (a JVM that goes on, as a test's, would keep them).
            shard.close();
            throw e;
        }
    }

    /**
     * The heap's maximum as configured ({@code -Xmx}, {@code MaxHeapSize}): what the operator sized. The runtime's own
     * figure is smaller under some collectors (ParallelGC leaves a survivor space out: about 11 % less).
     */
    static long configuredMaxHeap() {
        try {
            var hotspot = java.lang.management.ManagementFactory.getPlatformMXBean(
                    com.sun.management.HotSpotDiagnosticMXBean.class);
            if (hotspot != null) {
                return Long.parseLong(hotspot.getVMOption("MaxHeapSize").getValue());
            }
        } catch (RuntimeException | LinkageError e) {
            // no jdk.management module: the runtime's figure
        }
        return Runtime.getRuntime().maxMemory();
    }

    /**
     * Heap a sidecar needs beside its entries' bookkeeping, its block cache and a request body in flight: the
     * server's own. The operator's heaps leave at least this beside what it sizes those from.
     */
    static final long SERVER_HEAP = 128L << 20;

    /** Refuses a block cache that, with one request body, could not fit in the heap at all. */
    static void checkTheBlocksFit(long blockBytes, long maxBodyBytes, long maxHeap) {
        if (blockBytes >= maxHeap - maxBodyBytes) { // not a sum: a capacity of Long.MAX_VALUE must not wrap
            throw new IllegalArgumentException("the block cache (" + (blockBytes >> 20) + " MiB) and a request body ("
                    + (maxBodyBytes >> 20) + " MiB, pikv.api.max-body-bytes) do not fit in the heap's maximum of "
                    + (maxHeap >> 20) + " MiB; lower it or raise -Xmx");
        }
    }

    private static long saturatedSum(long... parts) {
        long sum = 0;
        for (long part : parts) {
            sum = part > Long.MAX_VALUE - sum ? Long.MAX_VALUE : sum + part;
        }
        return sum;
    }

    /**
     * Says at start-up when what the sidecar may hold on its heap exceeds the heap's maximum: a full block cache, a
     * request body, {@link #SERVER_HEAP}, and on a shard the bookkeeping of a full budget under a token policy
     * ({@link io.pikv.kv.scheduling.TokenRetention#HEAP_PER_ENTRY_BYTES} per entry the pages hold; control may switch
     * to one at any time), and the history of evictions an {@code lrfu} policy was configured to remember. Returns the
     * warning, or null.
     *
     * @param shard        the shard whose budget counts, or null (a gateway)
     * @param historyBytes heap of a full lrfu history ({@code historyLimit} ×
     *                     {@link io.pikv.kv.scheduling.Lrfu#HEAP_PER_HISTORY_BYTES}), 0 for none
     */
    static String warnIfTheHeapIsShort(ShardNode shard, long historyBytes, long blockBytes, long maxBodyBytes,
                                       long maxHeap) {
        long entries = 0;
        long bookkeeping = 0;
        if (shard != null) {
            io.pikv.kv.KvLayout layout = shard.layout();
            entries = shard.budgetBytes() / layout.pageBytes() * layout.pageTokens();
            bookkeeping = entries * io.pikv.kv.scheduling.TokenRetention.HEAP_PER_ENTRY_BYTES;
        } else {
            historyBytes = 0; // a gateway evicts no tokens
        }
        long need = saturatedSum(bookkeeping, historyBytes, blockBytes, maxBodyBytes, SERVER_HEAP);
        if (need <= maxHeap) {
            return null;
        }
        String warning = String.format("the heap's maximum of %d MiB is below what this sidecar may hold on it, about "
                + "%d MiB: %s%d MiB of block cache (pikv.blocks.capacity-bytes), a request body of up to %d MiB "
                + "(pikv.api.max-body-bytes) and %d MiB for the server; a full sidecar may run out of heap: raise -Xmx "
                + "or lower those settings", maxHeap >> 20, need >> 20, shard == null ? "" : String.format("the "
                + "bookkeeping of the %d entries the budget's pages hold under a token eviction policy (%d MiB, "
                + "pikv.store.budget-bytes), ", entries, bookkeeping >> 20) + (historyBytes == 0 ? "" : String.format(
                "the lrfu history of up to %d MiB (historyLimit in pikv.store.eviction-parameters), ",
                historyBytes >> 20)), blockBytes >> 20, maxBodyBytes >> 20,
                SERVER_HEAP >> 20);
        LOG.warn(warning);
        return warning;
    }

    /**
     * The {@code PIKV_*} names in {@code env} that map to no sidecar setting. SmallRye refuses an unknown
     * {@code pikv.*} property but passes over environment variables, so a misspelt override would run the default
     * unnoticed. The launcher's {@code PIKV_JAVA_OPTS} and the operator's {@code PIKV_OPERATOR_*} are not the sidecar's
     * and not reported.
     */
    static List<String> unknownEnvironment(java.util.Map<String, String> env) {
        java.util.Set<String> known = new java.util.HashSet<>();
        java.util.Set<String> lists = new java.util.HashSet<>(); // list settings also take PIKV_…_<index>_
        for (String property : io.smallrye.config.ConfigMappings.getProperties(
                io.smallrye.config.ConfigMappings.ConfigClass.configClass(SidecarConfig.class, "pikv")).keySet()) {
            String variable = property.replace("[*]", "").replaceAll("[^A-Za-z0-9]", "_")
                    .toUpperCase(java.util.Locale.ROOT);
            known.add(variable);
            if (property.endsWith("[*]")) {
                lists.add(variable);
            }
        }
        List<String> unknown = new ArrayList<>();
        for (String name : new java.util.TreeSet<>(env.keySet())) {
            if (name.startsWith("PIKV_") && !name.equals("PIKV_JAVA_OPTS") && !name.equals("PIKV_DEBUG")
                    && !name.startsWith("PIKV_OPERATOR_")
                    && !known.contains(name) && !lists.contains(name.replaceFirst("_[0-9]+_?$", ""))) {
                unknown.add(name);
            }
        }
        return unknown;
    }

    /** {@code pikv.store.attention-threads}: 0 is one per available processor. */
    private static int attentionThreads(int configured) {
        if (configured < 0) {
            throw new IllegalArgumentException("pikv.store.attention-threads must be >= 0 (0: one per processor), got "
                    + configured);
        }
        return configured == 0 ? Runtime.getRuntime().availableProcessors() : configured;
    }

    /**
     * Whether a gateway timeout is from 1 ms to 2^31 - 1 ms (24 days), compared as durations: a huge one's
     * {@code toMillis()} would overflow, and one below 1 ms would be cut to 0.
     */
    private static boolean callTimeoutInRange(java.time.Duration d) {
        return d.compareTo(java.time.Duration.ofMillis(1)) >= 0
                && d.compareTo(java.time.Duration.ofMillis(Integer.MAX_VALUE)) <= 0;
    }

    private static Gateway gateway(SidecarConfig config, ModelShape shape) {
        List<String> urls = config.gateway().shards().orElse(List.of());
        for (java.time.Duration d : List.of(config.gateway().connectTimeout(), config.gateway().callTimeout())) {
            if (!callTimeoutInRange(d)) {
                throw new IllegalArgumentException("pikv.gateway.connect-timeout and call-timeout must be from 1 ms to "
                        + "24 days, got " + config.gateway().connectTimeout() + " and " + config.gateway().callTimeout());
            }
        }
        if (config.gateway().idleConnections() < 0) {
            throw new IllegalArgumentException("pikv.gateway.idle-connections must be >= 0, got "
                    + config.gateway().idleConnections());
        }
        if (urls.isEmpty()) {
            throw new IllegalArgumentException("pikv.gateway.shards must list the shards' base URLs");
        }
        checkRoutingKnobs(config.gateway());
        List<SidecarClient> clients = new ArrayList<>();
        java.util.Map<String, String> origins = new java.util.HashMap<>();
        for (String url : urls) {
            if (!url.contains("://")) {
                throw new IllegalArgumentException("'" + url.trim() + "' has no scheme: list each shard as "
                        + "http://host:port (or https://host:port)");
            }
            URI uri;
            try {
                uri = URI.create(url.trim());
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("'" + url + "' is not a URL: " + e.getMessage());
            }
            if (uri.getScheme() == null || uri.getHost() == null) {
                throw new IllegalArgumentException("'" + url + "' is not an http(s) URL with a host");
            }
            String scheme = uri.getScheme().toLowerCase(java.util.Locale.ROOT);
            String origin = scheme + "://" + uri.getHost().toLowerCase(java.util.Locale.ROOT) + ":"
                    + (uri.getPort() >= 0 ? uri.getPort() : "https".equals(scheme) ? 443 : 80);
            String before = origins.putIfAbsent(origin, url.trim());
            if (before != null) {
                // Two "shards" in one process would each be sent a share of every sequence under the same id.
                throw new IllegalArgumentException("pikv.gateway.shards lists the shard " + origin + " twice ('"
                        + before + "' and '" + url.trim() + "'): list each shard once");
            }
            clients.add(new SidecarClient(uri, shape, config.gateway().connectTimeout(), config.gateway().callTimeout(),
                    config.gateway().idleConnections()));
        }
        Supplier<Router> routers = switch (config.gateway().routing()) {
            case "hash" -> () -> new HashRouter(shape.topK());
            case "cache-aware" -> () -> new CacheAwareRouter(shape.experts(), shape.topK(), config.gateway().lambda(),
                    config.gateway().window(), config.gateway().nullRatio());
            default -> throw new IllegalArgumentException("routing must be hash or cache-aware, got '"
                    + config.gateway().routing() + "'");
        };
        return new Gateway(shape, clients, routers);
    }

    /** The cache-aware routing knobs, checked whatever the routing: a bad value is said before anyone relies on it. */
    static void checkRoutingKnobs(SidecarConfig.Gateway g) {
        if (!Double.isFinite(g.lambda()) || g.lambda() < 0) {
            throw new IllegalArgumentException("pikv.gateway.lambda must be a finite number >= 0, got " + g.lambda());
        }
        if (g.window() < 1) {
            throw new IllegalArgumentException("pikv.gateway.window must be at least 1 token, got " + g.window());
        }
        if (!(g.nullRatio() >= 0 && g.nullRatio() < 1)) {
            throw new IllegalArgumentException("pikv.gateway.null-ratio must be in [0, 1), got " + g.nullRatio());
        }
    }

    /**
     * Last of the start-up observers (after the Kafka clients, priority 1000, and the beans started at the default
     * 2500), so that a start stopped by any of them has not started these threads yet.
     */
    void started(@Observes @jakarta.annotation.Priority(5000) StartupEvent event) {
        startIdleSweeper();
        config.parentPid().ifPresent(pid -> parentWatch = watchParent(pid));
        if (gateway != null) {
            LOG.infof("PiKV sidecar: role gateway, cluster %s, model %s, %d shards %s, %s routing", config.cluster(),
                    shape, config.gateway().shards().orElse(List.of()).size(), config.gateway().shards().orElse(List.of()),
                    config.gateway().routing());
        } else {
            LOG.infof("PiKV sidecar: role shard, cluster %s, shard %d, model %s, %s pages of %d tokens, budget %d bytes,"
                    + " %s, attention on %s", config.cluster(), config.shardId(), shape, shard.layout().type(),
                    shard.layout().pageTokens(), config.store().budgetBytes(),
                    shard.pyramid() == null ? "no pyramid budgets" : shard.pyramid(), shard.attentionPlace());
        }
    }

    /** The thread watching for the launcher ({@code pikv.parent-pid}), stopped with the sidecar; null without one. */
    private volatile Thread parentWatch;

    /** How often the launcher named by {@code pikv.parent-pid} is looked for. */
    private static final long PARENT_CHECK_MILLIS = 1000;

    /**
     * Stops the sidecar once process {@code pid} (the launcher that started it, {@code pikv.parent-pid}) is gone: by
     * polling, since a process that is not this one's child gives no signal of its end. A process with the id but
     * another start time is another process (the id was reused), so the launcher is gone.
     */
    static Thread watchParent(long pid) {
        java.util.Optional<java.time.Instant> born = ProcessHandle.of(pid).flatMap(h -> h.info().startInstant());
        // A process that started after this JVM cannot be the launcher that started it: the launcher is gone and its
        // id was taken while this sidecar was starting.
        java.util.Optional<java.time.Instant> self = ProcessHandle.current().info().startInstant();
        boolean younger = born.isPresent() && self.isPresent() && born.get().isAfter(self.get());
        Thread watch = new Thread(() -> {
            while (!younger && parentAlive(pid, born)) {
                try {
                    Thread.sleep(PARENT_CHECK_MILLIS);
                } catch (InterruptedException e) {
                    return;
                }
            }
            LOG.warnf("the process that started this sidecar (pid %d, pikv.parent-pid) is gone: stopping", pid);
            io.quarkus.runtime.Quarkus.asyncExit(1);
        }, "pikv-parent-watch");
        watch.setDaemon(true);
        watch.start();
        return watch;
    }

    /** Whether process {@code pid} runs, and is the one that started at {@code born} (when that is known). */
    static boolean parentAlive(long pid, java.util.Optional<java.time.Instant> born) {
        java.util.Optional<ProcessHandle> h = ProcessHandle.of(pid);
        if (h.isEmpty() || !h.get().isAlive()) {
            return false;
        }
        java.util.Optional<java.time.Instant> now = h.get().info().startInstant();
        return born.isEmpty() || now.isEmpty() || born.get().equals(now.get());
    }

    /**
     * Every quarter of the idle timeout (at most a minute), closes the sequences no call has used for longer: on a
     * gateway on its shards as a DELETE does, so a model server that went away without closing leaves nothing open; on
     * a shard, also what a gateway that went away left there. A gateway also tells every shard of each open sequence,
     * every quarter of the timeout, that it is alive, so a shard its calls did not reach keeps its share (gateways and
     * shards of a cluster run the same timeout).
     */
    private void startIdleSweeper() {
        java.time.Duration timeout = config.sequenceIdleTimeout();
        if (timeout.isZero()) {
            return;
        }
        long every = Math.min(60_000, timeout.toMillis() / 4);
        idleSweeper = java.util.concurrent.Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "pikv-idle-sequences");
            t.setDaemon(true);
            return t;
        });
        idleSweeper.scheduleWithFixedDelay(() -> {
            try {
                if (gateway != null) {
                    // The shards close a sequence idle there for the timeout: told every quarter of it, so that one
                    // late pass is not yet too late.
                    gateway.keepAlive(timeout.toNanos() / 4);
                }
                int closed = gateway != null ? gateway.closeIdle(timeout.toNanos()) : shard.closeIdle(timeout.toNanos());
                if (closed > 0) {
                    LOG.infof("closed %d sequence(s) no call had used for %s (pikv.sequence-idle-timeout)", closed,
                            timeout);
                }
            } catch (RuntimeException e) {
                LOG.warnf(e, "closing idle sequences failed; trying again in %d ms", every);
            }
        }, every, every, java.util.concurrent.TimeUnit.MILLISECONDS);
    }

    void stopped(@Observes ShutdownEvent event) {
        Thread watch = parentWatch;
        if (watch != null) {
            watch.interrupt(); // stopping anyway: it must not ask a later application of this JVM to exit
        }
        if (idleSweeper != null) {
            // A pass under way finishes first (interrupted, its closes would fail, and the gateway's last close pass
            // below would ask those shards again).
            idleSweeper.shutdown();
            try {
                if (!idleSweeper.awaitTermination(SWEEP_STOP_SECONDS, java.util.concurrent.TimeUnit.SECONDS)) {
                    idleSweeper.shutdownNow();
                }
            } catch (InterruptedException e) {
                idleSweeper.shutdownNow();
                Thread.currentThread().interrupt();
            }
        }
        if (gateway != null) {
            gateway.shutdown();
        }
        shard.close();
    }

    /**
     * Releases what the sidecar holds (its store's threads and device memory, the gateway's connections) when start-up
     * stopped after it was built: Quarkus runs the shutdown observers only for a start that completed.
     */
    public void closeAfterAFailedStart() {
        stopped(null);
    }

    public SidecarConfig config() {
        return config;
    }

    public ModelShape shape() {
        return shape;
    }

    public ShardNode shard() {
        return shard;
    }

    public BlockStore blocks() {
        return blocks;
    }

    /** The KV operations as this role serves them: from the local shard, or through the shards (gateway). */
    public KvApi kv() {
        return gateway != null ? gateway : shard;
    }

    /** The gateway, or null in the shard role. */
    public Gateway gateway() {
        return gateway;
    }

    /**
     * Sets what decides whether KV requests are served: the supplier answers why not, or null. The control listener
     * installs its readiness here, so that a sidecar serves no KV under a stale shard map, policy or budget even where
     * traffic reaches it before its readiness probe passes (a headless Service publishes shards that are not ready).
     */
    public void servingGate(java.util.function.Supplier<String> why) {
        notReady = java.util.Objects.requireNonNull(why);
    }

    /**
     * Sets what decides whether a shard map may be applied by hand: the supplier answers why not, or null. The
     * control listener installs it: not while its first read of the topic goes on, even once the sidecar serves.
     */
    public void manualMapGate(java.util.function.Supplier<String> why) {
        mapNotReady = java.util.Objects.requireNonNull(why);
    }

    /** Refuses a shard map applied by hand ({@link NotReadyException}) while control records may still outrank it. */
    public void checkManualMap() {
        String why = mapNotReady.get();
        if (why != null) {
            throw new NotReadyException(why);
        }
    }

    /** Refuses a KV request ({@link NotReadyException}) while the sidecar is not ready to serve it. */
    public void checkServing() {
        String why = notReady.get();
        if (why != null) {
            throw new NotReadyException(why);
        }
    }

    /** The desired state in effect (shard map, policy, budget) and the control records applied to it. */
    public ShardControl control() {
        return control;
    }

    /**
     * Null when {@code pikv.api.max-body-bytes} fits under the HTTP layer's own limit, else why not: a body between
     * the two would get the HTTP layer's plain 413 instead of the API's problem+json, and a declared length over the
     * HTTP limit would not reach the API's check at all.
     */
    static String bodyLimits(int maxBodyBytes, long httpMaxBodySize) {
        if (maxBodyBytes <= httpMaxBodySize) {
            return null;
        }
        return "invalid configuration pikv.api.max-body-bytes: " + maxBodyBytes + " bytes is above the HTTP layer's "
                + "limit quarkus.http.limits.max-body-size (" + httpMaxBodySize + " bytes), which would refuse such "
                + "bodies first without saying why; raise QUARKUS_HTTP_LIMITS_MAX_BODY_SIZE with it (twice the API "
                + "limit is what the operator sets)";
    }

    private static void check(String name, boolean holds, String why) {
        if (!holds) {
            throw new IllegalStateException("invalid configuration " + name + ": " + why);
        }
    }

    private static <T> T setting(String name, java.util.function.Supplier<T> build) {
        try {
            return build.get();
        } catch (IllegalArgumentException e) {
            throw new IllegalStateException("invalid configuration " + name + ": " + e.getMessage(), e);
        }
    }
}
