package io.pikv.sidecar;

import io.pikv.kv.EvictionContext;
import io.pikv.kv.EvictionHook;

import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;

/**
 * The shard's eviction policy, switchable while the shard serves: the engine's shard holds this hook for life, and
 * the hook delegates to the policy chosen last (by {@code pikv.store.eviction}, then by control records). A switch
 * takes effect at the next eviction; entries already stored stay.
 */
public final class ShardPolicy implements EvictionHook, PolicyReport {
    private static final Map<String, EvictionHook> KNOWN = new TreeMap<>(Map.of(
            "oldest-page", EvictionHook.OLDEST_PAGE_FIRST,
            "reject", EvictionHook.REJECT));

    private record Active(String name, EvictionHook hook) {
    }

    private volatile Active active;

    private ShardPolicy(String name) {
        this.active = new Active(name, KNOWN.get(name));
    }

    /** The policy named {@code name}; unknown names are a configuration error. */
    public static ShardPolicy of(String name) {
        if (!KNOWN.containsKey(name)) {
            throw new IllegalArgumentException(unknown(name));
        }
        return new ShardPolicy(name);
    }

    /** Names this sidecar can run. */
    public static Set<String> known() {
        return KNOWN.keySet();
    }

    /** Whether the policy reads parameters (none of the current ones does). */
    public static boolean takesParameters(String name) {
        return false;
    }

    /** Switches to {@code name}; when the name is unknown, keeps the current policy and says why. */
    public Optional<String> use(String name) {
        EvictionHook hook = KNOWN.get(name);
        if (hook == null) {
            return Optional.of(unknown(name) + "; keeping " + active.name());
        }
        active = new Active(name, hook);
        return Optional.empty();
    }

    @Override
    public void makeRoom(EvictionContext context) {
        active.hook().makeRoom(context);
    }

    @Override
    public String activePolicy() {
        return active.name();
    }

    @Override
    public Map<String, Double> ghostHitRates() {
        return Map.of();
    }

    private static String unknown(String name) {
        return "unknown eviction policy '" + name + "' (this sidecar knows " + String.join(", ", KNOWN.keySet()) + ")";
    }
}
