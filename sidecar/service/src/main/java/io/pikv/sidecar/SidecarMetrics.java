package io.pikv.sidecar;

import io.micrometer.core.instrument.FunctionCounter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import io.pikv.kv.ShardStats;
import io.quarkus.runtime.Startup;
import jakarta.enterprise.context.ApplicationScoped;

import java.time.Duration;
import java.util.function.ToDoubleFunction;

/**
 * The sidecar's Prometheus metrics ({@code /q/metrics}): the shard's hit ratio, lookups, hits, misses, evictions,
 * bytes resident against the budget, and a latency histogram per KV operation. Shard figures are read from the
 * engine's counters when scraped, so the data plane pays nothing for them. Made at start-up, so every series is there
 * from the first scrape. A gateway holds no KV: it exports the latency histograms and its block cache's series only.
 */
@ApplicationScoped
@Startup
public class SidecarMetrics {
    private final MeterRegistry registry;
    private final Timer step;
    private final Timer attention;
    private final Timer append;

    public SidecarMetrics(MeterRegistry registry, Sidecar sidecar) {
        this.registry = registry;
        ShardNode shard = sidecar.shard();
        String role = sidecar.config().role().name();
        step = timer("step", role);
        attention = timer("attention", role);
        append = timer("append", role);
        // The block cache, in both roles (a gateway serves its own: its shards' telemetry does not carry it).
        BlockStore blocks = sidecar.blocks();
        Gauge.builder("pikv.blocks.bytes", blocks, b -> b.stats().bytes()).description("Bytes of blocks held")
                .register(registry);
        Gauge.builder("pikv.blocks.capacity.bytes", blocks, b -> b.stats().capacityBytes())
                .description("The block cache's capacity in bytes").register(registry);
        Gauge.builder("pikv.blocks.held", blocks, b -> b.stats().blocks()).description("Blocks held")
                .register(registry);
        FunctionCounter.builder("pikv.blocks.hits", blocks, b -> b.stats().hits())
                .description("Block lookups that found the block").register(registry);
        FunctionCounter.builder("pikv.blocks.misses", blocks, b -> b.stats().misses())
                .description("Block lookups that did not").register(registry);
        FunctionCounter.builder("pikv.blocks.evictions", blocks, b -> b.stats().evictions())
                .description("Blocks evicted").register(registry);
        if (sidecar.config().role() != Role.shard) {
            return;
        }
        Gauge.builder("pikv.kv.sequences", shard, ShardNode::sequenceCount).description("Open sequences")
                .register(registry);
        gauge("pikv.kv.resident.bytes", "Bytes of KV pages held", shard, ShardStats::bytesInUse);
        gauge("pikv.kv.budget.bytes", "The shard's byte budget", shard, ShardStats::budgetBytes);
        gauge("pikv.kv.entries", "Entries resident", shard, ShardStats::entries);
        gauge("pikv.kv.hit.ratio", "Hits / lookups since start (lookups: entries attention asked for)", shard,
                st -> st.lookups() == 0 ? Double.NaN : (double) st.hits() / st.lookups());
        counter("pikv.kv.lookups", "Entries attention asked for", shard, ShardStats::lookups);
        counter("pikv.kv.hits", "Lookups of resident entries", shard, ShardStats::hits);
        counter("pikv.kv.misses", "Lookups of evicted entries", shard, ShardStats::misses);
        counter("pikv.kv.evictions", "Entries evicted", shard, ShardStats::evictions);
    }

    /** The next series' number in {@link Snapshots} (each series of the shard's stats gets its own, up to 63). */
    private int nextSeries;

    /** Per scraping thread: a scrape renders every series on one thread, so two scrapes never share a snapshot. */
    private final ThreadLocal<Snapshots<ShardStats>> last = ThreadLocal.withInitial(Snapshots::new);

    /**
     * One snapshot of the shard's counters for the series of one scrape (each series asking the shard anew would read
     * counters that attention threads move meanwhile: hits above lookups in one scrape, a ratio of neither);
     * {@code series} numbers the series (0 to 63), each reading it once per scrape.
     */
    private ShardStats stats(ShardNode shard, int series) {
        return last.get().get(series, shard::stats, System.nanoTime());
    }

    /**
     * A thread's snapshot and the series that have read it. A scrape reads each series once, so a series reading it
     * again is the next scrape: it takes a new one, which every series of that scrape then reads. A snapshot older
     * than {@link #MAX_AGE_NANOS} is taken anew too (a scrape that asked for some series only leaves the others
     * unread, for the next one to find).
     */
    static final class Snapshots<T> {
        static final long MAX_AGE_NANOS = 10_000_000_000L;
        private T value;
        private long at;
        private long read; // one bit per series

        T get(int series, java.util.function.Supplier<T> take, long now) {
            long bit = 1L << series;
            if (value == null || (read & bit) != 0 || now - at > MAX_AGE_NANOS) {
                value = take.get();
                at = now;
                read = 0;
            }
            read |= bit;
            return value;
        }
    }

    /** A gauge of the shard's stats, read from the scrape's snapshot under a series number of its own. */
    private void gauge(String name, String help, ShardNode shard, ToDoubleFunction<ShardStats> f) {
        int series = nextSeries++;
        Gauge.builder(name, shard, s -> f.applyAsDouble(stats(s, series))).description(help).register(registry);
    }

    /** A counter of the shard's stats, as {@link #gauge}. */
    private void counter(String name, String help, ShardNode shard, ToDoubleFunction<ShardStats> f) {
        int series = nextSeries++;
        FunctionCounter.builder(name, shard, s -> f.applyAsDouble(stats(s, series))).description(help)
                .register(registry);
    }

    private Timer timer(String op, String role) {
        return Timer.builder("pikv.request").description("Latency of KV operations").tag("op", op).tag("role", role)
                .publishPercentileHistogram().minimumExpectedValue(Duration.ofNanos(10_000))
                .maximumExpectedValue(Duration.ofSeconds(10)).register(registry);
    }

    public Timer step() {
        return step;
    }

    public Timer attention() {
        return attention;
    }

    public Timer append() {
        return append;
    }
}
