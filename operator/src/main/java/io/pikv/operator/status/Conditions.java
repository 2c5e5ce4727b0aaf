package io.pikv.operator.status;

import io.fabric8.kubernetes.api.model.Condition;
import io.fabric8.kubernetes.api.model.ConditionBuilder;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * Sets conditions the Kubernetes way: {@code lastTransitionTime} changes only when a condition's status flips, so a
 * reconcile that finds nothing new writes the same conditions back and the status patch can be skipped.
 */
public final class Conditions {

    public static final String TRUE = "True";
    public static final String FALSE = "False";
    public static final String UNKNOWN = "Unknown";

    private Conditions() {
    }

    /**
     * The conditions with {@code type} set to the given status, reason and message: a new condition when there was
     * none, the old {@code lastTransitionTime} when the status did not change, {@code now} when it did.
     */
    public static List<Condition> set(List<Condition> conditions, String type, boolean status, String reason,
                                      String message, long observedGeneration, String now) {
        String value = status ? TRUE : FALSE;
        List<Condition> next = new ArrayList<>();
        boolean found = false;
        for (Condition c : conditions == null ? List.<Condition>of() : conditions) {
            if (type.equals(c.getType())) {
                found = true;
                String since = value.equals(c.getStatus()) && c.getLastTransitionTime() != null
                        ? c.getLastTransitionTime() : now;
                next.add(condition(type, value, reason, message, observedGeneration, since));
            } else {
                next.add(c);
            }
        }
        if (!found) {
            next.add(condition(type, value, reason, message, observedGeneration, now));
        }
        return next;
    }

    /** The condition of this type, or null. */
    public static Condition find(List<Condition> conditions, String type) {
        if (conditions == null) {
            return null;
        }
        return conditions.stream().filter(c -> type.equals(c.getType())).findFirst().orElse(null);
    }

    /** Whether the condition of this type exists and is True. */
    public static boolean isTrue(List<Condition> conditions, String type) {
        Condition c = find(conditions, type);
        return c != null && TRUE.equals(c.getStatus());
    }

    /** Whether the condition of this type has exactly this status, reason and message. */
    public static boolean is(List<Condition> conditions, String type, boolean status, String reason, String message) {
        Condition c = find(conditions, type);
        return c != null && (status ? TRUE : FALSE).equals(c.getStatus()) && Objects.equals(reason, c.getReason())
                && Objects.equals(message, c.getMessage());
    }

    private static Condition condition(String type, String status, String reason, String message, long generation,
                                       String since) {
        return new ConditionBuilder().withType(type).withStatus(status).withReason(reason).withMessage(message)
                .withObservedGeneration(generation).withLastTransitionTime(since).build();
    }
}
